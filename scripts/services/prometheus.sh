#!/usr/bin/env bash
# promtool for tributary's tests: Debian's `prometheus` package provides it. Only the
# tool is used (checking and unit-testing the alert rules in examples/monitoring/); no
# Prometheus server is started.
#
# Usage: scripts/services/prometheus.sh {install|status}
#   install  installs the package if promtool is missing (idempotent)
#   status   exits 0 and prints the version when promtool is on PATH, 3 otherwise
set -euo pipefail

SERVICE_NAME=prometheus
# shellcheck source=_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

cmd_install() {
  if command -v promtool >/dev/null 2>&1; then
    log "promtool already installed: $(promtool --version 2>&1 | head -1)"
    return 0
  fi
  # The package's postinst may try to start a system service; there is none here, and
  # only promtool is needed, so a failed start is not an install failure.
  apt_install prometheus
  command -v promtool >/dev/null 2>&1 || die "promtool not on PATH after installing prometheus"
  log "installed: $(promtool --version 2>&1 | head -1)"
}

cmd_status() {
  if command -v promtool >/dev/null 2>&1; then
    log "$(promtool --version 2>&1 | head -1)"
    return 0
  fi
  log "promtool not installed; run: $0 install"
  return 3
}

case "${1:-}" in
  install) cmd_install ;;
  status) cmd_status ;;
  *) echo "usage: $0 {install|status}" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Headless Chromium for tributary's tests: Debian's `chromium` package. Only the browser
# is used (the `tributary report` test renders the page and screenshots it); nothing is
# started here.
#
# Usage: scripts/services/chromium.sh {install|status}
#   install  installs the package if chromium is missing (idempotent)
#   status   exits 0 and prints the version when chromium is on PATH, 3 otherwise
set -euo pipefail

SERVICE_NAME=chromium
# shellcheck source=_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

cmd_install() {
  if command -v chromium >/dev/null 2>&1; then
    log "chromium already installed: $(chromium --version 2>/dev/null | head -1)"
    return 0
  fi
  apt_install chromium
  command -v chromium >/dev/null 2>&1 || die "chromium not on PATH after installing the chromium package"
  log "installed: $(chromium --version 2>/dev/null | head -1)"
}

cmd_status() {
  if command -v chromium >/dev/null 2>&1; then
    log "$(chromium --version 2>/dev/null | head -1)"
    return 0
  fi
  log "chromium not installed; run: $0 install"
  return 3
}

case "${1:-}" in
  install) cmd_install ;;
  status) cmd_status ;;
  *) echo "usage: $0 {install|status}" >&2; exit 2 ;;
esac

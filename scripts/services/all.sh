#!/usr/bin/env bash
# Runs kafka.sh, clickhouse.sh and redis.sh with the same command.
#
# Usage: scripts/services/all.sh {install|start|stop|status|restart}
#   install/start/restart stop at the first service that fails (non-zero exit).
#   stop/status run for every service and fail at the end if any failed.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERVICES=(kafka clickhouse redis)
cmd="${1:-}"

case "$cmd" in
  install | start | restart)
    for s in "${SERVICES[@]}"; do
      echo "[all] $s: $cmd"
      "$DIR/$s.sh" "$cmd" || { echo "[all] ERROR: $s $cmd failed" >&2; exit 1; }
    done
    echo "[all] $cmd: all services OK"
    ;;
  stop | status)
    failed=()
    for s in "${SERVICES[@]}"; do
      "$DIR/$s.sh" "$cmd" || failed+=("$s")
    done
    if ((${#failed[@]} > 0)); then
      if [[ "$cmd" == status ]]; then
        echo "[all] not running (or unhealthy): ${failed[*]}" >&2
      else
        echo "[all] ERROR: $cmd failed for: ${failed[*]}" >&2
      fi
      exit 1
    fi
    echo "[all] $cmd: all services OK"
    ;;
  *)
    echo "usage: $0 {install|start|stop|status|restart}" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Runs one language's driver program (built by install.sh) against an endpoint.
# The program reads COMPAT_URL, COMPAT_USER, COMPAT_KEY, COMPAT_TABLE and COMPAT_ROWS
# from the environment (COMPAT_CASES defaults to test/integration/compat/cases.json), prints one JSON
# line and exits non-zero when a check fails.
# Usage: run.sh go|python|java|node
set -euo pipefail

SERVICE_NAME=compat
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=../services/_common.sh
source "$REPO_DIR/scripts/services/_common.sh"
COMPAT_DIR="$TRIBUTARY_SERVICES_DIR/compat"
export COMPAT_CASES="${COMPAT_CASES:-$REPO_DIR/test/integration/compat/cases.json}"

case "${1:-}" in
  go) exec "$COMPAT_DIR/go/compat-go" ;;
  python) exec "$COMPAT_DIR/python/venv/bin/python" "$REPO_DIR/test/integration/compat/python/compat.py" ;;
  java) exec java -cp "$COMPAT_DIR/java/classes:$COMPAT_DIR/java/lib/*" Compat ;;
  node) exec node "$REPO_DIR/dist/test/integration/compat/node/compat.js" ;;
  *) die "usage: run.sh go|python|java|node" ;;
esac

#!/usr/bin/env bash
# Runs jobs of .github/workflows/ci.yml with act, in podman, offline from GitHub: the
# runner image is the Debian Node 20 build image (build-base.sh), actions/setup-node is
# replaced by a local stand-in (act/setup-node), and npm inside the job trusts this
# host's CA bundle (for registries behind a TLS-intercepting proxy).
#
# Usage: scripts/deploy/act.sh [JOB...]    (default: bench)
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
jobs=("$@")
((${#jobs[@]} > 0)) || jobs=(bench)
"$DEPLOY_SCRIPTS/build-base.sh" >/dev/null
runner="${BASE_IMAGE/debian-node20:/debian-node20-build:}"
sock="$TRIBUTARY_DEPLOY_DIR/podman.sock"
rm -f "$sock"
podman system service --time=0 "unix://$sock" &
service=$!
trap 'kill "$service" 2>/dev/null || true; wait "$service" 2>/dev/null || true; rm -f "$sock"' EXIT
for _ in $(seq 1 50); do [[ -S "$sock" ]] && break; sleep 0.1; done
ca="${BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}"
cd "$REPO_ROOT"
for job in "${jobs[@]}"; do
  log "act: job $job"
  DOCKER_HOST="unix://$sock" act push --job "$job" --pull=false --network host \
    --platform "ubuntu-latest=$runner" \
    --local-repository "actions/setup-node@v4=$DEPLOY_SCRIPTS/act/setup-node" \
    --container-options "-v $ca:/etc/ssl/host-ca.crt:ro" --env NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca.crt \
    --action-offline-mode >"$TRIBUTARY_DEPLOY_DIR/act-$job.log" 2>&1 ||
    { tail -n 40 "$TRIBUTARY_DEPLOY_DIR/act-$job.log" >&2; die "act job $job failed (log: $TRIBUTARY_DEPLOY_DIR/act-$job.log)"; }
  grep -E 'Job succeeded' "$TRIBUTARY_DEPLOY_DIR/act-$job.log" >/dev/null || die "act job $job did not report success"
done

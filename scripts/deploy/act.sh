#!/usr/bin/env bash
# Runs jobs of .github/workflows/ci.yml with act, in podman, offline from GitHub: the
# runner image is the Debian Node 20 build image (build-base.sh), actions/setup-node,
# setup-go and cache are replaced by local stand-ins (act/), and npm inside the job trusts this
# host's CA bundle (for registries behind a TLS-intercepting proxy).
#
# Usage: scripts/deploy/act.sh [JOB...]    (default: bench)
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
jobs=("$@")
((${#jobs[@]} > 0)) || jobs=(bench)
"$DEPLOY_SCRIPTS/build-base.sh" >/dev/null
# The job containers the workflow names (debian:12): no registry here, so the same Debian
# release is built from Debian's packages, as its official image is, under the same name,
# with this host's own CAs (a TLS-intercepting proxy's, say) where ca-certificates looks for
# local ones: the job's apt-get install of ca-certificates makes curl, pip, Maven's Java and
# Go trust them. (act gives a job container only the job's own options, not ours.)
local_cas="${BUILD_CA_DIR:-/usr/local/share/ca-certificates}"
if ! podman image exists docker.io/library/debian:12; then
  mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  log "building debian:12 (bookworm minbase) from $mirror"
  mkdir -p "$TRIBUTARY_DEPLOY_DIR/base"
  hooks=()
  if compgen -G "$local_cas/*.crt" >/dev/null; then
    cas=("$local_cas"/*.crt)
    hooks+=("--customize-hook=mkdir -p \"\$1/usr/local/share/ca-certificates\"" "--customize-hook=copy-in ${cas[*]} /usr/local/share/ca-certificates")
  fi
  mmdebstrap --quiet --variant=minbase --aptopt='APT::Install-Recommends "false"' "${hooks[@]}" \
    bookworm "$TRIBUTARY_DEPLOY_DIR/base/debian12.tar" "$mirror"
  podman import --quiet --change 'CMD ["bash"]' "$TRIBUTARY_DEPLOY_DIR/base/debian12.tar" docker.io/library/debian:12 >/dev/null
  rm -f "$TRIBUTARY_DEPLOY_DIR/base/debian12.tar"
fi
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
    --local-repository "actions/setup-go@v5=$DEPLOY_SCRIPTS/act/setup-go" \
    --local-repository "actions/cache@v4=$DEPLOY_SCRIPTS/act/cache" \
    --container-options "-v $ca:/etc/ssl/host-ca.crt:ro" --env NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca.crt \
    --action-offline-mode >"$TRIBUTARY_DEPLOY_DIR/act-$job.log" 2>&1 ||
    { tail -n 40 "$TRIBUTARY_DEPLOY_DIR/act-$job.log" >&2; die "act job $job failed (log: $TRIBUTARY_DEPLOY_DIR/act-$job.log)"; }
  grep -E 'Job succeeded' "$TRIBUTARY_DEPLOY_DIR/act-$job.log" >/dev/null || die "act job $job did not report success"
done

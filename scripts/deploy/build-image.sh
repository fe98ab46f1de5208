#!/usr/bin/env bash
# Builds the tributary image ($TRIBUTARY_IMAGE, default localhost/tributary:dev) with podman
# from the repository's Containerfile, building the Debian base images first if missing.
#
#   WITH_EMBEDDED=false   leave chDB's native library out (server-mode image)
#   BUILD_CA=FILE         CA bundle npm trusts inside the build (default: this host's), for
#                         registries reached through a TLS-intercepting proxy
#
# Usage: scripts/deploy/build-image.sh
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

"$DEPLOY_SCRIPTS/build-base.sh"
ca="${BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}"
secret=()
[[ -s "$ca" ]] && secret=(--secret "id=ca,src=$ca")
podman build --pull=never --network=host "${secret[@]}" \
  --build-arg "WITH_EMBEDDED=${WITH_EMBEDDED:-true}" \
  --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" --build-arg "BUILD_IMAGE=${BASE_IMAGE/debian-node20:/debian-node20-build:}" \
  --tag "$IMAGE" --file "$REPO_ROOT/Containerfile" "$REPO_ROOT" >"$TRIBUTARY_DEPLOY_DIR/build-image.log" 2>&1 ||
  { tail -n 40 "$TRIBUTARY_DEPLOY_DIR/build-image.log" >&2; die "podman build failed (log: $TRIBUTARY_DEPLOY_DIR/build-image.log)"; }
log "built $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"

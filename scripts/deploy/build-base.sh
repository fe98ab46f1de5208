#!/usr/bin/env bash
# Builds the container image's two base images from Debian packages, without any
# container registry: a Debian trixie minbase root filesystem (mmdebstrap) with Debian's
# Node.js 20, imported into podman.
#
#   localhost/debian-node20:trixie        runtime: nodejs, ca-certificates, tini
#   localhost/debian-node20-build:trixie  build stage: the same plus npm
#
# Skipped when both images exist (FORCE=1 rebuilds). DEBIAN_MIRROR defaults to the mirror
# of this host's apt sources, else deb.debian.org. Where a registry is reachable, pass
# --build-arg BUILD_IMAGE=docker.io/library/node:20-bookworm
# --build-arg RUNTIME_IMAGE=docker.io/library/node:20-bookworm-slim to the build instead.
#
# Usage: scripts/deploy/build-base.sh
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

build_image="${BASE_IMAGE/debian-node20:/debian-node20-build:}"
if [[ "${FORCE:-0}" != 1 ]] && podman image exists "$BASE_IMAGE" && podman image exists "$build_image"; then
  log "base images $BASE_IMAGE and $build_image already built"
  exit 0
fi
# (A host without deb822 sources, such as an image with /etc/apt/sources.list, has none to read.)
mirror="${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(\S*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"
work="$TRIBUTARY_DEPLOY_DIR/base"
mkdir -p "$work"

# shellcheck disable=SC2016  # the hook's $1 is expanded by mmdebstrap, not here
rootfs() { # OUT PACKAGES
  mmdebstrap --quiet --variant=minbase --include="$2" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    trixie "$1" "$mirror"
}
log "debootstrapping trixie from $mirror"
rootfs "$work/runtime.tar" nodejs,ca-certificates,tini &
runtime=$!
rootfs "$work/build.tar" nodejs,npm,ca-certificates
wait "$runtime"
podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["/usr/bin/node"]' "$work/runtime.tar" "$BASE_IMAGE" >/dev/null
podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["/usr/bin/node"]' "$work/build.tar" "$build_image" >/dev/null
rm -f "$work/runtime.tar" "$work/build.tar"
podman run --rm --network=none "$BASE_IMAGE" node --version
log "built $BASE_IMAGE and $build_image"

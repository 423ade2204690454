#!/usr/bin/env bash
# The demo: brings up a local Kubernetes (etcd, kube-apiserver,
# controller-manager, scheduler built from source on first use) with two
# real nodes (a kubelet and a containerd each, on this machine), installs
# the Helm chart (the controller and node agents run as pods from the image
# built here), and walks the DC/OS stateful-service tutorial with
# `kubectl statefulapp`. The "database" is a container that appends a line
# to a file in its volume every time it starts and prints the file: its log
# and the node's disk show the data survive stop, start, scaling and removal.
# Needs root (the nodes' namespaces, mounts and cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(bash testcluster/build.sh)
cargo build --quiet --locked --bins --examples
export STATEFULAPP_TESTCLUSTER_BIN="$bin"
# kubectl finds the plugin as `kubectl statefulapp` on the PATH.
export PATH="$PWD/target/debug:$bin:$PATH"

work=$(mktemp -d /tmp/statefulapp-demo.XXXXXX)
export KUBECONFIG="$work/kubeconfig"
./target/debug/examples/local_cluster "$KUBECONFIG" --real-nodes > "$work/cluster.log" 2>&1 &
cluster_pid=$!
trap 'status=$?; kill $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null || true; rm -rf "$work"; exit $status' EXIT
for _ in $(seq 3000); do
  [ -s "$KUBECONFIG" ] && break
  kill -0 $cluster_pid 2>/dev/null || { cat "$work/cluster.log"; exit 1; }
  sleep 0.2
done
[ -s "$KUBECONFIG" ] || { cat "$work/cluster.log"; exit 1; }
grep -v '^testcluster:' "$work/cluster.log" || true
image=$(sed -n 's/^test app image \(.*\)$/\1/p' "$work/cluster.log")

say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() { printf '\033[1m$ %s\033[0m\n' "$*"; "$@"; }
wait_for() { kubectl wait --for=jsonpath="{.status.$1}=$2" statefulapp/postgres --timeout=180s >/dev/null; }
field() { kubectl get sapp postgres -o jsonpath="{.status.instances[?(@.id=='$1')].$2}"; }
# Where the node keeps an instance's volume: <node's data disk>/<namespace>/<persistenceId>.
data_dir() {
  local disk
  disk=$(sed -n "s/^node $(field "$1" node) (.*): data disk at \(.*\)$/\1/p" "$work/cluster.log")
  echo "$disk/default/$(field "$1" 'volumes[0].persistenceId')"
}
pod_of() { local id=$1; echo "postgres-${id#postgres.}"; }
# The pod is Ready when its script runs; give its start line a moment to land.
journal() { sleep 1; run kubectl logs "$(pod_of "$1")"; }

say "The chart runs on two real nodes: controller and agents are pods"
run kubectl get nodes -o wide
run kubectl get pods -n statefulapp-system -o wide

cat > "$work/postgres.marathon.json" <<JSON
{
  "id": "/postgres",
  "cpus": 0.1, "mem": 64, "instances": 1,
  "cmd": "mkdir -p \$PGDATA && echo \"\$(date -u +%H:%M:%S) started as \$HOSTNAME\" >> \$PGDATA/starts && echo 'what this volume holds:' && cat \$PGDATA/starts && trap 'exit 0' TERM && while true; do sleep 1; done",
  "container": {
    "type": "DOCKER",
    "docker": { "image": "$image" },
    "volumes": [
      { "containerPath": "pgdata", "mode": "RW", "persistent": { "size": 100 } },
      { "containerPath": "/var/lib/postgresql/data", "hostPath": "pgdata", "mode": "RW" }
    ]
  },
  "env": { "PGDATA": "/var/lib/postgresql/data/pgdata" },
  "upgradeStrategy": { "maximumOverCapacity": 0, "minimumHealthCapacity": 0 }
}
JSON

say "Install a stateful service (the tutorial's postgres.marathon.json, with a busybox \"database\")"
run kubectl statefulapp app add "$work/postgres.marathon.json"
wait_for ready 1
run kubectl statefulapp task list
id=$(kubectl get sapp postgres -o jsonpath='{.status.instances[0].id}')
run kubectl statefulapp task show "${id:0:17}"
journal "$id"
dir=$(data_dir "$id")
echo "on the node's disk: $dir"

say "Stop the service: the task stays, with its node and volume, without startedAt"
run kubectl statefulapp app stop postgres
wait_for stopped 1
run kubectl statefulapp task list

say "Restart: the same task, same persistenceId, same node; the container finds its data"
run kubectl statefulapp app start postgres
wait_for ready 1
run kubectl statefulapp task list
journal "$id"

say "Scale up to 2: a new task with a new persistenceId and an empty volume"
run kubectl statefulapp app update postgres instances=2
wait_for ready 2
run kubectl statefulapp task list
second=$(kubectl get sapp postgres -o jsonpath="{.status.instances[?(@.id!='$id')].id}")
journal "$second"

say "Scale down to 1: the youngest task stops and keeps its reservation"
run kubectl statefulapp app update postgres instances=1
wait_for stopped 1
run kubectl statefulapp task list

say "Wipe the stopped task: its volume and data are destroyed on the node"
second_dir=$(data_dir "$second")
run kubectl statefulapp task stop "$second" --wipe
for _ in $(seq 600); do
  ids=$(kubectl get sapp postgres -o jsonpath='{.status.instances[*].id}')
  [ -d "$second_dir" ] || [[ "$ids" == *"$second"* ]] || break
  sleep 0.2
done
run kubectl statefulapp task list
[ -d "$second_dir" ] && echo "still there: $second_dir" || echo "gone from the node: $second_dir"

say "Remove the app: its volume and data are kept for a re-created app"
run kubectl statefulapp app remove postgres
run cat "$dir/pgdata/starts"
run kubectl get persistentvolumes -l statefulapp.io/app=postgres

say "Add it again: the kept task comes back on its node, with its data"
run kubectl statefulapp app add "$work/postgres.marathon.json"
wait_for ready 1
run kubectl statefulapp task list
journal "$id"
say "Done"

#!/usr/bin/env bash
# The demo: brings up a local Kubernetes control plane (etcd, kube-apiserver,
# controller-manager, scheduler, kwok nodes; built from source on first use),
# installs the Helm chart, runs the operator under the chart's ServiceAccounts,
# and walks the DC/OS stateful-service tutorial with `kubectl statefulapp`,
# showing the data on the node's disk survive stop, start and scaling.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(bash testcluster/build.sh)
cargo build --quiet --locked --bins --examples
export STATEFULAPP_TESTCLUSTER_BIN="$bin"
# kubectl finds the plugin as `kubectl statefulapp` on the PATH.
export PATH="$PWD/target/debug:$bin:$PATH"

work=$(mktemp -d /tmp/statefulapp-demo.XXXXXX)
export KUBECONFIG="$work/kubeconfig"
./target/debug/examples/local_cluster "$KUBECONFIG" --with-operator > "$work/cluster.log" 2>&1 &
cluster_pid=$!
trap 'status=$?; kill $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null || true; rm -rf "$work"; exit $status' EXIT
for _ in $(seq 900); do
  [ -s "$KUBECONFIG" ] && break
  kill -0 $cluster_pid 2>/dev/null || { cat "$work/cluster.log"; exit 1; }
  sleep 0.2
done
[ -s "$KUBECONFIG" ] || { cat "$work/cluster.log"; exit 1; }
cat "$work/cluster.log"
disks=$(sed -n 's/.*node disks under \(.*\)$/\1/p' "$work/cluster.log")

say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() { printf '\033[1m$ %s\033[0m\n' "$*"; "$@"; }
wait_for() { kubectl wait --for=jsonpath="{.status.$1}=$2" statefulapp/postgres --timeout=120s >/dev/null; }
data_dir() {
  local node pid
  node=$(kubectl get sapp postgres -o jsonpath="{.status.instances[?(@.id=='$1')].node}")
  pid=$(kubectl get sapp postgres -o jsonpath="{.status.instances[?(@.id=='$1')].volumes[0].persistenceId}")
  echo "$disks/$node/default/$pid"
}

say "The chart is installed; the local nodes are simulated by kwok"
run helm list -n statefulapp-system
run kubectl get nodes

cat > "$work/postgres.marathon.json" <<'JSON'
{
  "id": "/postgres",
  "cpus": 1, "mem": 512, "instances": 1,
  "container": {
    "type": "DOCKER",
    "docker": { "image": "postgres:9.5", "portMappings": [{ "containerPort": 5432, "name": "postgres" }] },
    "volumes": [
      { "containerPath": "pgdata", "mode": "RW", "persistent": { "size": 100 } },
      { "containerPath": "/var/lib/postgresql/data", "hostPath": "pgdata", "mode": "RW" }
    ]
  },
  "env": { "PGDATA": "/var/lib/postgresql/data/pgdata" },
  "upgradeStrategy": { "maximumOverCapacity": 0, "minimumHealthCapacity": 0 }
}
JSON

say "Install a stateful service (the tutorial's postgres.marathon.json, imported)"
run kubectl statefulapp app add "$work/postgres.marathon.json"
wait_for ready 1
run kubectl statefulapp task list
id=$(kubectl get sapp postgres -o jsonpath='{.status.instances[0].id}')
run kubectl statefulapp task show "${id:0:17}"
dir=$(data_dir "$id")
echo "postgres writes into its volume: $dir"
echo "PG_VERSION 9.5, table accounts" > "$dir/PG_DATA"

say "Stop the service: the task stays, with its node and volume, without startedAt"
run kubectl statefulapp app stop postgres
wait_for stopped 1
run kubectl statefulapp task list
run kubectl statefulapp task show "$id"

say "Restart: the same task, same persistenceId, same node, same data"
run kubectl statefulapp app start postgres
wait_for ready 1
run kubectl statefulapp task list
run cat "$dir/PG_DATA"

say "Scale up to 2: a new task with a new persistenceId"
run kubectl statefulapp app update postgres instances=2
wait_for ready 2
run kubectl statefulapp task list

say "Scale down to 1: the youngest task stops and keeps its reservation"
run kubectl statefulapp app update postgres instances=1
wait_for stopped 1
run kubectl statefulapp task list
second=$(kubectl get sapp postgres -o jsonpath='{.status.instances[?(@.state=="Stopped")].id}')

say "Wipe the stopped task: its volume and data are destroyed"
second_dir=$(data_dir "$second")
run kubectl statefulapp task stop "$second" --wipe
for _ in $(seq 600); do
  ids=$(kubectl get sapp postgres -o jsonpath='{.status.instances[*].id}')
  [ -d "$second_dir" ] || [[ "$ids" == *"$second"* ]] || break
  sleep 0.2
done
run kubectl statefulapp task list
[ -d "$second_dir" ] && echo "still there: $second_dir" || echo "gone from the node: $second_dir"

say "Cleanup: remove the app; its volume and data are kept for a re-created app"
run kubectl statefulapp app remove postgres
run cat "$dir/PG_DATA"
run kubectl get persistentvolumes -l statefulapp.io/app=postgres
say "Done"

#!/usr/bin/env bash
# Benchmarks: the StatefulApp operator against a StatefulSet and a direct
# client, on the local control plane with 50 simulated nodes. Prints a table
# of medians with ratios and writes target/bench/results.json.
# Arguments go to the benchmark (e.g. --sizes 100 --repeats 1).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(bash testcluster/build.sh)
export STATEFULAPP_TESTCLUSTER_BIN="$bin"
cargo build --release --locked --bins --examples
exec ./target/release/examples/bench "$@"

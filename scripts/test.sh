#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit and property tests, and
# the integration tests against the real local control plane (built on first
# use by testcluster/build.sh and cached under ~/.cache).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(bash testcluster/build.sh)
export STATEFULAPP_TESTCLUSTER_BIN="$bin"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked

//! Starts the local control plane (the one the tests use) and keeps it up
//! until interrupted. Writes its kubeconfig to the path given as argument.
//!
//! `cargo run --example local_cluster -- /tmp/statefulapp-demo/kubeconfig`

#[path = "../tests/support/mod.rs"]
mod support;

use support::TestCluster;

#[tokio::main]
async fn main() {
    let target = std::env::args()
        .nth(1)
        .expect("usage: local_cluster <kubeconfig path>");
    let cluster = TestCluster::shared();
    std::fs::copy(&cluster.kubeconfig, &target).expect("copy kubeconfig");
    println!(
        "control plane up in {:.1}s with nodes {}; kubeconfig at {target}; logs in {}",
        cluster.startup.as_secs_f64(),
        cluster.nodes.join(", "),
        cluster.dir.join("logs").display()
    );
    tokio::signal::ctrl_c().await.expect("wait for Ctrl-C");
}

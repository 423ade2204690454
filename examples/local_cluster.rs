//! Starts the local control plane (the one the tests use) and keeps it up
//! until interrupted; writes its kubeconfig to the path given.
//!
//! With `--with-operator`, also installs the Helm chart and runs the operator
//! (controller and one node agent per simulated node) as local processes
//! acting as the chart's ServiceAccounts: kwok simulates nodes, so the
//! chart's own pods are scheduled but run no containers.
//!
//! `cargo run --example local_cluster -- /tmp/kubeconfig [--with-operator]`

#[path = "../tests/support/mod.rs"]
mod support;

use support::TestCluster;
use support::cluster::tools_dir;
use support::operator::{Identity, Operator, operator_binary};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/statefulapp-operator");
const NAMESPACE: &str = "statefulapp-system";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .expect("usage: local_cluster <kubeconfig path> [--with-operator]");
    let with_operator = args.any(|a| a == "--with-operator");
    let cluster = TestCluster::shared();
    let mut _operator = None;
    if with_operator {
        let output = std::process::Command::new(tools_dir().join("helm"))
            .args([
                "install",
                "statefulapp-operator",
                CHART,
                "--namespace",
                NAMESPACE,
            ])
            .args(["--create-namespace", "--wait", "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .output()
            .expect("run helm");
        assert!(
            output.status.success(),
            "helm install failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let identity = Identity {
            controller_kubeconfig: cluster
                .kubeconfig_as_service_account(NAMESPACE, "statefulapp-operator-controller"),
            agent_kubeconfig: cluster
                .kubeconfig_as_service_account(NAMESPACE, "statefulapp-operator-agent"),
            leader_elect_namespace: Some(NAMESPACE.to_string()),
        };
        let operator = Operator::launch(cluster, operator_binary().as_ref(), identity);
        println!(
            "operator running as the chart's ServiceAccounts; node disks under {}",
            operator.disks.display()
        );
        _operator = Some(operator);
    }
    std::fs::copy(&cluster.kubeconfig, &target).expect("copy kubeconfig");
    println!(
        "control plane up in {:.1}s with nodes {}; kubeconfig at {target}; logs in {}",
        cluster.startup.as_secs_f64(),
        cluster.nodes.join(", "),
        cluster.dir.join("logs").display()
    );
    tokio::signal::ctrl_c().await.expect("wait for Ctrl-C");
}

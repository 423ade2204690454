//! Starts the local control plane (the one the tests use) and keeps it up
//! until interrupted; writes its kubeconfig to the path given.
//!
//! - `--real-nodes`: two real nodes (kubelet + containerd on this machine,
//!   root needed) and the Helm chart installed as users install it: the
//!   controller and the node agents run as pods from the image built here.
//! - `--with-operator`: kwok (simulated) nodes, the chart installed, and the
//!   operator run as local processes acting as the chart's ServiceAccounts
//!   (kwok runs no containers).
//!
//! `cargo run --example local_cluster -- /tmp/kubeconfig [--real-nodes | --with-operator]`

#[path = "../tests/support/mod.rs"]
mod support;

use support::TestCluster;
use support::chart::ChartRelease;
use support::cluster::tools_dir;
use support::operator::{Identity, Operator, operator_binary};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/statefulapp-operator");
const NAMESPACE: &str = "statefulapp-system";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .expect("usage: local_cluster <kubeconfig path> [--real-nodes | --with-operator]");
    let flags: Vec<String> = args.collect();
    let real_nodes = flags.iter().any(|a| a == "--real-nodes");
    let with_operator = flags.iter().any(|a| a == "--with-operator");
    let mut _operator = None;
    let cluster = if real_nodes {
        let cluster = TestCluster::shared_real();
        let release =
            tokio::task::spawn_blocking(|| ChartRelease::install(TestCluster::shared_real(), &[]))
                .await
                .expect("install the chart");
        println!(
            "chart installed in {:.1}s: controller and agents run as pods on the real nodes",
            release.install_time.as_secs_f64()
        );
        for node in &cluster.real_nodes {
            println!(
                "node {} ({}): data disk at {}",
                node.name,
                node.address,
                node.disk().display()
            );
        }
        let images = cluster.images.as_ref().expect("images");
        println!("test app image {}", images.testapp.reference);
        cluster
    } else {
        let cluster = TestCluster::shared();
        if with_operator {
            _operator = Some(run_operator_as_processes(cluster));
        }
        cluster
    };
    std::fs::copy(&cluster.kubeconfig, &target).expect("copy kubeconfig");
    let mut nodes = cluster.nodes.clone();
    nodes.extend(cluster.real_nodes.iter().map(|n| n.name.clone()));
    println!(
        "control plane up in {:.1}s with nodes {}; kubeconfig at {target}; logs in {}",
        cluster.startup.as_secs_f64(),
        nodes.join(", "),
        cluster.dir.join("logs").display()
    );
    tokio::signal::ctrl_c().await.expect("wait for Ctrl-C");
}

fn run_operator_as_processes(cluster: &'static TestCluster) -> Operator {
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
        capacity_namespace: None,
    };
    let operator = Operator::launch(cluster, operator_binary().as_ref(), identity);
    println!(
        "operator running as the chart's ServiceAccounts; node disks under {}",
        operator.disks.display()
    );
    operator
}

//! Real failures of real nodes (kubelet + containerd on this machine): a
//! kubelet that stops, a node that reboots. The operator runs as the chart's
//! pods; the data is what the container wrote. A plane of its own, because
//! these tests take nodes down.

mod support;

use std::time::Duration;

use statefulapp_operator::api::{InstanceState, InstanceStatus, StatefulAppStatus};
use support::TestCluster;
use support::chart::ChartRelease;
use support::fixtures::{
    create_app, in_state, journal, volume_identities, wait_for_event, wait_for_status_within,
};
use support::wait::wait_until;

/// The kubelet retries a failed volume mount with a backoff of up to two
/// minutes, so waits after one are longer than that.
const WAIT: Duration = Duration::from_secs(180);

fn journal_lines(cluster: &TestCluster, ns: &str, instance: &InstanceStatus) -> usize {
    let path = cluster.data_dir_on_node(ns, instance).join("journal");
    std::fs::read_to_string(path)
        .map(|j| j.lines().count())
        .unwrap_or(0)
}

async fn wait_journal(cluster: &TestCluster, ns: &str, instance: &InstanceStatus, lines: usize) {
    wait_until(WAIT, &format!("{lines} journal lines"), || async {
        (journal_lines(cluster, ns, instance) == lines).then_some(())
    })
    .await;
}

/// One test, in order: both failures take a node down, and the chart's own
/// pods live on these nodes too.
#[tokio::test]
async fn an_instance_survives_a_stopped_kubelet_and_a_reboot_of_its_node() {
    let cluster = TestCluster::shared_real();
    let release =
        tokio::task::spawn_blocking(|| ChartRelease::install(TestCluster::shared_real(), &[]))
            .await
            .unwrap();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "failures").await;
    let image = &cluster.images.as_ref().unwrap().testapp.reference;
    create_app(&client, &ns, journal(image, 1, "v1")).await;
    let wait = |what: &'static str, accept: fn(&StatefulAppStatus) -> bool| {
        let (client, ns, release) = (client.clone(), ns.clone(), &release);
        async move { wait_for_status_within(WAIT, &client, &ns, "journal", release, what, accept).await }
    };
    let status = wait("running", |s| s.running == 1 && s.ready == 1).await;
    let instance = in_state(&status, InstanceState::Running)[0].clone();
    wait_journal(cluster, &ns, &instance, 1).await;
    let node = cluster.real_node_of(&instance);

    // The kubelet stops: the node turns NotReady, the instance Unreachable,
    // with a Warning Event; its container goes on running meanwhile.
    node.stop_kubelet();
    let status = wait("unreachable", |s| {
        s.instances
            .iter()
            .any(|i| i.state == InstanceState::Unreachable)
    })
    .await;
    assert_eq!(status.instances[0].id, instance.id);
    wait_for_event(&client, &ns, "NodeLost", Some("Warning"), WAIT).await;

    // The kubelet is back: the same instance runs on its node, data intact.
    node.start_kubelet();
    let status = wait("running again", |s| s.running == 1 && s.ready == 1).await;
    let back = &status.instances[0];
    assert_eq!((&back.id, &back.node), (&instance.id, &instance.node));
    assert_eq!(
        journal_lines(cluster, &ns, &instance),
        1,
        "it never stopped"
    );

    // A reboot: every process of the node dies, containers included; the
    // node boots again and the instance starts there on its data.
    node.reboot(&client, cluster.network.as_ref().unwrap())
        .await;
    wait_journal(cluster, &ns, &instance, 2).await;
    let status = wait("running after the reboot", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;
    let back = &status.instances[0];
    assert_eq!((&back.id, &back.node), (&instance.id, &instance.node));
    assert_eq!(
        volume_identities(&back.volumes),
        volume_identities(&instance.volumes)
    );

    // A reboot where the data disk does not mount: the base dir is an empty
    // directory. Nothing is made in it, the instance does not start on
    // empty data, and the Degraded condition and a Warning Event say which
    // node and path.
    let network = cluster.network.as_ref().unwrap();
    node.reboot_without_data_disk(&client, network).await;
    let status = wait("data missing", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "DataMissing")
    })
    .await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert!(
        degraded.message.contains(&node.name)
            && degraded
                .message
                .contains(&instance.volumes[0].persistence_id),
        "{}",
        degraded.message
    );
    // (The pod may still say Running: a rebooted kubelet keeps the phase
    // of a pod whose containers ran before, with none of them started.)
    assert_eq!(status.ready, 0, "not ready on empty data");
    assert_eq!(
        journal_lines(cluster, &ns, &instance),
        2,
        "no start on empty data"
    );
    let empty = std::fs::read_dir(node.dir.join("unmounted"))
        .unwrap()
        .count();
    assert_eq!(empty, 0, "nothing is made on the unmounted base dir");
    wait_for_event(&client, &ns, "DataMissing", Some("Warning"), WAIT).await;

    // The disk is mounted late: the instance starts on its node, on its data.
    node.mount_data_disk();
    wait_journal(cluster, &ns, &instance, 3).await;
    let status = wait("running on its data", |s| {
        s.running == 1
            && s.ready == 1
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "False")
    })
    .await;
    assert_eq!(status.instances[0].id, instance.id);
}

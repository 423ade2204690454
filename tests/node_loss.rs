//! Node loss: a node whose kubelet (kwok) stops turns NotReady; its
//! instances show `Unreachable` with a condition and a Warning Event, keep
//! their data, and with `nodeLossPolicy: Replace` are replaced elsewhere
//! while their volumes are kept as orphans.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use statefulapp_operator::api::InstanceState;
use support::cluster::NODE_MONITOR_GRACE;
use support::fixtures::{create_app, postgres, wait_for_dir, wait_for_status};
use support::operator::Operator;
use support::{TestCluster, wait_until};

/// postgres named `name`, preferring `node` for its first placement.
fn app_on(name: &str, node: &str, node_loss: Value) -> Value {
    let mut app = postgres(1);
    app["metadata"]["name"] = json!(name);
    app["spec"]["nodeLossPolicy"] = node_loss;
    app["spec"]["template"]["spec"]["affinity"] = json!({ "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{ "weight": 100, "preference": {
            "matchExpressions": [{ "key": "kubernetes.io/hostname", "operator": "In", "values": [node] }],
        }}],
    }});
    app
}

#[tokio::test]
async fn lost_node_makes_instances_unreachable_and_replace_moves_them() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "nodeloss").await;
    let node = format!("lost-{}", &ns[ns.len() - 6..]);
    let kubelet = cluster.add_detachable_node(&client, &node).await;
    operator.restart_agent(&node);

    create_app(
        &client,
        &ns,
        app_on("waiting", &node, json!({ "action": "Wait" })),
    )
    .await;
    create_app(
        &client,
        &ns,
        app_on(
            "replaced",
            &node,
            json!({ "action": "Replace", "afterSeconds": 5 }),
        ),
    )
    .await;
    let mut first = Vec::new();
    for name in ["waiting", "replaced"] {
        let status = wait_for_status(&client, &ns, name, operator, "running on the node", |s| {
            s.running == 1
        })
        .await;
        let instance = status.instances[0].clone();
        assert_eq!(
            instance.node.as_deref(),
            Some(node.as_str()),
            "preferred node"
        );
        let dir = operator.data_dir(&node, &ns, &instance.volumes[0].persistence_id);
        wait_for_dir(&dir).await;
        std::fs::write(dir.join("marker"), &instance.id).unwrap();
        first.push((instance, dir));
    }

    drop(kubelet); // the node stops heartbeating

    // Wait: the instance stays, Unreachable, explained by a condition and an event.
    let waiting = &first[0].0;
    let status = tokio::time::timeout(NODE_MONITOR_GRACE + Duration::from_secs(60), async {
        wait_for_status(&client, &ns, "waiting", operator, "Unreachable", |s| {
            s.instances.len() == 1 && s.instances[0].state == InstanceState::Unreachable
        })
        .await
    });
    let status = match status.await {
        Ok(s) => s,
        Err(_) => panic!("instance never became Unreachable"),
    };
    assert_eq!(status.instances[0].id, waiting.id);
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NodeLost")
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let event = wait_until(Duration::from_secs(30), "NodeLost event", || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            list.into_iter()
                .find(|e| e.reason.as_deref() == Some("NodeLost"))
        }
    })
    .await;
    assert!(event.message.unwrap_or_default().contains(&node));

    // Replace: a new instance runs elsewhere; the old volume is kept as an orphan.
    let replaced = &first[1].0;
    let status = wait_for_status(
        &client,
        &ns,
        "replaced",
        operator,
        "replacement running",
        |s| s.running == 1 && s.instances.len() == 1 && s.instances[0].id != replaced.id,
    )
    .await;
    assert_ne!(status.instances[0].node.as_deref(), Some(node.as_str()));
    let orphan = &status.orphaned_volumes;
    assert_eq!(orphan.len(), 1, "{status:#?}");
    assert_eq!(orphan[0].persistence_id, replaced.volumes[0].persistence_id);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = orphan[0].persistent_volume.as_deref().unwrap();
    assert!(
        volumes
            .get(pv)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // No data was destroyed on the lost node.
    for (instance, dir) in &first {
        assert_eq!(
            std::fs::read_to_string(dir.join("marker")).unwrap(),
            instance.id
        );
    }
}

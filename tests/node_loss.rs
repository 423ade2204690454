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

/// The Node object a kubelet (here kwok's) registers for `name`.
fn node_object(name: &str) -> k8s_openapi::api::core::v1::Node {
    let resources = json!({ "cpu": "32", "memory": "256Gi", "pods": "500" });
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok",
        }},
        "status": { "allocatable": resources, "capacity": resources },
    }))
    .unwrap()
}

async fn delete_node(client: &kube::Client, name: &str) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes.delete(name, &Default::default()).await.unwrap();
    wait_until(Duration::from_secs(30), "node object gone", || {
        let nodes = nodes.clone();
        async move { nodes.get_opt(name).await.ok().filter(Option::is_none) }
    })
    .await;
}

#[tokio::test]
async fn a_node_deleted_and_registered_again_by_the_same_machine_keeps_its_instances() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "reregister").await;
    let node = format!("same-{}", &ns[ns.len() - 6..]);
    let _kubelet = cluster.add_detachable_node(&client, &node).await;
    operator.restart_agent(&node);
    let after = 45;
    create_app(
        &client,
        &ns,
        app_on(
            "kept",
            &node,
            json!({ "action": "Replace", "afterSeconds": after }),
        ),
    )
    .await;
    let status = wait_for_status(&client, &ns, "kept", operator, "running", |s| {
        s.running == 1
    })
    .await;
    let instance = status.instances[0].clone();
    assert_eq!(instance.node.as_deref(), Some(node.as_str()));
    let dir = operator.data_dir(&node, &ns, &instance.volumes[0].persistence_id);
    wait_for_dir(&dir).await;
    std::fs::write(dir.join("marker"), &instance.id).unwrap();

    // The Node object is deleted (the machine keeps running, as after a
    // `kubectl delete node`): the instance is unreachable, not replaced.
    let deleted = std::time::Instant::now();
    delete_node(&client, &node).await;
    wait_for_status(&client, &ns, "kept", operator, "Unreachable", |s| {
        s.instances.len() == 1 && s.instances[0].state == InstanceState::Unreachable
    })
    .await;
    // Long enough for a replacement to be done, were it started now.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let apps: Api<statefulapp_operator::api::StatefulApp> = Api::namespaced(client.clone(), &ns);
    let status = apps.get("kept").await.unwrap().status.unwrap();
    assert_eq!(status.instances.len(), 1, "{status:#?}");
    assert_eq!(status.instances[0].id, instance.id, "not replaced yet");
    assert!(status.orphaned_volumes.is_empty(), "{status:#?}");

    // The same machine registers the node again: the instance runs there on its data.
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .create(&Default::default(), &node_object(&node))
        .await
        .unwrap();
    wait_for_status(&client, &ns, "kept", operator, "running again", |s| {
        s.running == 1 && s.instances[0].id == instance.id
    })
    .await;
    // Past the node-loss grace counted from the deletion: still the same.
    let grace = Duration::from_secs(after as u64 + 5);
    tokio::time::sleep(grace.saturating_sub(deleted.elapsed())).await;
    let status = apps.get("kept").await.unwrap().status.unwrap();
    assert_eq!(status.instances.len(), 1, "{status:#?}");
    assert_eq!(status.instances[0].id, instance.id);
    assert_eq!(status.instances[0].state, InstanceState::Running);
    assert!(status.orphaned_volumes.is_empty(), "{status:#?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("marker")).unwrap(),
        instance.id
    );
}

#[tokio::test]
async fn a_different_machine_registered_under_a_lost_nodes_name_is_not_taken_for_it() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "impostor").await;
    let node = format!("other-{}", &ns[ns.len() - 6..]);
    let kubelet = cluster.add_detachable_node(&client, &node).await;
    operator.restart_agent(&node);
    create_app(
        &client,
        &ns,
        app_on("waiting", &node, json!({ "action": "Wait" })),
    )
    .await;
    let status = wait_for_status(&client, &ns, "waiting", operator, "running", |s| {
        s.running == 1
    })
    .await;
    let instance = status.instances[0].clone();
    assert_eq!(instance.node.as_deref(), Some(node.as_str()));
    let persistence_id = &instance.volumes[0].persistence_id;
    let dir = operator.data_dir(&node, &ns, persistence_id);
    wait_for_dir(&dir).await;
    std::fs::write(dir.join("marker"), &instance.id).unwrap();

    // The machine goes away with its disk; another one registers the name.
    drop(kubelet);
    drop(operator.agents.lock().unwrap().remove(&node));
    delete_node(&client, &node).await;
    let first_disk = operator.disks.join(format!("{node}-first-machine"));
    std::fs::rename(operator.disks.join(&node), &first_disk).unwrap();
    let _kubelet = cluster.add_detachable_node(&client, &node).await;
    operator.restart_agent(&node);

    // Its empty disk is not taken for the lost one's: nothing is made there,
    // the volume's data is reported missing, the app stalls and says where.
    let status = wait_for_status(&client, &ns, "waiting", operator, "DataMissing", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "DataMissing")
    })
    .await;
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert!(stalled.message.contains(&node), "{}", stalled.message);
    assert_eq!(status.instances.len(), 1);
    assert_eq!(
        status.instances[0].id, instance.id,
        "the same instance, waiting"
    );
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes
        .get(instance.volumes[0].persistent_volume.as_deref().unwrap())
        .await
        .unwrap();
    assert!(
        pv.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("statefulapp.io/data-missing")
    );
    assert!(
        !operator.data_dir(&node, &ns, persistence_id).exists(),
        "no empty directory made on the other machine's disk"
    );
    let kept = first_disk.join(&ns).join(persistence_id).join("marker");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), instance.id);
}

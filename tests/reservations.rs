//! Reservations on the control plane (kwok nodes): a stopped instance keeps
//! its CPU and memory on its node, held by a reservation pod that ordinary
//! pods cannot take or preempt; its restart takes them over, bound straight
//! to its node; `Release` keeps only the volumes.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use statefulapp_operator::api::{InstanceState, ReservationState, StatefulApp};
use support::cluster::{NodeCapacity, add_node};
use support::fixtures::{create_app, in_state, postgres, set_instances, wait_for_status};
use support::operator::{Operator, RESERVATION_PRIORITY_CLASS};
use support::{TestCluster, wait_until};

/// postgres asking 3 of the node's 4 CPUs, placed first on `node` (other
/// nodes would take it too: the preference is all that pins it).
fn big_app(node: &str) -> serde_json::Value {
    let mut app = postgres(1);
    let pod = &mut app["spec"]["template"]["spec"];
    pod["containers"][0]["resources"] = json!({ "requests": { "cpu": "3", "memory": "1Gi" } });
    pod["affinity"] = json!({ "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{ "weight": 100, "preference": {
            "matchExpressions": [{ "key": "kubernetes.io/hostname", "operator": "In", "values": [node] }],
        }}],
    }});
    app
}

/// An ordinary pod of another workload that needs 2 CPUs of `node`.
fn intruder(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": node },
            "containers": [{ "name": "c", "image": "busybox",
                             "resources": { "requests": { "cpu": "2" } } }],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_stopped_instance_keeps_its_cpu_and_its_restart_takes_it_over() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "reserve").await;
    let node = format!("resv-{}", &ns[ns.len() - 6..]);
    add_node(
        &client,
        &node,
        NodeCapacity {
            cpu: "4",
            memory: "8Gi",
            pods: "20",
        },
    )
    .await
    .expect("add node");
    operator.restart_agent(&node);
    create_app(&client, &ns, big_app(&node)).await;
    let running = wait_for_status(&client, &ns, "postgres", operator, "running", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;
    let id = running.instances[0].id.clone();
    assert_eq!(running.instances[0].node.as_deref(), Some(node.as_str()));

    // Stopped: its resources are held by a reservation pod on its node.
    set_instances(&client, &ns, "postgres", 0).await;
    let stopped = wait_for_status(&client, &ns, "postgres", operator, "stopped, held", |s| {
        s.stopped == 1
            && s.instances[0]
                .reservation
                .as_ref()
                .is_some_and(|r| r.state == ReservationState::Held)
    })
    .await;
    let reservation = stopped.instances[0].reservation.clone().unwrap();
    assert_eq!(
        reservation.resources.get("cpu").map(String::as_str),
        Some("3")
    );
    assert_eq!(
        reservation.resources.get("memory").map(String::as_str),
        Some("1Gi")
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let held = pods.get(&reservation.pod).await.expect("reservation pod");
    let spec = held.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(node.as_str()));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some(RESERVATION_PRIORITY_CLASS)
    );
    assert!(spec.priority.unwrap_or(0) > 0);
    // Cluster autoscalers keep a node that holds an instance, stopped or not.
    let keeps_node = |pod: &Pod| {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        annotations
            .get("cluster-autoscaler.kubernetes.io/safe-to-evict")
            .map(String::as_str)
            == Some("false")
            && annotations
                .get("karpenter.sh/do-not-disrupt")
                .map(String::as_str)
                == Some("true")
    };
    assert!(keeps_node(&held), "{:?}", held.metadata.annotations);
    let labels = held.metadata.labels.clone().unwrap_or_default();
    assert!(
        !labels.contains_key("statefulapp.io/app"),
        "a reservation is never one of the app's pods (Services, PDBs, HPAs select those)"
    );
    let describe = cluster
        .kubectl()
        .args(["describe", "node", &node])
        .output()
        .unwrap();
    let describe = String::from_utf8_lossy(&describe.stdout);
    assert!(
        describe.contains(&reservation.pod),
        "kubectl describe node lists the reservation:\n{describe}"
    );

    // Another workload cannot take the CPU, nor preempt the reservation.
    pods.create(&PostParams::default(), &intruder("intruder", &node))
        .await
        .expect("create intruder");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let refusal = wait_until(Duration::from_secs(30), "intruder unschedulable", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=intruder"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
                .and_then(|e| e.message)
        }
    })
    .await;
    assert!(refusal.contains("Insufficient cpu"), "{refusal}");
    assert!(
        pods.get(&reservation.pod).await.is_ok(),
        "an ordinary pod never preempts a reservation"
    );
    let intruder_pod = pods.get("intruder").await.unwrap();
    assert!(
        intruder_pod.spec.unwrap().node_name.is_none(),
        "still pending"
    );
    pods.delete("intruder", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "intruder gone", || {
        let pods = pods.clone();
        async move { pods.get_opt("intruder").await.ok()?.is_none().then_some(()) }
    })
    .await;

    // The restart takes the held resources over on its node, with no
    // scheduling round.
    set_instances(&client, &ns, "postgres", 1).await;
    let restarted = wait_for_status(&client, &ns, "postgres", operator, "restarted", |s| {
        s.running == 1 && s.ready == 1 && s.instances[0].reservation.is_none()
    })
    .await;
    assert_eq!(restarted.instances[0].id, id, "the same instance");
    assert_eq!(restarted.instances[0].node.as_deref(), Some(node.as_str()));
    assert!(pods.get_opt(&reservation.pod).await.unwrap().is_none());
    let pod_name = id.replacen('.', "-", 1);
    assert!(keeps_node(&pods.get(&pod_name).await.unwrap()));
    let scheduled = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod_name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
        .count();
    assert_eq!(
        scheduled, 1,
        "scheduled once, for its first start; its restart was bound to its node directly"
    );
}

#[tokio::test]
async fn release_keeps_only_the_volumes() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "release").await;
    create_app(&client, &ns, postgres(2)).await;
    wait_for_status(&client, &ns, "postgres", operator, "running", |s| {
        s.running == 2
    })
    .await;
    set_instances(&client, &ns, "postgres", 0).await;
    let held = wait_for_status(&client, &ns, "postgres", operator, "held", |s| {
        s.stopped == 2
            && s.instances.iter().all(|i| {
                i.reservation
                    .as_ref()
                    .is_some_and(|r| r.state == ReservationState::Held)
            })
    })
    .await;
    // Switching to Release frees the CPU and memory, never the volumes.
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let patch = json!({ "spec": { "reservation": { "resources": "Release" } } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let released = wait_for_status(&client, &ns, "postgres", operator, "released", |s| {
        s.stopped == 2 && s.instances.iter().all(|i| i.reservation.is_none())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for instance in &held.instances {
        let pod = &instance.reservation.as_ref().unwrap().pod;
        wait_until(Duration::from_secs(30), "reservation pod gone", || {
            let pods = pods.clone();
            async move { pods.get_opt(pod).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }
    for (before, after) in held.instances.iter().zip(&released.instances) {
        assert_eq!(before.id, after.id);
        assert_eq!(before.node, after.node);
        assert!(after.volumes.iter().all(|v| v.persistent_volume.is_some()));
    }
    // A restart then goes through kube-scheduler, and still to its node.
    set_instances(&client, &ns, "postgres", 2).await;
    let restarted = wait_for_status(&client, &ns, "postgres", operator, "restarted", |s| {
        in_state(s, InstanceState::Running).len() == 2
    })
    .await;
    for (before, after) in held.instances.iter().zip(&restarted.instances) {
        assert_eq!(before.node, after.node);
    }
}

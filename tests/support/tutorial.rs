//! The DC/OS stateful-service tutorial, step by step, checking objects and
//! the data on the node's disk at each step. Shared by the test that runs
//! the operator with admin rights and the one that runs it under the Helm
//! chart's ServiceAccounts.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use statefulapp_operator::api::{
    InstanceState, InstanceStatus, ReservationState, StatefulApp, StatefulAppStatus,
};

use super::TestCluster;
use super::fixtures::{
    WAIT, create_app, in_state, postgres, set_instances, volume_identities, wait_for_dir,
    wait_for_status,
};
use super::operator::Operator;
use super::wait::wait_until;

/// Data directory of an instance's one volume on its node's disk.
fn data_dir(operator: &Operator, ns: &str, instance: &InstanceStatus) -> PathBuf {
    let node = instance.node.as_deref().expect("instance placed on a node");
    operator.data_dir(node, ns, &instance.volumes[0].persistence_id)
}

fn single(status: &StatefulAppStatus, state: InstanceState) -> &InstanceStatus {
    let found = in_state(status, state);
    assert_eq!(
        found.len(),
        1,
        "expected one {state:?} instance in {status:#?}"
    );
    found[0]
}

/// Walks the tutorial in a fresh namespace of `cluster`, with `operator`.
pub async fn walk(cluster: &TestCluster, operator: &Operator) {
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "tutorial").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());

    // 1. app add: one instance, placed by the scheduler, with a node-local volume.
    create_app(&client, &ns, postgres(1)).await;
    let status = wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "one running instance",
        |s| s.running == 1 && s.ready == 1,
    )
    .await;
    let first = single(&status, InstanceState::Running).clone();
    assert!(first.id.starts_with("postgres."), "{}", first.id);
    assert!(first.started_at.is_some());
    let node = first.node.clone().expect("placed");
    let volume = &first.volumes[0];
    assert!(volume.persistence_id.starts_with("postgres#pgdata#"));
    let pv = volumes
        .get(
            volume
                .persistent_volume
                .as_deref()
                .expect("volume provisioned"),
        )
        .await
        .unwrap();
    let pv_spec = pv.spec.unwrap();
    assert_eq!(
        pv_spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    let affinity = serde_json::to_value(&pv_spec.node_affinity).unwrap();
    assert_eq!(
        affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
        json!(node)
    );
    let pod = pods
        .get(&format!("postgres-{}", &first.id["postgres.".len()..]))
        .await
        .unwrap();
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some(node.as_str()));

    // The agent made the directory; the "database" writes into it.
    let dir = data_dir(operator, &ns, &first);
    wait_for_dir(&dir).await;
    std::fs::write(dir.join("PG_VERSION"), "9.5\n").unwrap();

    // 2. app stop: the instance stays, Stopped, with node and volumes, no startedAt.
    set_instances(&client, &ns, "postgres", 0).await;
    let status = wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "instance stopped",
        |s| s.running == 0 && s.stopped == 1,
    )
    .await;
    let stopped = single(&status, InstanceState::Stopped);
    assert_eq!(stopped.id, first.id);
    assert_eq!(stopped.node, first.node);
    assert_eq!(
        volume_identities(&stopped.volumes),
        volume_identities(&first.volumes)
    );
    assert!(stopped.started_at.is_none());
    wait_until(WAIT, "pod deleted", || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels("statefulapp.io/app=postgres"))
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        }
    })
    .await;
    // "All resources required to run the task are dynamically reserved":
    // its CPU and memory stay held on its node.
    let status = wait_for_status(&client, &ns, "postgres", operator, "resources held", |s| {
        s.instances[0]
            .reservation
            .as_ref()
            .is_some_and(|r| r.state == ReservationState::Held)
    })
    .await;
    let reservation = status.instances[0].reservation.as_ref().unwrap();
    let held = pods.get(&reservation.pod).await.unwrap();
    assert_eq!(held.spec.unwrap().node_name, first.node);
    let claim = claims.get(&volume.claim).await.unwrap();
    assert_eq!(
        claim.status.unwrap().phase.as_deref(),
        Some("Bound"),
        "stopped instance keeps its claim bound"
    );
    assert!(dir.join("PG_VERSION").exists());

    // 3. app start: the same instance relaunches on the same node with the same data.
    set_instances(&client, &ns, "postgres", 1).await;
    let status = wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "instance restarted",
        |s| s.running == 1 && s.ready == 1,
    )
    .await;
    let restarted = single(&status, InstanceState::Running);
    assert_eq!(restarted.id, first.id);
    assert_eq!(restarted.node, first.node);
    assert_eq!(
        volume_identities(&restarted.volumes),
        volume_identities(&first.volumes)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("PG_VERSION")).unwrap(),
        "9.5\n"
    );

    // 4. app update instances=2, through the scale subresource (kubectl scale).
    let output = cluster
        .kubectl()
        .args(["scale", "-n", &ns, "statefulapp/postgres", "--replicas=2"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = wait_for_status(&client, &ns, "postgres", operator, "two running", |s| {
        s.running == 2 && s.ready == 2
    })
    .await;
    let second = status
        .instances
        .iter()
        .find(|i| i.id != first.id)
        .unwrap()
        .clone();
    assert_ne!(
        second.volumes[0].persistence_id,
        first.volumes[0].persistence_id
    );
    let second_dir = data_dir(operator, &ns, &second);
    wait_for_dir(&second_dir).await;
    std::fs::write(second_dir.join("marker"), "second").unwrap();

    // 5. app update instances=1: the youngest stops and stays reserved.
    set_instances(&client, &ns, "postgres", 1).await;
    let status = wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "one running one stopped",
        |s| s.running == 1 && s.stopped == 1,
    )
    .await;
    assert_eq!(single(&status, InstanceState::Running).id, first.id);
    assert_eq!(single(&status, InstanceState::Stopped).id, second.id);
    assert!(second_dir.join("marker").exists());

    // 6. task stop --wipe: the stopped instance and its data are destroyed.
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let wipe = json!({ "metadata": { "annotations": { "statefulapp.io/wipe": second.id } } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&wipe))
        .await
        .unwrap();
    let status = wait_for_status(&client, &ns, "postgres", operator, "second wiped", |s| {
        s.instances.len() == 1
    })
    .await;
    assert_eq!(status.instances[0].id, first.id);
    // The annotation may stay (GitOps keeps it): a completed wipe is no
    // error, so the app settles as not Degraded.
    let not_degraded = |s: &StatefulAppStatus| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "False")
    };
    wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "wipe recorded, not degraded",
        |s| s.wiped_instances.contains(&second.id) && not_degraded(s),
    )
    .await;
    let second_pv = second.volumes[0].persistent_volume.clone().unwrap();
    wait_until(WAIT, "wiped volume and claim gone", || {
        let (volumes, claims) = (volumes.clone(), claims.clone());
        let (pv, claim) = (second_pv.clone(), second.volumes[0].claim.clone());
        async move {
            let gone = volumes.get_opt(&pv).await.ok()?.is_none()
                && claims.get_opt(&claim).await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await;
    assert!(!second_dir.exists(), "wiped data must be removed from disk");
    assert!(
        dir.join("PG_VERSION").exists(),
        "the other instance keeps its data"
    );

    // 7. app remove: pods go, volumes and data stay.
    apps.delete("postgres", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(WAIT, "app and pods gone", || {
        let (apps, pods) = (apps.clone(), pods.clone());
        async move {
            let gone = apps.get_opt("postgres").await.ok()?.is_none()
                && pods
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty();
            gone.then_some(())
        }
    })
    .await;
    assert!(
        claims.get_opt(&volume.claim).await.unwrap().is_some(),
        "claim kept after app removal"
    );
    assert!(
        dir.join("PG_VERSION").exists(),
        "data kept after app removal"
    );

    // Re-creating the app adopts the kept instance: same id, node and data.
    create_app(&client, &ns, postgres(1)).await;
    let status = wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "adopted instance running",
        |s| s.running == 1,
    )
    .await;
    let adopted = single(&status, InstanceState::Running);
    assert_eq!(adopted.id, first.id);
    assert_eq!(adopted.node, first.node);
    assert_eq!(
        volume_identities(&adopted.volumes),
        volume_identities(&first.volumes)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("PG_VERSION")).unwrap(),
        "9.5\n"
    );
}

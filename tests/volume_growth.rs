//! A volume's `size` raised on the control plane (kwok nodes, sizes not
//! enforced): every instance's claim, running or stopped, asks for the new
//! size, its volume's capacity follows, and the claim's capacity (what
//! `kubectl get pvc` shows) once the provisioner completed the growth.
//! Nothing is stopped or restarted. (Growth of enforced volumes, on real
//! nodes: `tests/real_node_growth.rs`.)

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use statefulapp_operator::api::InstanceState;
use statefulapp_operator::names::LABEL_APP;
use support::TestCluster;
use support::fixtures::{create_app, in_state, postgres, set_instances, wait_for_status};
use support::operator::Operator;
use support::wait::wait_until;

const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Each claim of the app: (name, requested, capacity, volume).
async fn claims(client: &Client, ns: &str) -> Vec<(String, String, String, String)> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&format!("{LABEL_APP}=postgres")))
        .await
        .unwrap();
    list.items
        .iter()
        .map(|c| {
            let spec = c.spec.as_ref().unwrap();
            let requested = spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"]
                .0
                .clone();
            let capacity = c
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .map(|c| c["storage"].0.clone())
                .unwrap_or_default();
            (
                c.name_any(),
                requested,
                capacity,
                spec.volume_name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn pod_uids(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_larger_size_grows_the_volumes_of_running_and_stopped_instances() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "grow").await;
    create_app(&client, &ns, postgres(2)).await;
    wait_for_status(&client, &ns, "postgres", operator, "2 running", |s| {
        s.running == 2
    })
    .await;
    set_instances(&client, &ns, "postgres", 1).await;
    wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "1 running, 1 stopped",
        |s| s.running == 1 && in_state(s, InstanceState::Stopped).len() == 1,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let app_pods = ListParams::default().labels(&format!("{LABEL_APP}=postgres"));
    let before = pod_uids(&pods.list(&app_pods).await.unwrap().items);
    let before_claims = claims(&client, &ns).await;
    assert_eq!(before_claims.len(), 2);
    assert!(
        before_claims
            .iter()
            .all(|c| c.1 == "100Mi" && c.2 == "100Mi"),
        "{before_claims:?}"
    );

    let grow = json!({ "spec": { "volumes": [
        { "name": "pgdata", "size": "300Mi", "mountPath": "/var/lib/postgresql/data" },
    ] } });
    Api::<statefulapp_operator::api::StatefulApp>::namespaced(client.clone(), &ns)
        .patch("postgres", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .unwrap();
    let grown = wait_until(WAIT, "both claims grown to 300Mi", || async {
        let now = claims(&client, &ns).await;
        now.iter()
            .all(|c| c.1 == "300Mi" && c.2 == "300Mi")
            .then_some(now)
    })
    .await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for (claim, _, _, volume) in &grown {
        let pv = volumes.get(volume).await.unwrap();
        assert_eq!(
            pv.spec.as_ref().unwrap().capacity.as_ref().unwrap()["storage"].0,
            "300Mi",
            "{claim}"
        );
        assert!(
            !pv.annotations()
                .contains_key("volume.alpha.kubernetes.io/pre-resize-capacity"),
            "{claim}: the growth is done"
        );
        assert_eq!(
            before_claims.iter().find(|c| &c.0 == claim).unwrap().3,
            *volume,
            "the same volume"
        );
    }
    // Nothing stopped or started for it.
    let after = pod_uids(&pods.list(&app_pods).await.unwrap().items);
    assert_eq!(before, after, "pods were replaced by a growth");
    let status = wait_for_status(&client, &ns, "postgres", operator, "still 1 of 2", |s| {
        s.running == 1 && in_state(s, InstanceState::Stopped).len() == 1
    })
    .await;
    assert_eq!(status.instances.len(), 2);

    // The stopped instance starts on its grown volume.
    set_instances(&client, &ns, "postgres", 2).await;
    wait_for_status(&client, &ns, "postgres", operator, "2 running", |s| {
        s.running == 2
    })
    .await;
    assert!(claims(&client, &ns).await.iter().all(|c| c.2 == "300Mi"));
}

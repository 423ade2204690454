//! Smoke tests proving the test control plane is a real Kubernetes: the
//! scheduler, the PV binder, the garbage collector and the node lifecycle
//! controller all act, and kwok nodes run pods.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::cluster::NODE_MONITOR_GRACE;
use support::{TestCluster, wait_until};

const WAIT: Duration = Duration::from_secs(60);

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("object json");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create object")
}

fn pod(name: &str, claim: Option<&str>) -> Value {
    let mut pod = json!({
        "metadata": { "name": name },
        "spec": {
            "containers": [{ "name": "main", "image": "busybox",
                             "resources": { "requests": { "cpu": "100m", "memory": "64Mi" } } }],
        },
    });
    if let Some(claim) = claim {
        pod["spec"]["volumes"] =
            json!([{ "name": "data", "persistentVolumeClaim": { "claimName": claim } }]);
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{ "name": "data", "mountPath": "/data" }]);
    }
    pod
}

#[tokio::test]
async fn pod_is_scheduled_to_a_kwok_node_and_runs() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "smoke-pod").await;
    let _: Pod = create(&Api::namespaced(client.clone(), &ns), pod("web", None)).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = wait_until(WAIT, "pod web Running", || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("web").await.ok()?;
            let phase = pod.status.as_ref()?.phase.clone()?;
            (phase == "Running").then_some(pod)
        }
    })
    .await;
    let node = running
        .spec
        .unwrap()
        .node_name
        .expect("pod bound to a node");
    assert!(
        cluster.nodes.contains(&node),
        "scheduled to {node}, not a kwok node"
    );
}

#[tokio::test]
async fn wait_for_first_consumer_claim_gets_the_scheduler_selected_node() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "smoke-wffc").await;
    let class = format!("wffc-{ns}");
    let _: StorageClass = create(
        &Api::all(client.clone()),
        json!({
            "metadata": { "name": class },
            // A provisioner nobody serves: the scheduler still selects a node.
            "provisioner": "smoke.statefulapp.io/none",
            "volumeBindingMode": "WaitForFirstConsumer",
        }),
    )
    .await;
    let _: PersistentVolumeClaim = create(
        &Api::namespaced(client.clone(), &ns),
        json!({
            "metadata": { "name": "data" },
            "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                      "resources": { "requests": { "storage": "1Gi" } } },
        }),
    )
    .await;
    let _: Pod = create(
        &Api::namespaced(client.clone(), &ns),
        pod("db", Some("data")),
    )
    .await;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let selected = wait_until(WAIT, "selected-node annotation on claim", || {
        let claims = claims.clone();
        async move {
            let claim = claims.get("data").await.ok()?;
            claim
                .annotations()
                .get("volume.kubernetes.io/selected-node")
                .cloned()
        }
    })
    .await;
    assert!(cluster.nodes.contains(&selected), "selected {selected}");
}

#[tokio::test]
async fn node_affine_volume_and_prebound_claim_are_bound_by_the_controller_manager() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "smoke-bind").await;
    let pv_name = format!("pv-{ns}");
    let node = &cluster.nodes[0];
    let _: PersistentVolume = create(
        &Api::all(client.clone()),
        json!({
            "metadata": { "name": pv_name },
            "spec": {
                "capacity": { "storage": "1Gi" },
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "local": { "path": "/var/lib/smoke" },
                "claimRef": { "namespace": ns, "name": "data" },
                "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                    { "key": "kubernetes.io/hostname", "operator": "In", "values": [node] }
                ]}]}},
            },
        }),
    )
    .await;
    let _: PersistentVolumeClaim = create(
        &Api::namespaced(client.clone(), &ns),
        json!({
            "metadata": { "name": "data" },
            "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                      "volumeName": pv_name,
                      "resources": { "requests": { "storage": "1Gi" } } },
        }),
    )
    .await;
    let _: Pod = create(
        &Api::namespaced(client.clone(), &ns),
        pod("db", Some("data")),
    )
    .await;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_until(WAIT, "claim Bound", || {
        let claims = claims.clone();
        async move {
            let phase = claims.get("data").await.ok()?.status?.phase?;
            (phase == "Bound").then_some(())
        }
    })
    .await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let phase = volumes.get(&pv_name).await.unwrap().status.unwrap().phase;
    assert_eq!(phase.as_deref(), Some("Bound"));

    // The volume's node affinity decides where the pod runs.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let placed = wait_until(WAIT, "pod placed by volume affinity", || {
        let pods = pods.clone();
        async move { pods.get("db").await.ok()?.spec?.node_name }
    })
    .await;
    assert_eq!(&placed, node);
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "smoke-gc").await;
    let owner: ConfigMap = create(
        &Api::namespaced(client.clone(), &ns),
        json!({ "metadata": { "name": "owner" } }),
    )
    .await;
    let _: ConfigMap = create(
        &Api::namespaced(client.clone(), &ns),
        json!({ "metadata": { "name": "dependent", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap(),
        }]}}),
    )
    .await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    maps.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_until(WAIT, "dependent garbage-collected", || {
        let maps = maps.clone();
        async move {
            maps.get_opt("dependent")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_node_whose_kubelet_stops_turns_not_ready() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let name = format!(
        "smoke-lost-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let kubelet = cluster.add_detachable_node(&client, &name).await;
    let nodes: Api<Node> = Api::all(client.clone());
    // Cordoned at once: the other tests of this plane place pods on any
    // node, and none would run on this one once its kubelet is gone.
    let cordon = json!({ "spec": { "unschedulable": true } });
    nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&cordon))
        .await
        .expect("cordon the node");

    drop(kubelet);
    let condition = wait_until(NODE_MONITOR_GRACE + WAIT, "node NotReady", || {
        let nodes = nodes.clone();
        let name = name.clone();
        async move {
            let node = nodes.get(&name).await.ok()?;
            let ready = node
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status != "True").then_some(ready)
        }
    })
    .await;
    assert_eq!(condition.status, "Unknown", "{condition:?}");
}

#[test]
fn kubectl_talks_to_the_plane() {
    let cluster = TestCluster::shared();
    let output = cluster
        .kubectl()
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = String::from_utf8_lossy(&output.stdout);
    for node in &cluster.nodes {
        assert!(listed.contains(&format!("node/{node}")), "{listed}");
    }
}

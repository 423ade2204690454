//! The timed scenarios. Each runs in a fresh namespace and measures from the
//! request to the moment every pod is Running and every claim Bound.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use statefulapp_operator::api::StatefulApp;

use crate::support::TestCluster;
use crate::support::fixtures::postgres;
use crate::support::operator::{Operator, STORAGE_CLASS};
use crate::writes::{self, Window};

/// Concurrency of the direct client (the ceiling).
const CEILING_CONCURRENCY: usize = 64;
/// A system that has not converged by then is reported as timed out.
const TIMEOUT: Duration = Duration::from_secs(240);

fn container() -> Value {
    json!({ "name": "postgres", "image": "postgres:16",
            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } })
}

async fn namespace(cluster: &TestCluster, client: &Client, prefix: &str) -> String {
    cluster.namespace(client, prefix).await
}

/// One timed phase of a scenario: how long it took (`None`: timed out) and
/// its window in the audit log, for counting its writes.
pub struct Phase {
    pub elapsed: Option<Duration>,
    pub window: Window,
}

/// Times `run`, which says whether it converged.
async fn timed(cluster: &TestCluster, run: impl Future<Output = bool>) -> Phase {
    let log = writes::audit_log(&cluster.dir);
    let start = writes::mark(&log);
    let started = Instant::now();
    let converged = run.await;
    let elapsed = converged.then(|| started.elapsed());
    let end = writes::mark(&log);
    Phase {
        elapsed,
        window: Window { start, end },
    }
}

/// Pods of the app under test (not the operator's reservation pods).
const SAPP_PODS: &str = "statefulapp.io/app=postgres";
const STS_PODS: &str = "app=postgres";

/// Polls until `n` pods of `ns` selected by `selector` run and `claims`
/// claims are Bound (and, when `n` is 0, no such pod is left at all). False
/// on timeout. Prints when all pods existed and when all were placed, to
/// show where the time goes.
async fn wait_converged(
    client: &Client,
    ns: &str,
    selector: &str,
    n: usize,
    claims: usize,
) -> bool {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let deadline = started + TIMEOUT;
    let (mut created, mut placed) = (None, None);
    loop {
        let pod_list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let running = pod_list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        let live = pod_list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none());
        if n > 0 && created.is_none() && live.clone().count() == n {
            created = Some(started.elapsed());
        }
        let on_node = live
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        if n > 0 && placed.is_none() && on_node == n {
            placed = Some(started.elapsed());
        }
        let settled_pods = if n == 0 {
            pod_list.is_empty()
        } else {
            running == n
        };
        if settled_pods {
            let bound = pvcs
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .count();
            if bound >= claims {
                if n > 0 {
                    eprintln!(
                        "bench: {ns}: {n} pods created after {created:.2?}, placed after {placed:.2?}, running and bound after {:.2?}",
                        started.elapsed()
                    );
                }
                return true;
            }
        }
        if Instant::now() > deadline {
            eprintln!("bench: {ns}: not converged to {n} running after {TIMEOUT:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Cold scale-up 0 -> n, then stop all and time the restart back to n.
pub async fn statefulapp_scale_up_and_restart(
    cluster: &TestCluster,
    _operator: &Operator,
    n: usize,
) -> (Phase, Phase) {
    let client = cluster.client().await;
    let ns = namespace(cluster, &client, "bench-sapp").await;
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let mut app = postgres(0);
    app["spec"]["template"]["spec"]["containers"] = json!([container()]);
    let app: StatefulApp = serde_json::from_value(app).unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();

    let scale = |count: usize| {
        let apps = apps.clone();
        async move {
            let patch = json!({ "spec": { "instances": count } });
            apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    let cold = timed(cluster, async {
        scale(n).await;
        wait_converged(&client, &ns, SAPP_PODS, n, n).await
    })
    .await;

    scale(0).await;
    // Stopped: no pod left, and every instance's resources held.
    let stopped = wait_converged(&client, &ns, SAPP_PODS, 0, n).await
        && wait_converged(&client, &ns, "statefulapp.io/reserved-for=postgres", n, n).await;
    let restart = timed(cluster, async {
        scale(n).await;
        stopped && wait_converged(&client, &ns, SAPP_PODS, n, n).await
    })
    .await;
    clear(&client, &ns).await;
    (cold, restart)
}

/// The peer: a Parallel StatefulSet with volumeClaimTemplates on the same
/// StorageClass (served by the same provisioner and agents).
pub async fn statefulset_scale_up_and_restart(cluster: &TestCluster, n: usize) -> (Phase, Phase) {
    let client = cluster.client().await;
    let ns = namespace(cluster, &client, "bench-sts").await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let set = statefulset(
        "postgres",
        0,
        json!({ "app": "postgres" }),
        json!({ "cpu": "10m", "memory": "16Mi" }),
    );
    sets.create(&PostParams::default(), &set).await.unwrap();
    let scale = |count: usize| {
        let sets = sets.clone();
        async move {
            let patch = json!({ "spec": { "replicas": count } });
            sets.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    let cold = timed(cluster, async {
        scale(n).await;
        wait_converged(&client, &ns, STS_PODS, n, n).await
    })
    .await;

    scale(0).await;
    let stopped = wait_converged(&client, &ns, STS_PODS, 0, n).await;
    let restart = timed(cluster, async {
        scale(n).await;
        stopped && wait_converged(&client, &ns, STS_PODS, n, n).await
    })
    .await;
    clear(&client, &ns).await;
    (cold, restart)
}

/// A Parallel StatefulSet named `name` whose pods carry `labels` (with
/// `app: name` as its selector), request `requests`, and each have a 100Mi
/// claim of the operator's StorageClass, kept when scaled down.
pub fn statefulset(name: &str, replicas: usize, labels: Value, requests: Value) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "serviceName": name,
            "selector": { "matchLabels": { "app": name } },
            "persistentVolumeClaimRetentionPolicy": { "whenScaled": "Retain", "whenDeleted": "Retain" },
            "template": {
                "metadata": { "labels": labels },
                "spec": { "containers": [{
                    "name": "postgres", "image": "postgres:16",
                    "resources": { "requests": requests },
                    "volumeMounts": [{ "name": "pgdata", "mountPath": "/var/lib/postgresql/data" }],
                }]},
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "pgdata" },
                "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                          "resources": { "requests": { "storage": "100Mi" } } },
            }],
        },
    }))
    .unwrap()
}

/// The ceiling: a client creating, per instance, a claim, a node-local
/// volume bound to it and the pod already placed on the volume's node, with
/// bounded concurrency: no scheduler, provisioner, binder or controller in
/// the way, only the API server's own work.
pub async fn ceiling_create(cluster: &TestCluster, n: usize) -> Phase {
    let client = cluster.client().await;
    let ns = namespace(cluster, &client, "bench-ceiling").await;
    let nodes = cluster.nodes.clone();
    let phase = timed(cluster, async {
        futures::stream::iter(0..n)
            .map(|i| {
                let (client, ns, node) =
                    (client.clone(), ns.clone(), nodes[i % nodes.len()].clone());
                async move { create_direct(&client, &ns, i, &node).await }
            })
            .buffer_unordered(CEILING_CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
        wait_converged(&client, &ns, "", n, n).await
    })
    .await;
    clear(&client, &ns).await;
    phase
}

/// One instance the shortest way: the claim, its volume already bound to it
/// (the client plays the binder too: both statuses written Bound), and the
/// pod placed on the volume's node.
async fn create_direct(client: &Client, ns: &str, i: usize, node: &str) {
    let pv_name = format!("{ns}-{i}");
    let claim = format!("data-{i}");
    let pp = PostParams::default();
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": claim },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                  "resources": { "requests": { "storage": "100Mi" } } },
    }))
    .unwrap();
    let uid = claims.create(&pp, &pvc).await.unwrap().metadata.uid;
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": pv_name },
        "spec": {
            "capacity": { "storage": "100Mi" }, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "local": { "path": format!("/var/lib/bench/{pv_name}") },
            "claimRef": { "namespace": ns, "name": claim, "uid": uid },
            "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                { "key": "kubernetes.io/hostname", "operator": "In", "values": [node] }]}]}},
        },
    }))
    .unwrap();
    volumes.create(&pp, &pv).await.unwrap();
    let bound = |extra: Value| {
        let mut status = json!({ "phase": "Bound" });
        if let (Some(s), Some(e)) = (status.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({ "status": status })
    };
    let pp_status = PatchParams::default();
    volumes
        .patch_status(&pv_name, &pp_status, &Patch::Merge(bound(json!({}))))
        .await
        .unwrap();
    let claim_status = bound(json!({
        "accessModes": ["ReadWriteOnce"], "capacity": { "storage": "100Mi" },
    }));
    claims
        .patch_status(&claim, &pp_status, &Patch::Merge(claim_status))
        .await
        .unwrap();
    let mut pod = container();
    pod["volumeMounts"] = json!([{ "name": "pgdata", "mountPath": "/var/lib/postgresql/data" }]);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": format!("postgres-{i}") },
        // Placed by the client itself: the ceiling skips the scheduler.
        "spec": { "nodeName": node, "containers": [pod],
                  "volumes": [{ "name": "pgdata", "persistentVolumeClaim": { "claimName": claim } }] },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&pp, &pod)
        .await
        .unwrap();
}

/// Wipe throughput: n stopped instances wiped by one annotation; time until
/// every claim and volume is gone (the agents removed the data).
pub async fn statefulapp_wipe(
    cluster: &TestCluster,
    _operator: &Operator,
    n: usize,
) -> Option<Duration> {
    let client = cluster.client().await;
    let ns = namespace(cluster, &client, "bench-wipe").await;
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let mut app = postgres(n as i32);
    app["spec"]["template"]["spec"]["containers"] = json!([container()]);
    let app: StatefulApp = serde_json::from_value(app).unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
    wait_converged(&client, &ns, SAPP_PODS, n, n).await;
    let patch = json!({ "spec": { "instances": 0 } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_converged(&client, &ns, SAPP_PODS, 0, n).await;
    let status = apps.get("postgres").await.unwrap().status.unwrap();
    let ids: Vec<String> = status.instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids.len(), n);

    let started = Instant::now();
    let patch = json!({ "metadata": { "annotations": { "statefulapp.io/wipe": ids.join(",") } } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let selector = ListParams::default().labels(&format!("statefulapp.io/namespace={ns}"));
    let deadline = Instant::now() + TIMEOUT;
    let mut elapsed = None;
    while Instant::now() < deadline {
        if volumes.list(&selector).await.unwrap().items.is_empty() {
            elapsed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    clear(&client, &ns).await;
    elapsed
}

/// Deletes what a scenario left and waits until it is gone, so that the
/// next scenario starts on a quiet plane: the API server returns from a
/// claim's deletion at once, and kube-controller-manager then releases
/// hundreds of claims for tens of seconds, work that would otherwise fall
/// into whichever scenario comes next.
pub async fn clear(client: &Client, ns: &str) {
    cleanup(client, ns).await;
    wait_cleared(client, ns).await;
}

/// Deletes what a scenario left (workloads, pods, claims, released volumes).
async fn cleanup(client: &Client, ns: &str) {
    let dp = kube::api::DeleteParams::default().grace_period(0);
    let lp = ListParams::default();
    let _ = Api::<StatefulApp>::namespaced(client.clone(), ns)
        .delete_collection(&dp, &lp)
        .await;
    let _ = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .delete_collection(&dp, &lp)
        .await;
    let _ = Api::<Pod>::namespaced(client.clone(), ns)
        .delete_collection(&dp, &lp)
        .await;
    let _ = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .delete_collection(&dp, &lp)
        .await;
    remove_volumes(client, ns).await;
}

/// Volumes of the bench are held by the agents' finalizer (no wipe): drop
/// it, the data dirs are throwaway here. Concurrently: a footprint run
/// leaves thousands.
async fn remove_volumes(client: &Client, ns: &str) {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    futures::stream::iter(volumes_of(client, ns).await)
        .map(|name| {
            let volumes = volumes.clone();
            async move {
                let patch = json!({ "metadata": { "finalizers": null } });
                let _ = volumes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                let dp = kube::api::DeleteParams::default().grace_period(0);
                let _ = volumes.delete(&name, &dp).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// Names of the volumes bound (or once bound) to claims of `ns`.
async fn volumes_of(client: &Client, ns: &str) -> Vec<String> {
    Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| r.namespace.as_deref())
                == Some(ns)
        })
        .map(|pv| pv.name_any())
        .collect()
}

/// Waits until `ns` has no pod or claim left and no volume is bound to it,
/// removing again what is left: a delete of thousands in one request ends
/// at the API server's 60 s request timeout part done, and the provisioner
/// makes again the volume of a claim still bound.
async fn wait_cleared(client: &Client, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let one = ListParams::default().limit(1);
    let started = Instant::now();
    let mut cleaned = Instant::now();
    loop {
        let pods_left = pods.list(&one).await.map_or(true, |l| !l.items.is_empty());
        let claims_left = claims
            .list(&one)
            .await
            .map_or(true, |l| !l.items.is_empty());
        let volumes_left = !volumes_of(client, ns).await.is_empty();
        if !pods_left && !claims_left && !volumes_left {
            eprintln!(
                "bench: {ns}: cleared in {:.0}s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if started.elapsed() > Duration::from_secs(900) {
            eprintln!("bench: {ns}: not cleared after 15 minutes; going on");
            return;
        }
        if cleaned.elapsed() > Duration::from_secs(10) {
            cleanup(client, ns).await;
            cleaned = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

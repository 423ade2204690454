//! Volumes grow on real nodes: the chart runs with
//! `agent.sizeEnforcement=image` and `agent.imageFilesystem=xfs` (each
//! volume an XFS filesystem of its size, which grows while mounted), and a
//! StatefulApp's volume `size` is raised while one instance runs and one is
//! stopped. The running container sees the larger filesystem without a
//! restart, the stopped instance starts on its grown volume with its data,
//! `kubectl get pvc` shows the new size, and the node's published
//! capacity counts it. A growth the node cannot hold changes nothing.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use statefulapp_operator::api::{InstanceState, StatefulApp};
use statefulapp_operator::capacity::ANNOTATION_RESERVED;
use statefulapp_operator::names::{ANNOTATION_FILESYSTEM_SIZE, LABEL_APP};
use support::TestCluster;
use support::chart::{ChartRelease, RELEASE_NAMESPACE};
use support::fixtures::{
    busybox_app, create_app, in_state, set_instances, wait_for_event, wait_for_status,
};
use support::wait::wait_until;
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(120);
const MI: u64 = 1 << 20;
const NODE: &str = "real-node-1";

async fn release() -> &'static ChartRelease {
    static RELEASE: OnceCell<ChartRelease> = OnceCell::const_new();
    RELEASE
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                ChartRelease::install(
                    TestCluster::shared_real(),
                    &["agent.sizeEnforcement=image", "agent.imageFilesystem=xfs"],
                )
            })
            .await
            .expect("install the chart")
        })
        .await
}

/// An app of the busybox test image on `NODE`, one volume of `size` at
/// `/data`; each container writes its pod's name into `/data/id` once.
fn app(name: &str, instances: i32, size: &str) -> Value {
    let mut app = busybox_app(name, instances, size, Some(NODE));
    app["spec"]["template"]["spec"]["containers"][0]["command"] = json!([
        "sh",
        "-c",
        "[ -f /data/id ] || echo $HOSTNAME > /data/id; trap 'exit 0' TERM; while true; do sleep 1; done"
    ]);
    app
}

async fn set_size(client: &Client, ns: &str, name: &str, size: &str) {
    let patch =
        json!({ "spec": { "volumes": [{ "name": "data", "size": size, "mountPath": "/data" }] } });
    Api::<StatefulApp>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The `CAPACITY` column of `kubectl get pvc` for each claim of `app`.
fn kubectl_get_pvc(release: &ChartRelease, ns: &str, app: &str) -> Vec<String> {
    let out = support::chart::run(release.kubectl().args([
        "get",
        "pvc",
        "-n",
        ns,
        "-l",
        &format!("{LABEL_APP}={app}"),
        "-o",
        "custom-columns=CAPACITY:.status.capacity.storage",
        "--no-headers",
    ]));
    out.lines().map(|l| l.trim().to_string()).collect()
}

/// What the agent of `NODE` publishes as reserved by its volumes.
async fn reserved(client: &Client) -> Option<u64> {
    let api: Api<CSIStorageCapacity> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let object = api
        .get_opt(&format!("statefulapp-local.{NODE}"))
        .await
        .ok()??;
    object.annotations().get(ANNOTATION_RESERVED)?.parse().ok()
}

/// Size of the filesystem at `/data` in the pod, in bytes (`df`).
fn filesystem_size(release: &ChartRelease, ns: &str, pod: &str) -> u64 {
    let (ok, out) = release.exec(ns, pod, "df -k /data | tail -n1");
    assert!(ok, "{out}");
    let kib: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn pod_of(id: &str) -> String {
    id.replacen('.', "-", 1)
}

#[tokio::test]
async fn a_running_and_a_stopped_instance_grow_online_and_keep_their_data() {
    let release = release().await;
    let cluster = TestCluster::shared_real();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "grow").await;
    create_app(&client, &ns, app("grower", 2, "300Mi")).await;
    wait_for_status(&client, &ns, "grower", release, "2 running", |s| {
        s.running == 2
    })
    .await;
    set_instances(&client, &ns, "grower", 1).await;
    let status = wait_for_status(
        &client,
        &ns,
        "grower",
        release,
        "1 running, 1 stopped",
        |s| s.running == 1 && in_state(s, InstanceState::Stopped).len() == 1,
    )
    .await;
    let running = pod_of(&in_state(&status, InstanceState::Running)[0].id);
    let stopped_id = in_state(&status, InstanceState::Stopped)[0].id.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let uid_before = pods.get(&running).await.unwrap().uid();

    // Full at 300Mi.
    let small = filesystem_size(release, &ns, &running);
    let (ok, out) = release.exec(
        &ns,
        &running,
        "dd if=/dev/zero of=/data/fill bs=1M count=400 conv=fsync",
    );
    assert!(!ok && out.contains("No space left on device"), "{out}");
    release.exec(&ns, &running, "rm -f /data/fill");
    let reserved_before = wait_until(WAIT, "the node's reservations published", || async {
        reserved(&client).await
    })
    .await;
    assert_eq!(kubectl_get_pvc(release, &ns, "grower"), ["300Mi", "300Mi"]);

    set_size(&client, &ns, "grower", "700Mi").await;
    wait_until(WAIT, "kubectl get pvc shows 700Mi twice", || async {
        (kubectl_get_pvc(release, &ns, "grower") == ["700Mi", "700Mi"]).then_some(())
    })
    .await;

    // The running container writes past the old size, without a restart.
    let (ok, out) = release.exec(
        &ns,
        &running,
        "dd if=/dev/zero of=/data/fill bs=1M count=400 conv=fsync && cat /data/id",
    );
    assert!(ok, "a write within the new size failed: {out}");
    let large = filesystem_size(release, &ns, &running);
    eprintln!(
        "filesystem of the running instance: {} MiB -> {} MiB",
        small / MI,
        large / MI
    );
    assert!(large >= small + 350 * MI, "{small} -> {large}");
    assert!(large <= 700 * MI);
    assert_eq!(pods.get(&running).await.unwrap().uid(), uid_before);

    // Each volume records what its filesystem spans; the node counts both.
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    for claim in claims
        .list(&ListParams::default().labels(&format!("{LABEL_APP}=grower")))
        .await
        .unwrap()
    {
        let pv = volumes
            .get(claim.spec.unwrap().volume_name.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(
            pv.annotations()
                .get(ANNOTATION_FILESYSTEM_SIZE)
                .map(String::as_str),
            Some("734003200"),
            "{}",
            pv.name_any()
        );
    }
    let reserved_after = wait_until(WAIT, "the node counts the grown volumes", || async {
        reserved(&client)
            .await
            .filter(|r| *r >= reserved_before + 800 * MI)
    })
    .await;
    eprintln!(
        "reserved on {NODE}: {} MiB -> {} MiB",
        reserved_before / MI,
        reserved_after / MI
    );

    // The stopped instance starts on its grown volume, its data there.
    set_instances(&client, &ns, "grower", 2).await;
    wait_for_status(&client, &ns, "grower", release, "2 running", |s| {
        s.running == 2
    })
    .await;
    let restarted = pod_of(&stopped_id);
    let (ok, out) = release.exec(&ns, &restarted, "cat /data/id");
    assert!(ok && out.trim() == restarted, "{out}");
    assert!(filesystem_size(release, &ns, &restarted) >= small + 350 * MI);
}

#[tokio::test]
async fn a_growth_the_node_cannot_hold_changes_nothing() {
    let release = release().await;
    let cluster = TestCluster::shared_real();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "nogrow").await;
    create_app(&client, &ns, app("greedy", 1, "300Mi")).await;
    let status = wait_for_status(&client, &ns, "greedy", release, "running", |s| {
        s.running == 1
    })
    .await;
    let pod = pod_of(&status.instances[0].id);
    set_size(&client, &ns, "greedy", "100Ti").await;
    let event = wait_for_event(&client, &ns, "NotEnoughDiskSpace", Some("Warning"), WAIT).await;
    let note = event.note.unwrap_or_default();
    eprintln!("{note}");
    assert!(
        note.contains("cannot grow") && note.contains(NODE),
        "{note}"
    );
    // Nothing changed: the volume, the claim's capacity, the instance.
    let volume = status.instances[0].volumes[0]
        .persistent_volume
        .clone()
        .unwrap();
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .unwrap();
    assert_eq!(
        pv.spec.unwrap().capacity.unwrap()["storage"].0,
        "300Mi",
        "the volume was not grown"
    );
    assert_eq!(kubectl_get_pvc(release, &ns, "greedy"), ["300Mi"]);
    let (ok, out) = release.exec(&ns, &pod, "echo still > /data/still && cat /data/still");
    assert!(ok && out.trim() == "still", "{out}");
}

//! On real nodes (kubelet + containerd on this machine, see
//! `support::real_node`): containers really run, the kubelet really mounts
//! each local volume, and the operator runs as the chart's pods from the
//! image built here. Data is written by the containers and checked both
//! from inside them and on the node's disk.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use statefulapp_operator::api::{InstanceState, InstanceStatus, StatefulApp, StatefulAppStatus};
use support::TestCluster;
use support::chart::{ChartRelease, RELEASE_NAMESPACE};
use support::fixtures::{create_app, in_state, journal, set_instances, wait_for_status};
use support::wait::wait_until;
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(120);

/// The chart, installed once for this binary's tests.
async fn release() -> &'static ChartRelease {
    static RELEASE: OnceCell<ChartRelease> = OnceCell::const_new();
    RELEASE
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let release = ChartRelease::install(TestCluster::shared_real(), &[]);
                eprintln!(
                    "real nodes: helm install --wait took {:.1}s",
                    release.install_time.as_secs_f64()
                );
                release
            })
            .await
            .expect("install the chart")
        })
        .await
}

fn testapp() -> &'static str {
    let images = TestCluster::shared_real().images.as_ref().unwrap();
    &images.testapp.reference
}

/// Runs kubectl; returns (success, stdout, stderr).
fn kubectl(cluster: &TestCluster, args: &[&str]) -> (bool, String, String) {
    let output = cluster.kubectl().args(args).output().expect("run kubectl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn pod_of(instance: &InstanceStatus) -> String {
    let (app, uuid) = instance.id.split_once('.').expect("instance id");
    format!("{app}-{uuid}")
}

/// The journal as the instance's container reads it (`kubectl exec`).
fn journal_inside(cluster: &TestCluster, ns: &str, instance: &InstanceStatus) -> String {
    let pod = pod_of(instance);
    let (ok, out, err) = kubectl(
        cluster,
        &["exec", "-n", ns, &pod, "--", "cat", "/data/journal"],
    );
    assert!(ok, "kubectl exec {pod}: {err}");
    out
}

/// The journal on the instance's node's disk, if there.
fn journal_on_disk(cluster: &TestCluster, ns: &str, instance: &InstanceStatus) -> Option<String> {
    std::fs::read_to_string(data_dir(cluster, ns, instance).join("journal")).ok()
}

fn data_dir(cluster: &TestCluster, ns: &str, instance: &InstanceStatus) -> std::path::PathBuf {
    let node = instance.node.as_deref().expect("placed");
    let node = cluster
        .real_nodes
        .iter()
        .find(|n| n.name == node)
        .unwrap_or_else(|| panic!("{node} is not a real node"));
    node.disk()
        .join(ns)
        .join(&instance.volumes[0].persistence_id)
}

fn entries(journal: &str) -> Vec<&str> {
    journal.lines().collect()
}

fn running<'a>(status: &'a StatefulAppStatus, id: &str) -> &'a InstanceStatus {
    status
        .instances
        .iter()
        .find(|i| i.id == id && i.state == InstanceState::Running)
        .unwrap_or_else(|| panic!("{id} not running in {status:#?}"))
}

/// Waits until the instance's container has written its start (the pod is
/// Ready once the script runs; the line may land a moment later) and the
/// journal has `lines` lines; returns it as read inside the container.
async fn journal_with(
    cluster: &TestCluster,
    ns: &str,
    instance: &InstanceStatus,
    lines: usize,
) -> String {
    let what = format!("{} to have journalled {lines} starts", instance.id);
    wait_until(WAIT, &what, || async {
        let journal = journal_on_disk(cluster, ns, instance)?;
        (entries(&journal).len() == lines).then_some(())
    })
    .await;
    let inside = journal_inside(cluster, ns, instance);
    assert_eq!(
        Some(&inside),
        journal_on_disk(cluster, ns, instance).as_ref(),
        "the container and the node's disk see the same file"
    );
    inside
}

#[tokio::test]
async fn a_pod_on_a_real_node_reaches_the_api_server_and_nothing_off_this_machine() {
    let cluster = TestCluster::shared_real();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "net").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "probe" },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "probe",
                "image": testapp(),
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
            }],
        },
    }))
    .unwrap();
    let started = Instant::now();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until(WAIT, "probe pod Ready", || async {
        let pod = pods.get("probe").await.ok()?;
        let ready = pod
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
    eprintln!(
        "real nodes: pod start latency (create to Ready) {:.2}s",
        started.elapsed().as_secs_f64()
    );

    // An address off this machine (TEST-NET-3): the node has no route to it,
    // so the attempt fails at once inside the node, before any interface.
    let attempt = Instant::now();
    let (ok, _, err) = kubectl(
        cluster,
        &[
            "exec",
            "-n",
            &ns,
            "probe",
            "--",
            "nc",
            "-w",
            "5",
            "203.0.113.7",
            "80",
        ],
    );
    assert!(!ok, "a pod reached an address off this machine");
    assert!(
        attempt.elapsed() < Duration::from_secs(4),
        "the attempt should fail at once, not time out: {err}"
    );
    assert!(err.contains("Network is unreachable"), "{err}");

    // The API server, through the `kubernetes` Service IP pods are given.
    let (ok, _, err) = kubectl(
        cluster,
        &[
            "exec",
            "-n",
            &ns,
            "probe",
            "--",
            "sh",
            "-c",
            "nc -w 3 \"$KUBERNETES_SERVICE_HOST\" \"$KUBERNETES_SERVICE_PORT\" </dev/null",
        ],
    );
    assert!(ok, "the API server is reachable from a pod: {err}");
}

#[tokio::test]
async fn the_chart_runs_the_controller_and_agents_as_locked_down_pods() {
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let list = |component: &'static str| {
        let pods = pods.clone();
        async move {
            let selector = format!("app.kubernetes.io/component={component}");
            pods.list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
        }
    };
    let controllers = list("controller").await;
    assert_eq!(controllers.len(), 2, "{}", release.describe_pods());
    let agents = list("agent").await;
    let mut agent_nodes: Vec<String> = agents
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    agent_nodes.sort();
    let real: Vec<String> = cluster.real_nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(agent_nodes, real, "one agent per real node");

    // One controller leads, through the Lease.
    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let holder = wait_until(WAIT, "a controller holds the lease", || async {
        let leases = leases.list(&ListParams::default()).await.ok()?;
        leases
            .items
            .iter()
            .find_map(|l| l.spec.as_ref()?.holder_identity.clone())
    })
    .await;
    assert!(
        controllers
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(holder.as_str())),
        "lease held by {holder}"
    );

    // The processes run as the chart says, as the kernel sees them.
    let controller = process_status("statefulapp-operator controller");
    assert_eq!(field(&controller, "Uid"), "65532\t65532\t65532\t65532");
    assert_eq!(field(&controller, "CapEff"), "0000000000000000");
    assert_eq!(field(&controller, "NoNewPrivs"), "1");
    let agent = process_status("statefulapp-operator agent");
    assert_eq!(field(&agent, "Uid"), "0\t0\t0\t0");
    // DAC_OVERRIDE (1) and FOWNER (3) only.
    assert_eq!(field(&agent, "CapEff"), "000000000000000a");
    assert_eq!(field(&agent, "NoNewPrivs"), "1");
}

/// `/proc/<pid>/status` of the first process whose command line starts with `cmdline`.
fn process_status(cmdline: &str) -> String {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args[0].rsplit('/').next().unwrap_or_default().to_string();
        let line = std::iter::once(program)
            .chain(args[1..].iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        if line.starts_with(cmdline)
            && let Ok(status) = std::fs::read_to_string(entry.path().join("status"))
        {
            return status;
        }
    }
    panic!("no process {cmdline}");
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[tokio::test]
async fn the_tutorial_keeps_what_the_container_wrote() {
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "journal").await;
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let image = testapp();
    let settle = |what: &'static str, accept: fn(&StatefulAppStatus) -> bool| {
        let (client, ns) = (client.clone(), ns.clone());
        async move { wait_for_status(&client, &ns, "journal", release, what, accept).await }
    };

    // app add: the container starts and journals its first start.
    create_app(&client, &ns, journal(image, 1, "v1")).await;
    let status = settle("one ready", |s| s.running == 1 && s.ready == 1).await;
    let first = in_state(&status, InstanceState::Running)[0].clone();
    let lines = journal_with(cluster, &ns, &first, 1).await;
    assert!(lines.contains(&pod_of(&first)), "{lines}");
    let (ok, logs, _) = kubectl(cluster, &["logs", "-n", &ns, &pod_of(&first)]);
    assert!(ok && logs.contains("journal of this volume:"), "{logs}");

    // app stop, app start: same instance, same node, the journal kept.
    set_instances(&client, &ns, "journal", 0).await;
    settle("stopped", |s| s.running == 0 && s.stopped == 1).await;
    assert_eq!(
        entries(&journal_on_disk(cluster, &ns, &first).unwrap()).len(),
        1
    );
    set_instances(&client, &ns, "journal", 1).await;
    let status = settle("restarted", |s| s.running == 1 && s.ready == 1).await;
    assert_eq!(running(&status, &first.id).node, first.node);
    journal_with(cluster, &ns, &first, 2).await;

    // Scale up: a second instance with a fresh volume.
    set_instances(&client, &ns, "journal", 2).await;
    let status = settle("two ready", |s| s.running == 2 && s.ready == 2).await;
    let second = status
        .instances
        .iter()
        .find(|i| i.id != first.id)
        .unwrap()
        .clone();
    journal_with(cluster, &ns, &second, 1).await;

    // Scale down and up again: the stopped instance is reused, with its data.
    set_instances(&client, &ns, "journal", 1).await;
    settle("one stopped", |s| s.running == 1 && s.stopped == 1).await;
    set_instances(&client, &ns, "journal", 2).await;
    let status = settle("two ready again", |s| s.running == 2 && s.ready == 2).await;
    assert_eq!(running(&status, &second.id).node, second.node);
    journal_with(cluster, &ns, &second, 2).await;
    journal_with(cluster, &ns, &first, 2).await;

    // A template change: each instance restarts in place on v2, data kept.
    let v2 = journal(image, 2, "v2");
    let upgrade = json!({ "spec": { "template": v2["spec"]["template"] } });
    apps.patch("journal", &PatchParams::default(), &Patch::Merge(&upgrade))
        .await
        .unwrap();
    for instance in [&first, &second] {
        let journal = journal_with(cluster, &ns, instance, 3).await;
        assert!(entries(&journal)[2].ends_with(" v2"), "{journal}");
    }
    let status = settle("upgraded", |s| s.running == 2 && s.ready == 2).await;
    assert_eq!(running(&status, &first.id).node, first.node);
    assert_eq!(running(&status, &second.id).node, second.node);

    // Wipe the second (stopped first): its data goes from the node's disk,
    // and the instance that replaces it starts with an empty volume.
    set_instances(&client, &ns, "journal", 1).await;
    settle("second stopped", |s| s.running == 1 && s.stopped == 1).await;
    let second_dir = data_dir(cluster, &ns, &second);
    let wipe = json!({ "metadata": { "annotations": { "statefulapp.io/wipe": second.id } } });
    apps.patch("journal", &PatchParams::default(), &Patch::Merge(&wipe))
        .await
        .unwrap();
    settle("second wiped", |s| s.instances.len() == 1).await;
    wait_until(WAIT, "wiped data gone from the node", || async {
        (!second_dir.exists()).then_some(())
    })
    .await;
    set_instances(&client, &ns, "journal", 2).await;
    let status = settle("fresh second", |s| s.running == 2 && s.ready == 2).await;
    let fresh = status
        .instances
        .iter()
        .find(|i| i.id != first.id)
        .unwrap()
        .clone();
    assert_ne!(fresh.id, second.id);
    journal_with(cluster, &ns, &fresh, 1).await;

    // app remove and add again: the kept instances come back with their data.
    apps.delete("journal", &DeleteParams::default())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_until(WAIT, "app and pods gone", || async {
        let gone = apps.get_opt("journal").await.ok()?.is_none()
            && pods
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty();
        gone.then_some(())
    })
    .await;
    assert_eq!(
        entries(&journal_on_disk(cluster, &ns, &first).unwrap()).len(),
        3
    );
    create_app(&client, &ns, journal(image, 2, "v2")).await;
    let status = settle("adopted", |s| s.running == 2 && s.ready == 2).await;
    assert_eq!(running(&status, &first.id).node, first.node);
    assert_eq!(running(&status, &fresh.id).node, fresh.node);
    journal_with(cluster, &ns, &first, 4).await;
    journal_with(cluster, &ns, &fresh, 2).await;
}

#[tokio::test]
async fn a_non_root_container_writes_to_its_volume() {
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "nonroot").await;
    let mut app = journal(testapp(), 1, "v1");
    app["spec"]["template"]["spec"]["securityContext"] =
        json!({ "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000, "runAsNonRoot": true });
    create_app(&client, &ns, app).await;
    let status = wait_for_status(&client, &ns, "journal", release, "ready", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;
    let instance = in_state(&status, InstanceState::Running)[0].clone();
    journal_with(cluster, &ns, &instance, 1).await;
    let file = data_dir(cluster, &ns, &instance).join("journal");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 2000),
        "written by uid 1000 with fsGroup 2000"
    );
}

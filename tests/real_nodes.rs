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
use statefulapp_operator::api::{
    InstanceState, InstanceStatus, ReservationState, StatefulApp, StatefulAppStatus,
};
use support::TestCluster;
use support::chart::{ChartRelease, RELEASE_NAMESPACE};
use support::fixtures::{
    create_app, in_state, journal, set_instances, wait_for_event, wait_for_status,
};
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
    cluster.data_dir_on_node(ns, instance)
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

/// `/proc/<pid>/status` of the first process of this binary's real nodes
/// whose command line starts with `cmdline`.
fn process_status(cmdline: &str) -> String {
    let ours = format!("/statefulapp-{}/", std::process::id());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let in_our_nodes = std::fs::read_to_string(entry.path().join("cgroup"))
            .is_ok_and(|cgroups| cgroups.contains(&ours));
        if !in_our_nodes {
            continue;
        }
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
    let kept = journal_on_disk(cluster, &ns, &first).unwrap();
    assert_eq!(entries(&kept).len(), 3, "journal of {}:\n{kept}", first.id);
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

#[tokio::test]
async fn a_namespace_made_again_never_gets_the_old_tenants_data() {
    use k8s_openapi::api::core::v1::Namespace;
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "tenant").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let old_uid = namespaces.get(&ns).await.unwrap().metadata.uid.unwrap();
    create_app(&client, &ns, journal(testapp(), 1, "v1")).await;
    let status = wait_for_status(&client, &ns, "journal", release, "ready", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;
    let old = in_state(&status, InstanceState::Running)[0].clone();
    journal_with(cluster, &ns, &old, 1).await;
    let old_dir = data_dir(cluster, &ns, &old);

    // The tenant goes, namespace and all; another comes with the same name.
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    wait_until(WAIT, "namespace gone", || async {
        namespaces.get_opt(&ns).await.ok()?.is_none().then_some(())
    })
    .await;
    cluster.create_namespace(&client, &ns).await;
    create_app(&client, &ns, journal(testapp(), 1, "v1")).await;
    let status = wait_for_status(&client, &ns, "journal", release, "fresh instance", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;
    let fresh = in_state(&status, InstanceState::Running)[0].clone();
    assert_ne!(fresh.id, old.id, "the old tenant's instance is not adopted");
    let journal = journal_with(cluster, &ns, &fresh, 1).await;
    assert!(journal.contains(&pod_of(&fresh)), "{journal}");
    assert!(
        old_dir.join("journal").exists(),
        "the old data is kept (I1)"
    );
    let foreign = wait_for_event(&client, &ns, "ForeignVolumes", Some("Warning"), WAIT).await;
    let note = foreign.note.unwrap_or_default();
    assert!(note.contains(&old_uid), "{note}");

    // Adopting them is an explicit act: the annotation naming the old uid.
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let adopt = json!({
        "metadata": { "annotations": { "statefulapp.io/adopt-namespace-uid": old_uid } },
        "spec": { "instances": 2 },
    });
    apps.patch("journal", &PatchParams::default(), &Patch::Merge(&adopt))
        .await
        .unwrap();
    let status = wait_for_status(&client, &ns, "journal", release, "adopted", |s| {
        s.running == 2 && s.ready == 2
    })
    .await;
    let adopted = running(&status, &old.id);
    assert_eq!(adopted.node, old.node);
    journal_with(cluster, &ns, &old, 2).await;
    // Adopted for good: the volume now records this namespace.
    let new_uid = namespaces.get(&ns).await.unwrap().metadata.uid.unwrap();
    let pv_name = adopted.volumes[0].persistent_volume.clone().unwrap();
    let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    wait_until(WAIT, "the adopted volume restamped", || async {
        let pv = volumes.get(&pv_name).await.ok()?;
        let made_in = pv
            .metadata
            .annotations?
            .get("statefulapp.io/namespace-uid")
            .cloned();
        (made_in.as_deref() == Some(new_uid.as_str())).then_some(())
    })
    .await;
    wait_for_event(&client, &ns, "AdoptingVolumes", Some("Normal"), WAIT).await;
}

/// A client acting as the node agent of `node`: the agent's ServiceAccount
/// token bound to its pod there, as the kubelet gives it to the pod.
async fn agent_client(cluster: &TestCluster, node: &str) -> kube::Client {
    let client = cluster.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let agents = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=agent"))
        .await
        .unwrap();
    let pod = agents
        .items
        .iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .expect("an agent pod on the node");
    let (ok, token, err) = kubectl(
        cluster,
        &[
            "create",
            "token",
            "statefulapp-operator-agent",
            "-n",
            RELEASE_NAMESPACE,
            "--bound-object-kind=Pod",
            &format!(
                "--bound-object-name={}",
                pod.metadata.name.as_deref().unwrap()
            ),
        ],
    );
    assert!(ok, "{err}");
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.trim().to_string().into()),
            ..Default::default()
        });
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_node_agent_can_change_only_its_own_nodes_volumes_and_only_its_marks() {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let cluster = TestCluster::shared_real();
    release().await;
    let admin: Api<PersistentVolume> = Api::all(cluster.client().await);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let volume = |name: &str, node: &str, driver: &str| -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("{name}-{suffix}"),
                "labels": { "statefulapp.io/node": node },
                "annotations": { "pv.kubernetes.io/provisioned-by": driver },
            },
            "spec": {
                "capacity": { "storage": "1Mi" },
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "scope-test",
                "hostPath": { "path": "/nonexistent" },
            },
        }))
        .unwrap()
    };
    let own = volume("own", "real-node-0", "statefulapp.io/local");
    let other_node = volume("other-node", "real-node-1", "statefulapp.io/local");
    let other_driver = volume("other-driver", "real-node-0", "example.com/other");
    for pv in [&own, &other_node, &other_driver] {
        admin.create(&PostParams::default(), pv).await.unwrap();
    }
    let agent: Api<PersistentVolume> = Api::all(agent_client(cluster, "real-node-0").await);
    let patch = |name: String, body: serde_json::Value| {
        let agent = agent.clone();
        async move {
            agent
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map(|_| ())
        }
    };
    let add_finalizer = json!({ "metadata": {
        "finalizers": ["kubernetes.io/pv-protection", "statefulapp.io/node-agent"],
    }});
    let denied = |result: Result<(), kube::Error>, why: &str| match result {
        Err(kube::Error::Api(e)) => assert!(e.message.contains(why), "{}", e.message),
        other => panic!("expected a denial ({why}), got {other:?}"),
    };

    denied(
        patch(
            other_node.metadata.name.clone().unwrap(),
            add_finalizer.clone(),
        )
        .await,
        "only the volumes of its own node",
    );
    denied(
        patch(
            other_driver.metadata.name.clone().unwrap(),
            add_finalizer.clone(),
        )
        .await,
        "only the volumes its provisioner made",
    );
    let own_name = own.metadata.name.clone().unwrap();
    denied(
        patch(
            own_name.clone(),
            json!({ "spec": { "claimRef": { "namespace": "victim", "name": "data" } } }),
        )
        .await,
        "spec",
    );
    denied(
        patch(
            own_name.clone(),
            json!({ "metadata": { "annotations": { "pv.kubernetes.io/provisioned-by": "x" } } }),
        )
        .await,
        "only its own annotations",
    );
    // What the agent does do, on its own node's volume, is allowed.
    patch(own_name.clone(), add_finalizer.clone())
        .await
        .unwrap();
    patch(
        own_name.clone(),
        json!({ "metadata": { "annotations": { "statefulapp.io/directory-made": "real-node-0" } } }),
    )
    .await
    .unwrap();
    denied(
        patch(
            own_name.clone(),
            json!({ "metadata": { "finalizers": [] } }),
        )
        .await,
        "only its own finalizer",
    );
    for pv in [&own, &other_node, &other_driver] {
        let name = pv.metadata.name.clone().unwrap();
        admin
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
            )
            .await
            .unwrap();
        admin.delete(&name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_lookalike_pod_with_the_apps_labels_is_left_alone() {
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "lookalike").await;
    create_app(&client, &ns, journal(testapp(), 1, "v1")).await;
    let status = wait_for_status(&client, &ns, "journal", release, "ready", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;
    let instance = in_state(&status, InstanceState::Running)[0].clone();
    let uuid = instance.id.split_once('.').unwrap().1.to_string();
    // Made by hand, with the app's and the instance's labels, owned by no app.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let lookalike: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "lookalike",
            "labels": { "statefulapp.io/app": "journal", "statefulapp.io/instance": uuid },
        },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c", "image": testapp(), "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &lookalike)
        .await
        .unwrap();
    let reported = wait_for_event(&client, &ns, "LookalikePods", Some("Warning"), WAIT).await;
    let note = reported.note.unwrap_or_default();
    assert!(note.contains("lookalike"), "{note}");
    // Stopping the app stops its own pod, not the look-alike.
    set_instances(&client, &ns, "journal", 0).await;
    wait_for_status(&client, &ns, "journal", release, "stopped", |s| {
        s.running == 0 && s.stopped == 1
    })
    .await;
    wait_until(WAIT, "the app's own pod gone", || async {
        pods.get_opt(&pod_of(&instance))
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let still = pods.get("lookalike").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_none(), "left alone");
}

/// A pod of another workload, bound to `node` by name (as DaemonSets and
/// static pods are: no scheduler checks it), asking for a whole CPU.
fn cpu_hungry_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{ "name": "c", "image": testapp(), "imagePullPolicy": "Never",
                             "command": ["sleep", "3600"],
                             "resources": { "requests": { "cpu": "1" } } }],
        },
    }))
    .unwrap()
}

async fn cordon(client: &kube::Client, node: &str, unschedulable: bool) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let patch = json!({ "spec": { "unschedulable": unschedulable } });
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("cordon");
}

#[tokio::test]
async fn a_stopped_instance_keeps_its_cpu_on_its_real_node() {
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "reserve").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let settle = |what: &'static str, accept: fn(&StatefulAppStatus) -> bool| {
        let (client, ns) = (client.clone(), ns.clone());
        async move { wait_for_status(&client, &ns, "journal", release, what, accept).await }
    };
    let mut app = journal(testapp(), 1, "v1");
    // Three quarters of the node's 2 CPUs.
    app["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({ "requests": { "cpu": "1500m", "memory": "16Mi" } });
    create_app(&client, &ns, app).await;
    let status = settle("one ready", |s| s.running == 1 && s.ready == 1).await;
    let instance = status.instances[0].clone();
    let node = instance.node.clone().unwrap();
    journal_with(cluster, &ns, &instance, 1).await;

    set_instances(&client, &ns, "journal", 0).await;
    let held = |s: &StatefulAppStatus| {
        s.stopped == 1
            && s.instances[0]
                .reservation
                .as_ref()
                .is_some_and(|r| r.state == ReservationState::Held)
    };
    let status = settle("stopped, its CPU held", held).await;
    let reservation = status.instances[0].reservation.clone().unwrap().pod;

    // Even a pod bound to the node by name does not get the CPU: the
    // kubelet refuses it.
    pods.create(
        &PostParams::default(),
        &cpu_hungry_pod("bound-by-name", &node),
    )
    .await
    .unwrap();
    let refused = wait_until(WAIT, "the kubelet refuses it", || {
        let pods = pods.clone();
        async move {
            let status = pods.get("bound-by-name").await.ok()?.status?;
            (status.phase.as_deref() == Some("Failed")).then_some(status.reason?)
        }
    })
    .await;
    assert_eq!(refused, "OutOfcpu");

    // Capacity lost in a gap is won back: with the node cordoned, the
    // reservation is deleted and cannot come back, and a pod takes the CPU;
    // once the node takes pods again, the reservation preempts it.
    cordon(&client, &node, true).await;
    pods.delete(&reservation, &DeleteParams::default())
        .await
        .unwrap();
    settle("reservation pending", |s| {
        s.instances[0]
            .reservation
            .as_ref()
            .is_some_and(|r| r.state == ReservationState::Pending)
    })
    .await;
    pods.create(
        &PostParams::default(),
        &cpu_hungry_pod("took-the-gap", &node),
    )
    .await
    .unwrap();
    wait_until(WAIT, "the gap taken", || {
        let pods = pods.clone();
        async move {
            let status = pods.get("took-the-gap").await.ok()?.status?;
            (status.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await;
    cordon(&client, &node, false).await;
    settle("held again", held).await;
    let preempted = wait_for_event(&client, &ns, "Preempted", None, WAIT).await;
    assert_eq!(
        preempted.regarding.and_then(|r| r.name).as_deref(),
        Some("took-the-gap"),
        "{:?}",
        preempted.note
    );

    // The restart takes the CPU over on its node, with its data.
    set_instances(&client, &ns, "journal", 1).await;
    let status = settle("restarted", |s| {
        s.running == 1 && s.ready == 1 && s.instances[0].reservation.is_none()
    })
    .await;
    assert_eq!(status.instances[0].id, instance.id);
    assert_eq!(status.instances[0].node.as_deref(), Some(node.as_str()));
    journal_with(cluster, &ns, &status.instances[0], 2).await;
}

#[tokio::test]
async fn a_wipe_waits_until_the_container_has_stopped_writing() {
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "wipewait").await;
    let mut app = journal(testapp(), 1, "v1");
    let pod = &mut app["spec"]["template"]["spec"];
    pod["terminationGracePeriodSeconds"] = json!(30);
    // On TERM, the container goes on writing into its volume for 6 s.
    pod["containers"][0]["command"] = json!([
        "sh",
        "-c",
        "trap 'for i in 1 2 3 4 5 6; do echo $i >> /data/last-words; sleep 1; done; exit 0' TERM; \
         while true; do sleep 1; done"
    ]);
    create_app(&client, &ns, app).await;
    let status = wait_for_status(&client, &ns, "journal", release, "running", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;
    let instance = status.instances[0].clone();
    let dir = cluster.data_dir_on_node(&ns, &instance);
    assert!(dir.is_dir());

    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let patch = json!({ "metadata": { "annotations": { "statefulapp.io/wipe": instance.id } } });
    apps.patch("journal", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // Watch the directory until the wipe removes it: the container's last
    // words must all be there before it goes.
    let mut last_seen = String::new();
    let deadline = Instant::now() + WAIT;
    while dir.exists() {
        if let Ok(words) = std::fs::read_to_string(dir.join("last-words")) {
            last_seen = words;
        }
        assert!(Instant::now() < deadline, "the wipe never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last_seen.lines().count(),
        6,
        "the data was destroyed while the container was still writing: {last_seen:?}"
    );
}

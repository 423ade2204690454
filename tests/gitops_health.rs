//! What GitOps tools make of a StatefulApp, computed by their own code on the
//! live objects the operator writes: kstatus (`sigs.k8s.io/cli-utils`, what
//! Flux waits on, built as `testcluster/kstatus`) and the Argo CD health
//! check `resource_customizations/statefulapp.io/StatefulApp/health.lua`, run
//! by gopher-lua the way Argo CD runs it (`testcluster/argocd-health`).
//!
//! The health check's `testdata/` are objects this test captured from the
//! operator; it checks that they still have the shape the operator writes.
//! `STATEFULAPP_WRITE_HEALTH_TESTDATA=1` writes them again.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use statefulapp_operator::api::StatefulApp;
use support::TestCluster;
use support::cluster::{NODE_MONITOR_GRACE, tools_dir};
use support::fixtures::postgres;
use support::operator::Operator;

const HEALTH_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/resource_customizations/statefulapp.io/StatefulApp"
);
const WRITE_TESTDATA: &str = "STATEFULAPP_WRITE_HEALTH_TESTDATA";
const WAIT: Duration = Duration::from_secs(60);

/// A tool's verdict on an object.
#[derive(Debug, Deserialize)]
struct Verdict {
    status: String,
    message: String,
}

/// A command `testcluster/build.sh` builds.
fn tool(name: &str) -> PathBuf {
    let path = tools_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run testcluster/build.sh (STATEFULAPP_TESTCLUSTER_BIN may name a bin dir built before it)",
        path.display()
    );
    path
}

/// Runs `program args` with `input` on stdin; its stdout as a verdict.
fn verdict(program: &str, args: &[&str], input: &Value) -> Verdict {
    let mut child = Command::new(tool(program))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(input).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{program} printed {e}: {:?}", output.stdout))
}

/// kstatus' `status.Compute`, as Flux's health checks call it.
fn kstatus(object: &Value) -> Verdict {
    verdict("kstatus", &[], object)
}

/// The Argo CD health check.
fn argocd(object: &Value) -> Verdict {
    let script = format!("{HEALTH_DIR}/health.lua");
    verdict("argocd-health", &["eval", &script], object)
}

#[test]
fn argocd_health_check_passes_its_own_tests() {
    let output = Command::new(tool("argocd-health"))
        .args(["test", HEALTH_DIR])
        .output()
        .expect("run argocd-health");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every captured object is a case, and every case is a captured object.
    let tests: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{HEALTH_DIR}/health_test.yaml")).unwrap(),
    )
    .unwrap();
    let cases: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["inputPath"].as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(format!("{HEALTH_DIR}/testdata"))
        .unwrap()
        .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(cases, files);
    eprintln!("{stdout}");
}

/// The README's `argocd-cm` snippet is the committed script.
#[test]
fn readme_shows_the_committed_health_check() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let key = "resource.customizations.health.statefulapp.io_StatefulApp: |";
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(key));
    let indent = lines
        .next()
        .expect("the argocd-cm snippet")
        .find(key)
        .unwrap()
        + 2;
    let shown: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.len() > indent && l[..indent].trim().is_empty())
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect();
    let script = std::fs::read_to_string(format!("{HEALTH_DIR}/health.lua")).unwrap();
    assert_eq!(
        shown.join("\n").trim_end(),
        script.trim_end(),
        "README.md's argocd-cm snippet differs from health.lua"
    );
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<(&'a str, &'a str)> {
    let found = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    Some((found["status"].as_str()?, found["reason"].as_str()?))
}

fn generation_observed(object: &Value) -> bool {
    object["status"]["observedGeneration"] == object["metadata"]["generation"]
}

/// Every asked instance runs and is ready, `stopped` more are kept, and the
/// operator has nothing left to do.
fn converged(running: i64, stopped: i64) -> impl Fn(&Value) -> bool {
    move |object| {
        let status = &object["status"];
        generation_observed(object)
            && status["running"] == running
            && status["ready"] == running
            && status["stopped"] == stopped
            && status["instances"].as_array().map(Vec::len) == Some((running + stopped) as usize)
            && condition(object, "Reconciling").is_some_and(|(s, _)| s == "False")
            && condition(object, "Stalled").is_some_and(|(s, _)| s == "False")
    }
}

/// The fields of an object that the health checks read, without names,
/// times and ids: two objects of the same step have the same shape.
fn shape(object: &Value) -> Value {
    let status = &object["status"];
    let conditions: Vec<Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!([c["type"], c["status"], c["reason"]]))
        .collect();
    let states: Vec<&Value> = status["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| &i["state"])
        .collect();
    let fields: BTreeSet<&String> = status
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "instances": object["spec"]["instances"],
        "generationObserved": generation_observed(object),
        "statusFields": fields,
        "counts": [status["running"], status["ready"], status["stopped"]],
        "conditions": conditions,
        "instanceStates": states,
    })
}

/// The object as committed: the operator's output without the fields that
/// only say where and when it was captured.
fn testdata(object: &Value) -> Value {
    let mut object = object.clone();
    let metadata = object["metadata"].as_object_mut().unwrap();
    for field in ["managedFields", "uid", "resourceVersion"] {
        metadata.remove(field);
    }
    metadata.insert("namespace".into(), json!("default"));
    object
}

/// Checks what kstatus and Argo CD say of a captured object, and that the
/// committed testdata of this step (if it has one) still has its shape and
/// health; or writes it with `STATEFULAPP_WRITE_HEALTH_TESTDATA=1`.
fn check(step: &str, object: &Value, flux: &str, argo: &str, testdata_file: Option<&str>) {
    let (k, a) = (kstatus(object), argocd(object));
    eprintln!(
        "{step}: kstatus {} ({}); Argo CD {} ({})",
        k.status, k.message, a.status, a.message
    );
    assert_eq!(
        (k.status.as_str(), a.status.as_str()),
        (flux, argo),
        "{step}: kstatus says {k:?}, Argo CD {a:?}, of\n{}",
        serde_json::to_string_pretty(object).unwrap()
    );
    let Some(file) = testdata_file else {
        return;
    };
    let path = PathBuf::from(HEALTH_DIR).join("testdata").join(file);
    if std::env::var(WRITE_TESTDATA).as_deref() == Ok("1") {
        std::fs::write(&path, serde_yaml::to_string(&testdata(object)).unwrap()).unwrap();
        return;
    }
    let committed: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    assert_eq!(
        shape(&committed),
        shape(object),
        "{step}: {} no longer has the shape the operator writes; \
         run this test with {WRITE_TESTDATA}=1 and review health_test.yaml",
        path.display()
    );
    assert_eq!(argocd(&committed).status, argo, "{}", path.display());
    assert_eq!(kstatus(&committed).status, flux, "{}", path.display());
}

struct Scenario {
    apps: Api<DynamicObject>,
    operator: &'static Operator,
}

impl Scenario {
    async fn get(&self, name: &str) -> Value {
        serde_json::to_value(self.apps.get(name).await.expect("get app")).unwrap()
    }

    async fn patch(&self, name: &str, patch: Value) -> Value {
        let patched = self
            .apps
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch app");
        serde_json::to_value(patched).unwrap()
    }

    /// Polls the app until `done` accepts it and returns it. With `during`,
    /// every other version of the app seen on the way must get these
    /// verdicts from kstatus and Argo CD (never a premature Current).
    async fn settle(
        &self,
        name: &str,
        what: &str,
        during: Option<(&str, &str)>,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut seen = BTreeSet::new();
        loop {
            let object = self.get(name).await;
            if done(&object) {
                if let Some((flux, argo)) = during {
                    eprintln!(
                        "{what}: {} versions on the way, each {flux} for kstatus and {argo} for Argo CD",
                        seen.len()
                    );
                }
                return object;
            }
            let version = object["metadata"]["resourceVersion"].to_string();
            if let Some((flux, argo)) = during
                && seen.insert(version)
            {
                let (k, a) = (kstatus(&object), argocd(&object));
                assert_eq!(
                    (k.status.as_str(), a.status.as_str()),
                    (flux, argo),
                    "on the way to {what}: kstatus says {k:?}, Argo CD {a:?}, of\n{}",
                    serde_json::to_string_pretty(&object).unwrap()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last object:\n{}\n{}",
                    serde_json::to_string_pretty(&object).unwrap(),
                    self.operator.controller_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Marks every simulated node (un)schedulable, as `kubectl cordon` does.
async fn cordon(client: &Client, nodes: &[String], unschedulable: bool) {
    let api: Api<Node> = Api::all(client.clone());
    for node in nodes {
        let patch = json!({ "spec": { "unschedulable": unschedulable } });
        api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("cordon node");
    }
}

/// The tutorial's steps, then two stuck apps, with the real operator: at
/// each step kstatus and Argo CD's health check read the live object.
#[tokio::test]
async fn flux_and_argocd_read_the_health_the_operator_writes() {
    let started = Instant::now();
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "gitops").await;
    let resource = ApiResource::erase::<StatefulApp>(&());
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let s = Scenario { apps, operator };
    let in_progress = Some(("InProgress", "Progressing"));

    // app add: until the operator has seen it, the app is in progress.
    let app: DynamicObject = serde_json::from_value(postgres(1)).unwrap();
    let created = s
        .apps
        .create(&PostParams::default(), &app)
        .await
        .expect("create app");
    let created = serde_json::to_value(created).unwrap();
    assert_eq!(created["status"]["observedGeneration"], 0, "{created}");
    check(
        "created",
        &created,
        "InProgress",
        "Progressing",
        Some("new.yaml"),
    );
    let running = s
        .settle(
            "postgres",
            "one instance running",
            in_progress,
            converged(1, 0),
        )
        .await;
    check(
        "running",
        &running,
        "Current",
        "Healthy",
        Some("healthy.yaml"),
    );

    // app stop: the spec change is in progress until the pod is gone; then
    // the app is current for Flux, Suspended for Argo CD.
    let patched = s
        .patch("postgres", json!({ "spec": { "instances": 0 } }))
        .await;
    check("stop asked", &patched, "InProgress", "Progressing", None);
    let stopped = s
        .settle("postgres", "instance stopped", in_progress, converged(0, 1))
        .await;
    check(
        "stopped",
        &stopped,
        "Current",
        "Suspended",
        Some("stopped.yaml"),
    );

    // app start: the same instance runs again.
    s.patch("postgres", json!({ "spec": { "instances": 1 } }))
        .await;
    let restarted = s
        .settle(
            "postgres",
            "instance restarted",
            in_progress,
            converged(1, 0),
        )
        .await;
    check("restarted", &restarted, "Current", "Healthy", None);

    // app update instances=2 with every node cordoned: the new instance
    // cannot be placed yet, and the operator says so.
    cordon(&client, &cluster.nodes, true).await;
    s.patch("postgres", json!({ "spec": { "instances": 2 } }))
        .await;
    let scaling = s
        .settle("postgres", "Reconciling while placing", in_progress, |o| {
            generation_observed(o) && condition(o, "Reconciling") == Some(("True", "Placing"))
        })
        .await;
    assert_eq!(scaling["status"]["running"], 1);
    check(
        "scaling up",
        &scaling,
        "InProgress",
        "Progressing",
        Some("scaling-up.yaml"),
    );
    cordon(&client, &cluster.nodes, false).await;
    let two = s
        .settle(
            "postgres",
            "two instances running",
            in_progress,
            converged(2, 0),
        )
        .await;
    check("scaled up", &two, "Current", "Healthy", None);

    // app update instances=1: the youngest stops and stays reserved.
    s.patch("postgres", json!({ "spec": { "instances": 1 } }))
        .await;
    let one = s
        .settle(
            "postgres",
            "one running, one stopped",
            in_progress,
            converged(1, 1),
        )
        .await;
    check("scaled down", &one, "Current", "Healthy", None);

    // task stop --wipe: an annotation (no new generation: the verdicts are
    // stale until the operator writes), then current again with the
    // annotation left in place, as GitOps leaves it.
    let instances = one["status"]["instances"].as_array().unwrap();
    let stopped_id = instances
        .iter()
        .find(|i| i["state"] == "Stopped")
        .expect("a stopped instance")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wipe =
        |value: &str| json!({ "metadata": { "annotations": { "statefulapp.io/wipe": value } } });
    s.patch("postgres", wipe(&stopped_id)).await;
    let wiped = s
        .settle("postgres", "stopped instance wiped", None, |o| {
            converged(1, 0)(o)
                && o["status"]["wipedInstances"]
                    .as_array()
                    .is_some_and(|w| w.iter().any(|id| id == stopped_id.as_str()))
        })
        .await;
    check("wiped", &wiped, "Current", "Healthy", None);

    // A malformed wipe request needs a person: Failed for Flux, Degraded for
    // Argo CD; fixed, the app is current again.
    s.patch("postgres", wipe("postgres.not-an-instance-id"))
        .await;
    let invalid = s
        .settle(
            "postgres",
            "Stalled by the invalid wipe request",
            None,
            |o| condition(o, "Stalled") == Some(("True", "InvalidWipeRequest")),
        )
        .await;
    check(
        "invalid wipe",
        &invalid,
        "Failed",
        "Degraded",
        Some("invalid-wipe.yaml"),
    );
    s.patch("postgres", wipe(&stopped_id)).await;
    let fixed = s
        .settle("postgres", "wipe request fixed", None, converged(1, 0))
        .await;
    check("wipe request fixed", &fixed, "Current", "Healthy", None);

    // A node lost under two instances: one waits for it (nodeLossPolicy
    // Wait: only a person can help, Failed), the other is to be replaced
    // after an hour (Replace: Degraded, yet the operator is on it, so still
    // in progress for Flux).
    let node = format!("lost-{}", &ns[ns.len() - 6..]);
    let kubelet = cluster.add_detachable_node(&client, &node).await;
    operator.restart_agent(&node);
    for (name, policy) in [
        ("waiting", json!({ "action": "Wait" })),
        (
            "replaced",
            json!({ "action": "Replace", "afterSeconds": 3600 }),
        ),
    ] {
        let mut app = postgres(1);
        app["metadata"]["name"] = json!(name);
        app["spec"]["nodeLossPolicy"] = policy;
        app["spec"]["template"]["spec"]["nodeSelector"] = json!({ "kubernetes.io/hostname": node });
        let app: DynamicObject = serde_json::from_value(app).unwrap();
        s.apps
            .create(&PostParams::default(), &app)
            .await
            .expect("create app on the node");
        let on_node = s
            .settle(
                name,
                "instance on the node running",
                in_progress,
                converged(1, 0),
            )
            .await;
        assert_eq!(on_node["status"]["instances"][0]["node"], node.as_str());
    }
    drop(kubelet); // the node stops heartbeating
    let lost = |name: &'static str, accept: fn(&Value) -> bool| {
        let s = &s;
        async move {
            let found = tokio::time::timeout(NODE_MONITOR_GRACE + WAIT, async {
                loop {
                    let object = s.get(name).await;
                    if accept(&object) {
                        return object;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            found.unwrap_or_else(|_| {
                panic!(
                    "{name}: the node loss was never reported\n{}",
                    operator.controller_log_tail()
                )
            })
        }
    };
    let waiting = lost("waiting", |o| {
        condition(o, "Stalled") == Some(("True", "NodeLost"))
    })
    .await;
    check(
        "node lost, Wait",
        &waiting,
        "Failed",
        "Degraded",
        Some("node-lost.yaml"),
    );
    let replaced = lost("replaced", |o| {
        condition(o, "Degraded") == Some(("True", "NodeLost"))
            && condition(o, "Reconciling") == Some(("True", "Replacing"))
    })
    .await;
    check(
        "node lost, Replace",
        &replaced,
        "InProgress",
        "Degraded",
        Some("node-lost-replace.yaml"),
    );
    eprintln!(
        "gitops health walk took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// An instance no node can take (it asks for more CPU than any node has):
/// in progress while the scheduler may still find room, then, once it has
/// said Unschedulable for the operator's patience (`--unschedulable-after`),
/// the app is Stalled naming the instance and the scheduler's reason:
/// Failed for Flux, Degraded for Argo CD.
#[tokio::test]
async fn an_instance_no_node_can_take_stalls_the_app() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "unplaceable").await;
    let resource = ApiResource::erase::<StatefulApp>(&());
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let s = Scenario { apps, operator };

    let mut app = postgres(1);
    app["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
        json!("1000");
    let app: DynamicObject = serde_json::from_value(app).unwrap();
    s.apps
        .create(&PostParams::default(), &app)
        .await
        .expect("create app");
    let placing = s
        .settle(
            "postgres",
            "Reconciling while placing",
            Some(("InProgress", "Progressing")),
            |o| generation_observed(o) && condition(o, "Reconciling") == Some(("True", "Placing")),
        )
        .await;
    check("placing", &placing, "InProgress", "Progressing", None);

    let stalled = s
        .settle(
            "postgres",
            "Stalled by the instance no node can take",
            Some(("InProgress", "Progressing")),
            |o| condition(o, "Stalled") == Some(("True", "Unschedulable")),
        )
        .await;
    check(
        "unschedulable",
        &stalled,
        "Failed",
        "Degraded",
        Some("unschedulable.yaml"),
    );
    let stalled_condition = stalled["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap();
    let time = |v: &Value| -> k8s_openapi::jiff::Timestamp { v.as_str().unwrap().parse().unwrap() };
    let waited = time(&stalled_condition["lastTransitionTime"])
        .duration_since(time(&stalled["metadata"]["creationTimestamp"]));
    assert!(
        waited.as_secs() >= support::operator::UNSCHEDULABLE_AFTER.as_secs() as i64,
        "Stalled {waited:?} after the app was made, before the patience"
    );
    let id = stalled["status"]["instances"][0]["id"].as_str().unwrap();
    let message = stalled_condition["message"].as_str().unwrap();
    assert!(message.contains(id), "names the instance: {message}");
    assert!(
        message.contains("Insufficient cpu"),
        "says what the scheduler says: {message}"
    );
    assert_eq!(
        condition(&stalled, "Reconciling"),
        Some(("False", "Stalled"))
    );
}

//! Scenario data and helpers for StatefulApp tests: the tutorial's postgres
//! app, and waiting on its status.

use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use statefulapp_operator::api::{InstanceState, InstanceStatus, StatefulApp, StatefulAppStatus};

use super::operator::Operator;
use super::wait::wait_until;

pub const WAIT: Duration = Duration::from_secs(60);

/// Where a timed-out wait finds the operator's recent log lines.
pub trait OperatorLogs {
    fn log_tail(&self) -> String;
}

impl OperatorLogs for Operator {
    fn log_tail(&self) -> String {
        self.controller_log_tail()
    }
}

/// The tutorial's `postgres.marathon.json`, as a StatefulApp.
pub fn postgres(instances: i32) -> Value {
    json!({
        "apiVersion": "statefulapp.io/v1alpha1",
        "kind": "StatefulApp",
        "metadata": { "name": "postgres" },
        "spec": {
            "instances": instances,
            "template": { "spec": { "containers": [{
                "name": "postgres",
                "image": "postgres:9.5",
                "env": [{ "name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata" }],
                "resources": { "requests": { "cpu": "500m", "memory": "256Mi" } },
            }]}},
            "volumes": [{ "name": "pgdata", "size": "100Mi", "mountPath": "/var/lib/postgresql/data" }],
        },
    })
}

pub async fn create_app(client: &Client, ns: &str, app: Value) -> StatefulApp {
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), ns);
    let app: StatefulApp = serde_json::from_value(app).expect("StatefulApp json");
    apps.create(&PostParams::default(), &app)
        .await
        .expect("create StatefulApp")
}

pub async fn set_instances(client: &Client, ns: &str, name: &str, instances: i32) {
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), ns);
    let patch = json!({ "spec": { "instances": instances } });
    apps.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch instances");
}

/// Waits until the app's status satisfies `accept`; on timeout the panic
/// message carries the last status and the controller's log.
pub async fn wait_for_status(
    client: &Client,
    ns: &str,
    name: &str,
    operator: &impl OperatorLogs,
    what: &str,
    accept: impl Fn(&StatefulAppStatus) -> bool,
) -> StatefulAppStatus {
    wait_for_status_within(WAIT, client, ns, name, operator, what, accept).await
}

/// [`wait_for_status`] with another deadline.
pub async fn wait_for_status_within(
    timeout: Duration,
    client: &Client,
    ns: &str,
    name: &str,
    operator: &impl OperatorLogs,
    what: &str,
    accept: impl Fn(&StatefulAppStatus) -> bool,
) -> StatefulAppStatus {
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(app) = apps.get(name).await
            && let Some(status) = app.status
        {
            if status.observed_generation == app.metadata.generation && accept(&status) {
                return status;
            }
            last = Some(status);
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\nlast status: {}\n{}",
                serde_json::to_string_pretty(&last).unwrap(),
                operator.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn in_state(status: &StatefulAppStatus, state: InstanceState) -> Vec<&InstanceStatus> {
    status
        .instances
        .iter()
        .filter(|i| i.state == state)
        .collect()
}

/// Waits for an Event in `ns` with `reason` (and, if given, of `type_`);
/// returns it.
pub async fn wait_for_event(
    client: &Client,
    ns: &str,
    reason: &str,
    type_: Option<&str>,
    timeout: Duration,
) -> k8s_openapi::api::events::v1::Event {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    wait_until(timeout, &format!("a {reason} Event"), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && type_.is_none_or(|t| e.type_.as_deref() == Some(t))
        })
    })
    .await
}

/// Waits for `path` to exist (the agent creates directories asynchronously).
pub async fn wait_for_dir(path: &std::path::Path) {
    wait_until(WAIT, &format!("directory {}", path.display()), || async {
        path.is_dir().then_some(())
    })
    .await;
}

/// What the journal app's container runs: on every start it appends a line
/// (time, pod, `VERSION`) to `/data/journal` in its volume and prints the
/// whole journal, so its log shows what it found; then it idles until
/// stopped.
const JOURNAL_SCRIPT: &str = r#"echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $POD_NAME $VERSION" >> /data/journal
echo "journal of this volume:"
cat /data/journal
trap 'exit 0' TERM
while true; do sleep 1; done"#;

/// A StatefulApp `journal` of the busybox test image, run on real nodes:
/// its container keeps a journal of its own starts in its volume (`/data`).
pub fn journal(image: &str, instances: i32, version: &str) -> Value {
    json!({
        "apiVersion": "statefulapp.io/v1alpha1",
        "kind": "StatefulApp",
        "metadata": { "name": "journal" },
        "spec": {
            "instances": instances,
            "upgradeStrategy": { "minimumHealthCapacity": 0 },
            "template": { "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "app",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", JOURNAL_SCRIPT],
                    "env": [
                        { "name": "VERSION", "value": version },
                        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    ],
                    "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } },
                }],
            }},
            "volumes": [{ "name": "data", "size": "64Mi", "mountPath": "/data" }],
        },
    })
}

/// An instance's volumes without what changes as data is written (`used`):
/// which volumes, claims and persistenceIds it has.
pub fn volume_identities(
    volumes: &[statefulapp_operator::api::VolumeStatus],
) -> Vec<statefulapp_operator::api::VolumeStatus> {
    volumes
        .iter()
        .cloned()
        .map(|v| statefulapp_operator::api::VolumeStatus { used: None, ..v })
        .collect()
}

/// An app of the real nodes' busybox test image (a container that waits
/// for TERM) with one volume `data` of `size` at `/data`, optionally pinned
/// to `node`.
pub fn busybox_app(name: &str, instances: i32, size: &str, node: Option<&str>) -> Value {
    let images = super::TestCluster::shared_real().images.as_ref().unwrap();
    let mut pod = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "app",
            "image": images.testapp.reference,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
            "resources": { "requests": { "cpu": "10m", "memory": "8Mi" } },
        }],
    });
    if let Some(node) = node {
        pod["nodeSelector"] = json!({ "kubernetes.io/hostname": node });
    }
    json!({
        "apiVersion": "statefulapp.io/v1alpha1",
        "kind": "StatefulApp",
        "metadata": { "name": name },
        "spec": {
            "instances": instances,
            "template": { "spec": pod },
            "volumes": [{ "name": "data", "size": size, "mountPath": "/data" }],
        },
    })
}

//! `--wait`: follows an app until the controller has done what was asked,
//! the way `kubectl rollout status` follows a Deployment: one line each time
//! the progress changes, success once the app is Ready and no longer
//! Reconciling for the latest spec, failure when it is Stalled or time runs
//! out.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;

use super::PluginError;
use crate::api::{StatefulApp, StatefulAppStatus};

/// What the wait is for.
pub enum Goal<'a> {
    /// The app converged on its latest spec.
    Converged,
    /// The app converged and no longer lists this instance (wiped).
    Wiped(&'a str),
}

/// Where an app stands, as `--wait` reports it.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Not there yet: the line to print.
    Waiting(String),
    /// Done: the line to print.
    Done(String),
    /// Needs a person: why.
    Stalled(String),
}

/// Reads the app's status against `goal` (pure: the tests feed it statuses).
pub fn progress(app: &StatefulApp, goal: &Goal) -> Progress {
    let name = format!("/{}", app_name(app));
    let Some(status) = &app.status else {
        return Progress::Waiting(format!("waiting for app {name}: no status yet"));
    };
    let generation = app.metadata.generation;
    let counts = counts(app, status);
    if status.observed_generation != generation {
        return Progress::Waiting(format!(
            "waiting for app {name}: the controller has not seen the latest change yet ({counts})"
        ));
    }
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    if let Some(stalled) = condition("Stalled").filter(|c| is_true(c)) {
        return Progress::Stalled(format!(
            "app {name} is stalled: {}: {} ({counts})",
            stalled.reason, stalled.message
        ));
    }
    if let Some(reconciling) = condition("Reconciling").filter(|c| is_true(c)) {
        return Progress::Waiting(format!(
            "waiting for app {name}: {} ({})",
            reconciling.message, reconciling.reason
        ));
    }
    if let Goal::Wiped(id) = goal
        && status.instances.iter().any(|i| i.id == *id)
    {
        return Progress::Waiting(format!("waiting for app {name}: {id} is being wiped"));
    }
    if !condition("Ready").is_some_and(is_true) {
        let why = condition("Ready").map_or(String::new(), |c| format!(": {}", c.message));
        return Progress::Waiting(format!("waiting for app {name} to be ready{why}"));
    }
    match goal {
        Goal::Converged => Progress::Done(format!("app {name} is ready: {counts}")),
        Goal::Wiped(id) => Progress::Done(format!("{id} wiped; app {name}: {counts}")),
    }
}

fn app_name(app: &StatefulApp) -> &str {
    app.metadata.name.as_deref().unwrap_or_default()
}

fn is_true(condition: &Condition) -> bool {
    condition.status == "True"
}

fn counts(app: &StatefulApp, status: &StatefulAppStatus) -> String {
    format!(
        "{} of {} instances running, {} ready, {} stopped",
        status.running, app.spec.instances, status.ready, status.stopped
    )
}

/// Follows app `name` until `goal`, printing each change of progress on
/// stderr (stdout stays for the command's own output).
pub async fn wait_for(
    api: &Api<StatefulApp>,
    name: &str,
    goal: Goal<'_>,
    timeout: Duration,
) -> Result<(), PluginError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let app = api.get(name).await?;
        match progress(&app, &goal) {
            Progress::Done(line) => {
                eprintln!("{line}");
                return Ok(());
            }
            Progress::Stalled(why) => return Err(PluginError::Stalled(why)),
            Progress::Waiting(line) => {
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(PluginError::Timeout(format!(
                "timed out after {} waiting for app /{name}; last: {last}",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(generation: i64, status: serde_json::Value) -> StatefulApp {
        serde_json::from_value(json!({
            "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
            "metadata": { "name": "postgres", "generation": generation },
            "spec": { "instances": 2, "template": { "spec": { "containers": [{ "name": "pg" }] } },
                      "volumes": [{ "name": "pgdata", "size": "1Gi", "mountPath": "/data" }] },
            "status": status,
        }))
        .unwrap()
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!({ "type": type_, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": "2026-01-01T00:00:00Z" })
    }

    #[test]
    fn an_unseen_change_is_waited_for() {
        let app = app(
            3,
            json!({ "observedGeneration": 2, "running": 1, "ready": 1,
            "conditions": [condition("Ready", "True", "InstancesReady", "")] }),
        );
        assert!(
            matches!(progress(&app, &Goal::Converged), Progress::Waiting(l) if l.contains("not seen"))
        );
    }

    #[test]
    fn reconciling_says_what_is_in_flight() {
        let app = app(
            3,
            json!({ "observedGeneration": 3, "running": 1, "ready": 1,
            "conditions": [condition("Ready", "False", "InstancesNotReady", ""),
                           condition("Reconciling", "True", "ScalingUp", "1 to start; 1 of 2 instances running, 1 ready")] }),
        );
        assert_eq!(
            progress(&app, &Goal::Converged),
            Progress::Waiting("waiting for app /postgres: 1 to start; 1 of 2 instances running, 1 ready (ScalingUp)".into())
        );
    }

    #[test]
    fn stalled_is_a_failure_with_its_reason() {
        let app = app(
            3,
            json!({ "observedGeneration": 3,
            "conditions": [condition("Stalled", "True", "DataMissing", "instance x on node n: /var/lib missing")] }),
        );
        assert!(matches!(progress(&app, &Goal::Converged),
            Progress::Stalled(l) if l.contains("DataMissing: instance x on node n")));
    }

    #[test]
    fn ready_and_not_reconciling_is_done() {
        let app = app(
            3,
            json!({ "observedGeneration": 3, "running": 2, "ready": 2,
            "conditions": [condition("Ready", "True", "InstancesReady", ""),
                           condition("Reconciling", "False", "Converged", "")] }),
        );
        assert_eq!(
            progress(&app, &Goal::Converged),
            Progress::Done(
                "app /postgres is ready: 2 of 2 instances running, 2 ready, 0 stopped".into()
            )
        );
        assert!(matches!(
            progress(&app, &Goal::Wiped("postgres.x")),
            Progress::Done(_)
        ));
    }

    #[test]
    fn a_wipe_is_done_once_the_instance_is_gone() {
        let app = app(
            3,
            json!({ "observedGeneration": 3, "running": 2, "ready": 2,
            "instances": [{ "id": "postgres.x", "state": "Wiping", "ready": false, "volumes": [] }],
            "conditions": [condition("Ready", "True", "InstancesReady", "")] }),
        );
        assert!(matches!(
            progress(&app, &Goal::Wiped("postgres.x")),
            Progress::Waiting(_)
        ));
    }
}

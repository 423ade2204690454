//! StatefulApps as the controller keeps them: the spec and metadata the
//! user wrote, and of the status only what a reconcile reads back (the
//! conditions, the wiped-instance record, each instance's id and state).
//!
//! A full status lists every instance with its node, volumes and
//! reservation: at 1,000 apps of 5 instances it was a quarter of the
//! controller's heap, kept only to tell whether a new status would change
//! anything. A digest of the status as the API server last showed it
//! answers that ([`SeenStatuses`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use crate::api::{InstanceStatus, StatefulApp, StatefulAppStatus};
use crate::controller::status::digest;

/// Per app (`namespace/name`), a digest of the status the API server
/// showed last (see [`digest`]).
#[derive(Clone, Default)]
pub struct SeenStatuses(Arc<Mutex<HashMap<String, u64>>>);

impl SeenStatuses {
    /// The digest of app `key`'s status as last seen, if it has one.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.lock().get(key).copied()
    }

    /// Records the status of `app` as the watch delivers it, then slims the
    /// app for the cache.
    pub fn slim(&self, app: &mut StatefulApp) {
        let key = format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any());
        let gone = app.metadata.deletion_timestamp.is_some() && app.finalizers().is_empty();
        match &app.status {
            Some(status) if !gone => self.lock().insert(key, digest(status)),
            _ => self.lock().remove(&key),
        };
        slim_app(app);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An app as the user wrote it, less `managedFields`, kubectl's copy of the
/// whole object in `last-applied-configuration`, and the parts of its
/// status no reconcile reads back.
fn slim_app(app: &mut StatefulApp) {
    app.metadata.managed_fields = None;
    if let Some(annotations) = &mut app.metadata.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    if let Some(status) = &mut app.status {
        slim_status(status);
    }
}

fn slim_status(status: &mut StatefulAppStatus) {
    status.selector = None;
    status.orphaned_volumes = Vec::new();
    status.instances = std::mem::take(&mut status.instances)
        .into_iter()
        .map(|instance| InstanceStatus {
            id: instance.id,
            state: instance.state,
            node: None,
            started_at: None,
            ready: false,
            volumes: Vec::new(),
            reservation: None,
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(status: serde_json::Value) -> StatefulApp {
        serde_json::from_value(json!({
            "apiVersion": "statefulapp.io/v1alpha1",
            "kind": "StatefulApp",
            "metadata": {
                "name": "db", "namespace": "team",
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                    "statefulapp.io/wipe": "db.f2419e31-018a-11e6-b721-0261677b407a"
                },
                "managedFields": [{ "manager": "kubectl" }]
            },
            "spec": { "instances": 1, "template": { "spec": { "containers": [] } }, "volumes": [] },
            "status": status
        }))
        .expect("a StatefulApp")
    }

    fn full_status() -> serde_json::Value {
        json!({
            "observedGeneration": 3, "running": 1, "stopped": 0, "ready": 1,
            "selector": "statefulapp.io/app=db",
            "instances": [{
                "id": "db.f2419e31-018a-11e6-b721-0261677b407a",
                "node": "n1", "state": "Running", "ready": true,
                "startedAt": "2026-12-03T06:00:00Z",
                "volumes": [{
                    "name": "data",
                    "persistenceId": "db#data#f2419e31-018a-11e6-b721-0261677b407a",
                    "claim": "data-db-f2419e31", "size": "1Gi"
                }]
            }],
            "orphanedVolumes": [{
                "name": "old", "persistenceId": "db#old#53ab8733-fd96-11e5-8e70-76a1c19f8c3d",
                "claim": "old-db-53ab8733", "size": "1Gi"
            }],
            "wipedInstances": ["db.53ab8733-fd96-11e5-8e70-76a1c19f8c3d"],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Ready", "message": "",
                "lastTransitionTime": "2026-12-03T06:00:00Z"
            }]
        })
    }

    #[test]
    fn the_cache_keeps_what_a_reconcile_reads_back_and_a_digest_of_the_rest() {
        let seen = SeenStatuses::default();
        let mut db = app(full_status());
        let full = db.status.clone().unwrap();
        seen.slim(&mut db);

        assert_eq!(seen.get("team/db"), Some(digest(&full)));
        let kept = db.status.as_ref().unwrap();
        assert_eq!(kept.conditions, full.conditions);
        assert_eq!(kept.wiped_instances, full.wiped_instances);
        assert_eq!(kept.observed_generation, Some(3));
        assert_eq!(kept.instances.len(), 1);
        assert_eq!(kept.instances[0].id, full.instances[0].id);
        assert_eq!(kept.instances[0].state, full.instances[0].state);
        assert!(kept.instances[0].volumes.is_empty() && kept.instances[0].node.is_none());
        assert!(kept.orphaned_volumes.is_empty());

        assert!(db.metadata.managed_fields.is_none());
        assert_eq!(db.annotations().len(), 1, "the user's own annotations stay");
    }

    #[test]
    fn an_app_without_status_or_gone_has_no_digest() {
        let seen = SeenStatuses::default();
        seen.slim(&mut app(full_status()));
        assert!(seen.get("team/db").is_some());

        let mut gone = app(full_status());
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        seen.slim(&mut gone);
        assert_eq!(seen.get("team/db"), None);

        seen.slim(&mut app(full_status()));
        seen.slim(&mut app(serde_json::Value::Null));
        assert_eq!(seen.get("team/db"), None, "a status cleared");
    }
}

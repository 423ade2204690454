//! Pods and reservation pods as the caches keep them: the wire type the
//! watch decodes ([`CachedPod`], a partial object, see [`crate::partial`]),
//! the compact entries made from it ([`PodEntry`] for an instance's pod,
//! [`ReservationEntry`] for a reservation pod; see [`super::meta`] for why
//! entries, not objects) and the conversion.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use uuid::Uuid;

use super::meta::Meta;
use crate::controller::model::Unschedulable;
use crate::names::{LABEL_APP, LABEL_RESERVED_FOR};
use crate::partial::core_v1_kind;

/// A pod: identity, labels, annotations, its node, phase, readiness and
/// start time.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodPlacement,
    #[serde(default)]
    pub status: PodState,
}
core_v1_kind!(CachedPod, "Pod", "pods", NamespaceResourceScope);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPlacement {
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub phase: Option<String>,
    /// Why a pod failed, e.g. the kubelet's `OutOfcpu` when it refused it.
    pub reason: Option<String>,
    pub start_time: Option<Time>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl PodState {
    /// Whether the `Ready` condition is `True`.
    pub fn ready(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    /// The scheduler's `PodScheduled` condition when it found no node for
    /// the pod (reason `Unschedulable`): since when, and its message.
    pub fn unschedulable(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
}

/// A pod: its node, phase, readiness and start time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodEntry {
    pub meta: Meta,
    pub node_name: Option<String>,
    pub phase: Option<String>,
    /// Whether the `Ready` condition is `True`.
    pub ready: bool,
    pub started_at: Option<Timestamp>,
    /// The uid of the StatefulApp of the pod's `statefulapp.io/app` label
    /// that is its controller (ownerReference): only a pod the app itself
    /// controls is an instance's pod.
    pub owner: Option<Uuid>,
    /// The kubelet refused the pod for want of a resource on its node
    /// (`OutOfcpu`, `OutOfmemory`, ...): the reason.
    pub refused: Option<String>,
    /// The scheduler found no node for the pod (not yet bound).
    pub unschedulable: Option<Unschedulable>,
}

impl From<&CachedPod> for PodEntry {
    fn from(pod: &CachedPod) -> PodEntry {
        PodEntry {
            meta: Meta::of(&pod.metadata),
            node_name: pod.spec.node_name.clone(),
            phase: pod.status.phase.clone(),
            ready: pod.status.ready(),
            started_at: pod.status.start_time.as_ref().map(|t: &Time| t.0),
            owner: controller_of(&pod.metadata, LABEL_APP),
            refused: pod.status.reason.clone().filter(|r| {
                pod.status.phase.as_deref() == Some("Failed") && r.starts_with("OutOf")
            }),
            unschedulable: pod
                .status
                .unschedulable()
                .filter(|_| pod.spec.node_name.is_none())
                .map(|c| Unschedulable {
                    since: c.last_transition_time.as_ref().map(|t| t.0),
                    message: c.message.clone().unwrap_or_default(),
                }),
        }
    }
}

/// A reservation pod: whether it is placed on its node, and running.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReservationEntry {
    pub meta: Meta,
    pub node_name: Option<String>,
    pub running: bool,
    /// The uid of the StatefulApp its `statefulapp.io/reserved-for` label
    /// names, if that app is its controller: only then is it that app's
    /// reservation.
    pub owner: Option<Uuid>,
}

impl From<&CachedPod> for ReservationEntry {
    fn from(pod: &CachedPod) -> ReservationEntry {
        ReservationEntry {
            meta: Meta::of(&pod.metadata),
            node_name: pod.spec.node_name.clone(),
            running: pod.status.phase.as_deref() == Some("Running"),
            owner: controller_of(&pod.metadata, LABEL_RESERVED_FOR),
        }
    }
}

/// The uid of the object's controller, if that is the StatefulApp its
/// `label` names. (An app deleted and made again under the same name is
/// another object: its predecessor's pods, still going, are not its own.)
fn controller_of(meta: &ObjectMeta, label: &str) -> Option<Uuid> {
    let app = meta.labels.as_ref()?.get(label)?;
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| {
            owner.controller == Some(true)
                && owner.kind == "StatefulApp"
                && owner.api_version.starts_with("statefulapp.io/")
                && &owner.name == app
        })
        .and_then(|owner| owner.uid.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    #[test]
    fn pods_keep_what_observe_reads() {
        let pod: CachedPod = serde_json::from_value(json!({
            "metadata": { "name": "p", "labels": { "a": "b" }, "annotations": { "h": "1" } },
            "spec": { "nodeName": "n1", "containers": [{ "name": "c", "image": "i" }] },
            "status": { "phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                        "conditions": [{ "type": "PodScheduled", "status": "True" },
                                       { "type": "Ready", "status": "True",
                                         "lastTransitionTime": "2026-01-01T00:00:00Z" }],
                        "containerStatuses": [] },
        }))
        .unwrap();
        assert_eq!(pod.spec.node_name.as_deref(), Some("n1"));
        assert_eq!(pod.status.phase.as_deref(), Some("Running"));
        assert!(pod.status.start_time.is_some());
        assert!(pod.status.ready());
        assert_eq!(pod.labels().get("a").map(String::as_str), Some("b"));
        assert_eq!(pod.annotations().get("h").map(String::as_str), Some("1"));
    }

    #[test]
    fn a_new_pod_has_defaults() {
        let pod: CachedPod =
            serde_json::from_value(json!({ "metadata": { "name": "p" } })).unwrap();
        assert!(pod.spec.node_name.is_none());
        assert!(pod.status.phase.is_none());
        assert!(!pod.status.ready());
    }

    #[test]
    fn pods_address_the_core_api() {
        use kube::Resource;
        assert_eq!(CachedPod::kind(&()), "Pod");
        assert_eq!(
            CachedPod::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/pods"
        );
    }

    #[test]
    fn keeps_what_the_controller_reads() {
        let pod: CachedPod = serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "uid": "u1",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "deletionTimestamp": "2026-01-01T00:01:00Z",
                "labels": { "statefulapp.io/instance": "i", "team": "a" },
                "annotations": { "statefulapp.io/template-hash": "h", "note": "x" },
            },
            "spec": { "nodeName": "n1" },
            "status": {
                "phase": "Running",
                "startTime": "2026-01-01T00:00:05Z",
                "conditions": [{ "type": "Ready", "status": "True" }],
            },
        }))
        .unwrap();
        let entry = PodEntry::from(&pod);
        assert_eq!(entry.meta.name, "web-1");
        assert_eq!(entry.meta.uid.as_deref(), Some("u1"));
        assert!(entry.meta.created.is_some());
        assert!(entry.meta.deleting);
        assert_eq!(entry.meta.label("statefulapp.io/instance"), Some("i"));
        assert_eq!(entry.meta.label("team"), None, "not ours: not kept");
        assert_eq!(
            entry.meta.annotation("statefulapp.io/template-hash"),
            Some("h")
        );
        assert!(!entry.meta.has_annotation("note"));
        assert_eq!(entry.node_name.as_deref(), Some("n1"));
        assert_eq!(entry.phase.as_deref(), Some("Running"));
        assert!(entry.ready);
        assert!(entry.started_at.is_some());
        assert!(entry.refused.is_none());
    }

    #[test]
    fn a_pod_the_kubelet_refused_for_want_of_resources_is_told_apart() {
        let pod = |phase: &str, reason: &str| -> PodEntry {
            let pod: CachedPod = serde_json::from_value(json!({
                "metadata": { "name": "p" },
                "status": { "phase": phase, "reason": reason },
            }))
            .unwrap();
            PodEntry::from(&pod)
        };
        assert_eq!(
            pod("Failed", "OutOfcpu").refused.as_deref(),
            Some("OutOfcpu")
        );
        assert_eq!(pod("Failed", "Evicted").refused, None);
        assert_eq!(pod("Pending", "OutOfcpu").refused, None);
    }

    #[test]
    fn a_pod_the_scheduler_found_no_node_for_keeps_its_verdict() {
        let pod = |node: Option<&str>, reason: &str| -> PodEntry {
            let pod: CachedPod = serde_json::from_value(json!({
                "metadata": { "name": "p" },
                "spec": { "nodeName": node },
                "status": { "phase": "Pending", "conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": reason,
                    "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    "lastTransitionTime": "2026-01-02T03:04:05Z",
                }]},
            }))
            .unwrap();
            PodEntry::from(&pod)
        };
        let verdict = pod(None, "Unschedulable").unschedulable.unwrap();
        assert_eq!(
            verdict.message,
            "0/3 nodes are available: 3 Insufficient cpu."
        );
        assert_eq!(verdict.since, Some("2026-01-02T03:04:05Z".parse().unwrap()));
        assert_eq!(pod(None, "SchedulingGated").unschedulable, None);
        assert_eq!(pod(Some("node-1"), "Unschedulable").unschedulable, None);
    }
}

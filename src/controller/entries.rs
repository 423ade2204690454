//! What the caches keep of each pod, claim and volume of an app: the fields
//! [`super::observe`] and [`super::expectations`] read, in compact form.
//!
//! The watched objects ([`super::cached`]) must carry a whole `ObjectMeta`
//! (360 bytes before any string) for kube-runtime, and maps of labels and
//! annotations (a map node is over 500 bytes, even for three entries); at
//! 15,000 cached objects that was most of the controller's memory. An entry
//! keeps a few strings and a short list of our own labels and annotations.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use uuid::Uuid;

use super::cached::{CachedClaim, CachedPod, CachedVolume};
use super::observed::Unschedulable;
use crate::names::{ANNOTATION_SELECTED_NODE, LABEL_APP, LABEL_RESERVED_FOR};

/// An object's metadata, as far as the controller reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub uid: Option<String>,
    pub created: Option<Timestamp>,
    /// Whether the object is being deleted.
    pub deleting: bool,
    labels: Box<[(String, String)]>,
    annotations: Box<[(String, String)]>,
}

impl Meta {
    /// Keeps our own labels and annotations, and the node kube-scheduler
    /// selected for a claim.
    pub fn of(meta: &ObjectMeta) -> Meta {
        let ours = |map: &Option<std::collections::BTreeMap<String, String>>| {
            map.iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("statefulapp.io/") || *k == ANNOTATION_SELECTED_NODE)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Meta {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            deleting: meta.deletion_timestamp.is_some(),
            labels: ours(&meta.labels),
            annotations: ours(&meta.annotations),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    pub fn has_annotation(&self, key: &str) -> bool {
        self.annotation(key).is_some()
    }
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
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

/// A claim: the volume it names, and whether it is bound to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimEntry {
    pub meta: Meta,
    pub volume_name: Option<String>,
    pub bound: bool,
    /// Bytes the claim asks for.
    pub requested: Option<u64>,
    /// Bytes it holds (its `status.capacity`).
    pub capacity: Option<u64>,
}

impl From<&CachedClaim> for ClaimEntry {
    fn from(claim: &CachedClaim) -> ClaimEntry {
        ClaimEntry {
            meta: Meta::of(&claim.metadata),
            volume_name: claim.spec.volume_name.clone(),
            bound: claim.status.phase.as_deref() == Some("Bound"),
            requested: claim
                .spec
                .resources
                .requests
                .storage
                .as_ref()
                .and_then(|q| crate::quantity::bytes(&q.0)),
            capacity: claim
                .status
                .capacity
                .storage
                .as_ref()
                .and_then(|q| crate::quantity::bytes(&q.0)),
        }
    }
}

/// A volume: the claim it is bound to (name and uid).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeEntry {
    pub meta: Meta,
    pub claim_name: Option<String>,
    pub claim_uid: Option<String>,
}

impl From<&CachedVolume> for VolumeEntry {
    fn from(pv: &CachedVolume) -> VolumeEntry {
        let claim_ref = pv.spec.claim_ref.as_ref();
        VolumeEntry {
            meta: Meta::of(&pv.metadata),
            claim_name: claim_ref.and_then(|r| r.name.clone()),
            claim_uid: claim_ref.and_then(|r| r.uid.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn a_claim_is_bound_only_in_phase_bound() {
        let claim = |phase: &str| -> CachedClaim {
            serde_json::from_value(json!({
                "metadata": {
                    "name": "c",
                    "annotations": { "volume.kubernetes.io/selected-node": "n2" },
                },
                "spec": { "volumeName": "pv" },
                "status": { "phase": phase },
            }))
            .unwrap()
        };
        let bound = ClaimEntry::from(&claim("Bound"));
        assert!(bound.bound);
        assert_eq!(bound.volume_name.as_deref(), Some("pv"));
        assert_eq!(bound.meta.annotation(ANNOTATION_SELECTED_NODE), Some("n2"));
        assert!(!ClaimEntry::from(&claim("Pending")).bound);
    }

    #[test]
    fn a_volume_keeps_its_claim_ref() {
        let pv: CachedVolume = serde_json::from_value(json!({
            "metadata": { "name": "sapp-1" },
            "spec": { "claimRef": { "name": "c", "namespace": "ns", "uid": "u" } },
        }))
        .unwrap();
        let entry = VolumeEntry::from(&pv);
        assert_eq!(entry.claim_name.as_deref(), Some("c"));
        assert_eq!(entry.claim_uid.as_deref(), Some("u"));
        assert!(!entry.meta.deleting);
    }
}

//! The kinds the controller caches, as partial objects (see
//! [`crate::partial`]): what [`super::observe`] and [`super::expectations`]
//! read, nothing more. The cache also drops `managedFields`.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::Deserialize;

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

/// A claim: identity, labels, annotations, the volume it names and its phase.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedClaim {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ClaimBinding,
    #[serde(default)]
    pub status: ClaimState,
}
core_v1_kind!(
    CachedClaim,
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    NamespaceResourceScope
);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimBinding {
    pub volume_name: Option<String>,
    #[serde(default)]
    pub resources: ClaimResources,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimResources {
    #[serde(default)]
    pub requests: StorageRequest,
}

/// The claim's `storage` request (other resources are not read).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StorageRequest {
    pub storage: Option<Quantity>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Phase {
    pub phase: Option<String>,
}

/// A claim's phase and its `storage` capacity (what it was grown to).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimState {
    pub phase: Option<String>,
    #[serde(default)]
    pub capacity: StorageRequest,
}

/// A volume: identity, labels, annotations and the claim it is bound to.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedVolume {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VolumeBinding,
}
core_v1_kind!(
    CachedVolume,
    "PersistentVolume",
    "persistentvolumes",
    ClusterResourceScope
);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBinding {
    pub claim_ref: Option<ClaimRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimRef {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
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
    fn claims_keep_volume_name_and_phase() {
        let claim: CachedClaim = serde_json::from_value(json!({
            "metadata": { "name": "c", "uid": "u1", "labels": { "a": "b" },
                          "annotations": { "volume.kubernetes.io/selected-node": "n1" },
                          "deletionTimestamp": "2026-01-01T00:00:00Z" },
            "spec": { "volumeName": "pv1", "storageClassName": "sc", "accessModes": ["ReadWriteOnce"],
                      "resources": { "requests": { "storage": "1Gi" } } },
            "status": { "phase": "Bound", "capacity": { "storage": "1Gi" } },
        }))
        .unwrap();
        assert_eq!(claim.spec.volume_name.as_deref(), Some("pv1"));
        assert_eq!(claim.status.phase.as_deref(), Some("Bound"));
        assert_eq!(claim.uid().as_deref(), Some("u1"));
        assert!(claim.metadata.deletion_timestamp.is_some());
        assert_eq!(claim.annotations().len(), 1);
    }

    #[test]
    fn volumes_keep_their_claim_ref() {
        let volume: CachedVolume = serde_json::from_value(json!({
            "metadata": { "name": "v", "labels": { "a": "b" }, "annotations": { "m": "1" } },
            "spec": { "capacity": { "storage": "1Gi" }, "local": { "path": "/x" },
                      "claimRef": { "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                    "namespace": "ns", "name": "c", "uid": "u1",
                                    "resourceVersion": "7" } },
            "status": { "phase": "Bound" },
        }))
        .unwrap();
        let claim_ref = volume.spec.claim_ref.as_ref().unwrap();
        assert_eq!(claim_ref.name.as_deref(), Some("c"));
        assert_eq!(claim_ref.namespace.as_deref(), Some("ns"));
        assert_eq!(claim_ref.uid.as_deref(), Some("u1"));
        assert_eq!(volume.annotations().get("m").map(String::as_str), Some("1"));
    }

    #[test]
    fn kinds_address_the_core_api() {
        use kube::Resource;
        assert_eq!(CachedPod::kind(&()), "Pod");
        assert_eq!(
            CachedPod::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/pods"
        );
        assert_eq!(
            CachedClaim::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/persistentvolumeclaims"
        );
        assert_eq!(
            CachedVolume::url_path(&(), None),
            "/api/v1/persistentvolumes"
        );
    }
}

//! Claims as the caches keep them: the wire type the watch decodes
//! ([`CachedClaim`], a partial object, see [`crate::partial`]), the compact
//! [`ClaimEntry`] made from it (see [`super::meta`] for why entries, not
//! objects) and the conversion.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::meta::Meta;
use crate::partial::core_v1_kind;

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

impl StorageRequest {
    /// The storage quantity in bytes, if it is set and valid.
    pub fn bytes(&self) -> Option<u64> {
        self.storage
            .as_ref()
            .and_then(|q| crate::quantity::bytes(&q.0))
    }
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
            requested: claim.spec.resources.requests.bytes(),
            capacity: claim.status.capacity.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ANNOTATION_SELECTED_NODE;
    use kube::ResourceExt;
    use serde_json::json;

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
    fn claims_address_the_core_api() {
        use kube::Resource;
        assert_eq!(
            CachedClaim::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/persistentvolumeclaims"
        );
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
}

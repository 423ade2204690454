//! Volumes as the caches keep them: the wire type the watch decodes
//! ([`CachedVolume`], a partial object, see [`crate::partial`]), the compact
//! [`VolumeEntry`] made from it (see [`super::meta`] for why entries, not
//! objects) and the conversion.

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::meta::Meta;
use crate::partial::core_v1_kind;

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
    use kube::ResourceExt;
    use serde_json::json;

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
    fn volumes_address_the_core_api() {
        use kube::Resource;
        assert_eq!(
            CachedVolume::url_path(&(), None),
            "/api/v1/persistentvolumes"
        );
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

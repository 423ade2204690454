//! Partial objects: our own types for core kinds that deserialize only the
//! fields a component reads. A watch cache of `k8s_openapi` types costs the
//! full struct per object even when trimmed (a `PersistentVolume` is 3.4 KiB
//! before any string), which at thousands of instances is most of the
//! operator's memory; these types are a few hundred bytes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Makes `$ty` a core/v1 kind for kube (`Api`, watchers, reflectors); it
/// must have a `metadata: ObjectMeta` field.
macro_rules! core_v1_kind {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = "v1";
            const GROUP: &'static str = "";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }
    };
}

pub(crate) use core_v1_kind;

/// Metadata as a cache needs it: identity, timestamps, owner references
/// (they route a change to its owner's reconcile), and the labels and
/// annotations `keep` accepts. `managedFields` and finalizers go (a cached
/// object is read, never written back).
pub fn slim_metadata(meta: &mut ObjectMeta, keep: impl Fn(&str) -> bool) {
    meta.managed_fields = None;
    meta.finalizers = None;
    for entries in [&mut meta.labels, &mut meta.annotations]
        .into_iter()
        .flatten()
    {
        entries.retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slim_metadata_keeps_identity_and_chosen_keys() {
        let mut meta: ObjectMeta = serde_json::from_value(json!({
            "name": "n", "namespace": "ns", "uid": "u",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z",
            "labels": { "statefulapp.io/app": "a", "team": "x" },
            "annotations": { "statefulapp.io/wiping": "", "kubectl.kubernetes.io/last-applied-configuration": "{}" },
            "finalizers": ["f"],
            "ownerReferences": [{ "apiVersion": "v1", "kind": "K", "name": "o", "uid": "v" }],
            "managedFields": [{ "manager": "m" }],
        }))
        .unwrap();
        slim_metadata(&mut meta, |key| key.starts_with("statefulapp.io/"));
        assert_eq!(meta.name.as_deref(), Some("n"));
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
        assert_eq!(meta.uid.as_deref(), Some("u"));
        assert!(meta.creation_timestamp.is_some() && meta.deletion_timestamp.is_some());
        assert_eq!(meta.labels.unwrap().len(), 1);
        assert_eq!(meta.annotations.unwrap().len(), 1);
        assert!(meta.finalizers.is_none());
        assert_eq!(meta.owner_references.unwrap().len(), 1);
        assert!(meta.managed_fields.is_none());
    }
}

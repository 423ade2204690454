//! Partial objects: our own types for core kinds that deserialize only the
//! fields a component reads. A watch cache of `k8s_openapi` types costs the
//! full struct per object even when trimmed (a `PersistentVolume` is 3.4 KiB
//! before any string), which at thousands of instances is most of the
//! operator's memory; these types are a few hundred bytes.

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

//! Adding or removing one finalizer, without losing anyone else's.

use kube::api::{Api, Patch};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::names::patch_params;

/// Sets (`present`) or clears `finalizer` on `object`. The patch carries the
/// object's resourceVersion, so it fails with a conflict, instead of
/// overwriting, when someone changed the finalizers meanwhile.
pub async fn set<K>(api: &Api<K>, object: &K, finalizer: &str, present: bool) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut finalizers: Vec<&String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let owned = finalizer.to_string();
    if present {
        finalizers.push(&owned);
    }
    let patch = json!({ "metadata": {
        "finalizers": finalizers, "resourceVersion": object.resource_version(),
    }});
    api.patch(&object.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

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
    let add: &[&str] = if present { &[finalizer] } else { &[] };
    replace(api, object, &[finalizer], add).await
}

/// Removes the finalizers `remove` and adds `add`, in one write, with the
/// same conflict check as [`set`].
pub async fn replace<K>(api: &Api<K>, object: &K, remove: &[&str], add: &[&str]) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut finalizers: Vec<&str> = object
        .finalizers()
        .iter()
        .map(String::as_str)
        .filter(|f| !remove.contains(f) && !add.contains(f))
        .collect();
    finalizers.extend_from_slice(add);
    let patch = json!({ "metadata": {
        "finalizers": finalizers, "resourceVersion": object.resource_version(),
    }});
    api.patch(&object.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

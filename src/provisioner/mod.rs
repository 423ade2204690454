//! Dynamic provisioner for the `WaitForFirstConsumer` StorageClass: once the
//! scheduler has picked a node for a claim, creates a node-local persistent
//! volume pinned to that node (reclaim `Retain`, the node agent's finalizer
//! set from birth). It also re-creates a volume object deleted by hand for a
//! claim still bound to it: the data directory was kept, so nothing is lost.
//! It never deletes volumes.

mod claim;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::Api;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::names::{
    ANNOTATION_NAMESPACE_UID, ANNOTATION_PERSISTENCE_ID, ANNOTATION_SELECTED_NODE,
    ANNOTATION_WIPE_MARK, FINALIZER_AGENT, LABEL_APP, LABEL_INSTANCE, LABEL_NAMESPACE, LABEL_NODE,
    LABEL_VOLUME, PersistenceId, post_params, volume_name,
};
use crate::partial::slim_metadata;
use crate::watch::errors_logged;
use crate::{Error, Result};

use self::claim::ClaimRequest;

/// Annotation on volumes: the data directory, relative to the agent's base dir.
pub const ANNOTATION_DIRECTORY: &str = "statefulapp.io/directory";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

pub struct Provisioner {
    pub client: Client,
    /// The `provisioner` field of our StorageClass.
    pub name: String,
    /// Base directory of volumes on every node (the agents' `--base-dir`).
    pub base_dir: String,
    /// Counts volumes created.
    pub provisioned: prometheus_client::metrics::counter::Counter,
    /// Claims provisioned at the same time. Unbounded, a scale-up of
    /// thousands of claims opened a connection to the API server for each
    /// (1,800 at 1,000 apps x 5), and the client keeps idle connections.
    pub max_concurrent: u16,
}

pub async fn run(provisioner: Arc<Provisioner>) {
    let claims: Api<ClaimRequest> = Api::all(provisioner.client.clone());
    let (store, writer) = reflector::store();
    let updates = watcher(claims, watcher::Config::default())
        .default_backoff()
        .modify(slim_claim)
        .reflect(writer)
        .touched_objects();
    let config = controller::Config::default().concurrency(provisioner.max_concurrent);
    Controller::for_stream(errors_logged(updates, "claims"), store)
        .with_config(config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, provisioner)
        .for_each(|_| async {})
        .await;
}

/// Keeps the annotations and labels provisioning reads or copies (of a
/// bound claim, nothing).
fn slim_claim(claim: &mut ClaimRequest) {
    claim.forget_if_bound();
    slim_metadata(&mut claim.metadata, |key| {
        [
            STORAGE_PROVISIONER,
            ANNOTATION_SELECTED_NODE,
            ANNOTATION_PERSISTENCE_ID,
            ANNOTATION_WIPE_MARK,
            ANNOTATION_NAMESPACE_UID,
            LABEL_APP,
            LABEL_INSTANCE,
            LABEL_VOLUME,
        ]
        .contains(&key)
    });
}

fn error_policy(claim: Arc<ClaimRequest>, error: &Error, _: Arc<Provisioner>) -> Requeue {
    tracing::warn!(claim = %claim.name_any(), %error, "provisioning failed, retrying");
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile(claim: Arc<ClaimRequest>, ctx: Arc<Provisioner>) -> Result<Requeue> {
    let ours = claim.annotations().get(STORAGE_PROVISIONER) == Some(&ctx.name);
    if !ours || claim.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let Some(node) = claim.annotations().get(ANNOTATION_SELECTED_NODE) else {
        return Ok(Requeue::await_change()); // the scheduler has not placed it yet
    };
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let bound_to = claim.spec.volume_name.clone();
    let name = match &bound_to {
        Some(name) => name.clone(),
        None => volume_name_for(&claim),
    };
    if volumes.get_opt(&name).await?.is_some() {
        return Ok(Requeue::await_change());
    }
    let volume = volume_for(&claim, &name, node, &ctx)?;
    match volumes.create(&post_params(), &volume).await {
        Ok(_) => {
            ctx.provisioned.inc();
            tracing::info!(volume = %name, %node, "provisioned");
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Requeue::await_change())
}

fn persistence_id(claim: &ClaimRequest) -> Option<PersistenceId> {
    claim
        .annotations()
        .get(ANNOTATION_PERSISTENCE_ID)?
        .parse()
        .ok()
}

fn volume_name_for(claim: &ClaimRequest) -> String {
    match persistence_id(claim) {
        Some(id) => volume_name(&id),
        None => format!("pvc-{}", claim.uid().unwrap_or_default()),
    }
}

/// `<namespace>/<persistenceId>` for StatefulApp claims, else
/// `<namespace>/<claim>-<uid>`: unique, and safe as a path (validated names).
fn directory_for(claim: &ClaimRequest) -> String {
    let ns = claim.namespace().unwrap_or_default();
    match persistence_id(claim) {
        Some(id) => format!("{ns}/{id}"),
        None => format!(
            "{ns}/{}-{}",
            claim.name_any(),
            claim.uid().unwrap_or_default()
        ),
    }
}

fn volume_for(
    claim: &ClaimRequest,
    name: &str,
    node: &str,
    ctx: &Provisioner,
) -> Result<PersistentVolume> {
    let spec = &claim.spec;
    let size = spec
        .resources
        .requests
        .get("storage")
        .ok_or_else(|| Error::Invalid("claim without a storage request".into()))?;
    let mut labels: BTreeMap<String, String> = claim
        .labels()
        .iter()
        .filter(|(k, _)| [LABEL_APP, LABEL_INSTANCE, LABEL_VOLUME].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(
        LABEL_NAMESPACE.into(),
        claim.namespace().unwrap_or_default(),
    );
    labels.insert(LABEL_NODE.into(), node.into());
    let directory = directory_for(claim);
    let mut annotations = BTreeMap::from([
        (
            "pv.kubernetes.io/provisioned-by".to_string(),
            ctx.name.clone(),
        ),
        (ANNOTATION_DIRECTORY.to_string(), directory.clone()),
    ]);
    for key in [
        ANNOTATION_PERSISTENCE_ID,
        ANNOTATION_WIPE_MARK,
        ANNOTATION_NAMESPACE_UID,
    ] {
        if let Some(value) = claim.annotations().get(key) {
            annotations.insert(key.to_string(), value.clone());
        }
    }
    let volume = json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": annotations,
            "finalizers": [FINALIZER_AGENT],
        },
        "spec": {
            "capacity": { "storage": size },
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": spec.storage_class_name,
            "volumeMode": "Filesystem",
            "local": { "path": format!("{}/{directory}", ctx.base_dir.trim_end_matches('/')) },
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace(), "name": claim.name_any(), "uid": claim.uid(),
            },
            "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                { "key": "kubernetes.io/hostname", "operator": "In", "values": [node] },
            ]}]}},
        },
    });
    Ok(serde_json::from_value(volume)?)
}

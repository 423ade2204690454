//! The node agent: one per node. Creates the data directory of each of its
//! node's volumes, holds a finalizer on those volume objects, and destroys a
//! directory only when its volume carries the operator's wipe mark (I1). A
//! volume object deleted without the mark keeps its finalizer and its data:
//! it goes on serving its instance until that instance is wiped.

mod paths;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

pub use self::paths::data_dir;
use crate::names::{ANNOTATION_WIPE_MARK, FINALIZER_AGENT, LABEL_NODE, patch_params};
use crate::provisioner::ANNOTATION_DIRECTORY;
use crate::{Error, Result};

pub struct Agent {
    pub client: Client,
    pub node: String,
    pub base_dir: PathBuf,
}

pub async fn run(agent: Arc<Agent>) {
    let volumes: Api<PersistentVolume> = Api::all(agent.client.clone());
    let mine = watcher::Config::default().labels(&format!("{LABEL_NODE}={}", agent.node));
    Controller::new(volumes, mine)
        .shutdown_on_signal()
        .run(reconcile, error_policy, agent)
        .for_each(|_| async {})
        .await;
}

fn error_policy(pv: Arc<PersistentVolume>, error: &Error, _: Arc<Agent>) -> Requeue {
    tracing::warn!(volume = %pv.name_any(), %error, "node agent failed, retrying");
    Requeue::requeue(Duration::from_secs(2))
}

async fn reconcile(pv: Arc<PersistentVolume>, agent: Arc<Agent>) -> Result<Requeue> {
    let Some(relative) = pv.annotations().get(ANNOTATION_DIRECTORY) else {
        return Ok(Requeue::await_change());
    };
    let dir = data_dir(&agent.base_dir, relative)?;
    let has_finalizer = pv.finalizers().iter().any(|f| f == FINALIZER_AGENT);
    if pv.metadata.deletion_timestamp.is_none() {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        if !has_finalizer {
            set_finalizer(&agent.client, &pv, true).await?;
        }
        return Ok(Requeue::await_change());
    }
    if !has_finalizer {
        return Ok(Requeue::await_change());
    }
    if !pv.annotations().contains_key(ANNOTATION_WIPE_MARK) {
        // Deleted by someone, not wiped: hold the object (and the data)
        // until a wipe comes. The volume keeps serving its instance.
        tracing::warn!(volume = %pv.name_any(), dir = %dir.display(),
            "volume object deleted without a wipe: data and finalizer kept until the instance is wiped");
        return Ok(Requeue::await_change());
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::info!(volume = %pv.name_any(), dir = %dir.display(), "wiped"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path: dir, source }),
    }
    set_finalizer(&agent.client, &pv, false).await?;
    Ok(Requeue::await_change())
}

async fn set_finalizer(client: &Client, pv: &PersistentVolume, present: bool) -> Result<()> {
    let mut finalizers: Vec<String> = pv
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER_AGENT)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER_AGENT.to_string());
    }
    // resourceVersion makes the merge patch conditional: no lost finalizers.
    let patch = json!({ "metadata": {
        "finalizers": finalizers, "resourceVersion": pv.resource_version(),
    }});
    Api::<PersistentVolume>::all(client.clone())
        .patch(&pv.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

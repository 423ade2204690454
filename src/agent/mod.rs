//! The node agent: one per node. Creates the data directory of each of its
//! node's volumes, holds a finalizer on those volume objects, and destroys a
//! directory only when its volume carries the operator's wipe mark (I1). A
//! volume object deleted without the mark keeps its finalizer and its data:
//! it goes on serving its instance until that instance is wiped.

mod paths;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

pub use self::paths::data_dir;
use crate::finalizer;
use crate::metrics::AgentMetrics;
use crate::names::{ANNOTATION_WIPE_MARK, FINALIZER_AGENT, LABEL_NODE};
use crate::provisioner::ANNOTATION_DIRECTORY;
use crate::{Error, Result};

pub struct Agent {
    pub client: Client,
    pub node: String,
    pub base_dir: PathBuf,
    pub metrics: AgentMetrics,
}

/// Runs the agent: the volume reconciler and the orphan scan.
pub async fn run(agent: Arc<Agent>) {
    // The scan never ends; the watch ends on SIGTERM, and so does the agent.
    tokio::select! {
        _ = watch_volumes(agent.clone()) => {}
        _ = scan_for_orphans(agent) => {}
    }
}

async fn watch_volumes(agent: Arc<Agent>) {
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
            finalizer::set(&volumes(&agent), &pv, FINALIZER_AGENT, true).await?;
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
        Ok(()) => {
            agent.metrics.directories_wiped.inc();
            tracing::info!(volume = %pv.name_any(), dir = %dir.display(), "wiped");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path: dir, source }),
    }
    finalizer::set(&volumes(&agent), &pv, FINALIZER_AGENT, false).await?;
    Ok(Requeue::await_change())
}

fn volumes(agent: &Agent) -> Api<PersistentVolume> {
    Api::all(agent.client.clone())
}

/// How often the agent compares its directories with its volume objects.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// Reports data directories without a volume object (never deletes them:
/// only a wipe destroys data). Such directories appear when a volume object
/// lost its finalizer by hand, or a node's disk came from elsewhere.
async fn scan_for_orphans(agent: Arc<Agent>) {
    let mut reported = BTreeSet::new();
    loop {
        match find_orphans(&agent).await {
            Ok(orphans) => {
                agent.metrics.orphaned_directories.set(orphans.len() as i64);
                for dir in orphans.difference(&reported) {
                    tracing::warn!(dir = %dir.display(), "orphaned data directory: no volume object refers to it; kept");
                }
                reported = orphans;
            }
            Err(error) => tracing::warn!(%error, "orphan scan failed"),
        }
        tokio::time::sleep(ORPHAN_SCAN_INTERVAL).await;
    }
}

async fn find_orphans(agent: &Agent) -> Result<BTreeSet<PathBuf>> {
    let selector = ListParams::default().labels(&format!("{LABEL_NODE}={}", agent.node));
    let volumes = Api::<PersistentVolume>::all(agent.client.clone())
        .list(&selector)
        .await?;
    let known: BTreeSet<PathBuf> = volumes
        .items
        .iter()
        .filter_map(|pv| pv.annotations().get(ANNOTATION_DIRECTORY))
        .filter_map(|relative| data_dir(&agent.base_dir, relative).ok())
        .collect();
    agent.metrics.volumes.set(known.len() as i64);
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut orphans = BTreeSet::new();
    for namespace in std::fs::read_dir(&agent.base_dir).map_err(io(&agent.base_dir))? {
        let namespace = namespace.map_err(io(&agent.base_dir))?.path();
        if !namespace.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&namespace).map_err(io(&namespace))? {
            let dir = entry.map_err(io(&namespace))?.path();
            if dir.is_dir() && !known.contains(&dir) {
                orphans.insert(dir);
            }
        }
    }
    Ok(orphans)
}

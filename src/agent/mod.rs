//! The node agent: one per node. Creates the data directory of each of its
//! node's volumes, holds a finalizer on those volume objects, and destroys a
//! directory only when its volume carries the operator's wipe mark (I1). A
//! volume object deleted without the mark keeps its finalizer and its data:
//! it goes on serving its instance until that instance is wiped.
//!
//! A directory is made once, when its volume is new. If it is missing later
//! (a data disk not mounted, see [`disk`]), the agent never makes an empty
//! one in its place: it marks the volume `statefulapp.io/data-missing` with
//! the node and path, publishes a Warning Event, and the instance waits (the
//! kubelet cannot mount a path that is not there).

mod capacity;
mod disk;
mod image;
mod paths;
mod usage;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

pub use self::capacity::Target as CapacityTarget;
pub use self::disk::{Disk, MARKER as DISK_MARKER};
pub use self::image::DATA as IMAGE_DATA;
pub use self::paths::data_dir;
use crate::finalizer;
use crate::metrics::AgentMetrics;
use crate::names::{
    ANNOTATION_DATA_MISSING, ANNOTATION_DIRECTORY_MADE, ANNOTATION_FILESYSTEM,
    ANNOTATION_FILESYSTEM_SIZE, ANNOTATION_SIZE_ENFORCEMENT, ANNOTATION_WIPE_MARK, FINALIZER_AGENT,
    ImageFilesystem, LABEL_NODE, SizeEnforcement, patch_params,
};
use crate::provisioner::ANNOTATION_DIRECTORY;
use crate::{Error, Result};

/// How often a volume whose data is missing, and a base dir that is not the
/// data disk, are looked at again (a disk may be mounted any time).
const RECHECK: Duration = Duration::from_secs(5);

pub struct Agent {
    pub client: Client,
    pub node: String,
    pub base_dir: PathBuf,
    pub metrics: AgentMetrics,
    disk: RwLock<Disk>,
    recorder: Recorder,
    /// Where to publish the node's disk capacity (none: not published).
    capacity: Option<CapacityTarget>,
    /// The node's volume objects, as the volume watch sees them.
    store: OnceLock<Store<PersistentVolume>>,
    /// Bytes each volume's data takes, by volume name, as last measured.
    used: RwLock<BTreeMap<String, u64>>,
    /// Volumes past their size that were warned about.
    over_size: std::sync::Mutex<BTreeSet<String>>,
}

impl Agent {
    /// An agent for `node`; it takes the base dir as its data disk only
    /// after [`run`] checked it.
    pub fn new(
        client: Client,
        node: String,
        base_dir: PathBuf,
        metrics: AgentMetrics,
        capacity: Option<CapacityTarget>,
    ) -> Agent {
        let reporter = Reporter {
            controller: "statefulapp-agent".into(),
            instance: Some(node.clone()),
        };
        Agent {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node,
            base_dir,
            metrics,
            disk: RwLock::new(Disk::NotMounted),
            capacity,
            store: OnceLock::new(),
            used: RwLock::new(BTreeMap::new()),
            over_size: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    /// Publishes a Warning Event about `regarding`.
    async fn warn(
        &self,
        reason: &str,
        note: String,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
    ) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "CheckVolume".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, "could not publish event");
        }
    }

    fn disk(&self) -> Disk {
        *self.disk.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the agent: the base dir check, the volume reconciler and the
/// orphan scan.
pub async fn run(agent: Arc<Agent>) {
    // Decide about the base dir before the first volume is looked at.
    if let Ok(disk) = check_disk(&agent).await {
        *agent.disk.write().unwrap_or_else(PoisonError::into_inner) = disk;
    }
    let publish = async {
        match agent.capacity.clone() {
            Some(target) => capacity::publish(agent.clone(), target).await,
            None => measure_usage(agent.clone()).await,
        }
    };
    // The checks never end; the watch ends on SIGTERM, and so does the agent.
    tokio::select! {
        _ = watch_volumes(agent.clone()) => {}
        _ = watch_disk(agent.clone()) => {}
        _ = publish => {}
        _ = scan_for_orphans(agent.clone()) => {}
    }
}

/// Without a capacity to publish, usage is still measured (metrics).
async fn measure_usage(agent: Arc<Agent>) {
    loop {
        if let Err(error) = capacity::measure(&agent).await {
            tracing::warn!(%error, "measuring volume usage failed");
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Checks the base dir until it is the data disk, then keeps it so.
async fn watch_disk(agent: Arc<Agent>) {
    let mut reported = false;
    loop {
        if agent.disk() == Disk::NotMounted {
            match check_disk(&agent).await {
                Ok(Disk::Ours) => {
                    tracing::info!(base_dir = %agent.base_dir.display(), "base dir is this node's data disk");
                    *agent.disk.write().unwrap_or_else(PoisonError::into_inner) = Disk::Ours;
                }
                Ok(Disk::NotMounted) if !reported => {
                    reported = true;
                    tracing::warn!(base_dir = %agent.base_dir.display(),
                        "base dir is not this node's data disk: no {} and none of the node's volume directories; is the disk mounted? Nothing is created there until it is", DISK_MARKER);
                }
                Ok(Disk::NotMounted) => {}
                Err(error) => tracing::warn!(%error, "checking the base dir failed"),
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}

async fn check_disk(agent: &Agent) -> Result<Disk> {
    let selector = ListParams::default().labels(&format!("{LABEL_NODE}={}", agent.node));
    let volumes = volumes(agent).list(&selector).await?;
    let made: Vec<PathBuf> = volumes
        .items
        .iter()
        .filter(|pv| pv.annotations().contains_key(ANNOTATION_DIRECTORY_MADE))
        .filter_map(|pv| pv.annotations().get(ANNOTATION_DIRECTORY))
        .filter_map(|relative| data_dir(&agent.base_dir, relative).ok())
        .collect();
    disk::check(&agent.base_dir, &agent.node, &made)
}

async fn watch_volumes(agent: Arc<Agent>) {
    let volumes: Api<PersistentVolume> = Api::all(agent.client.clone());
    let mine = watcher::Config::default().labels(&format!("{LABEL_NODE}={}", agent.node));
    let controller = Controller::new(volumes, mine);
    let _ = agent.store.set(controller.store());
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, agent)
        .for_each(|result| async move {
            // For /healthz and /readyz: the watch fails until it delivers.
            match result {
                Err(kube::runtime::controller::Error::QueueError(error)) => {
                    tracing::warn!(%error, "volume watch failed, retrying");
                    crate::watch::health().failed("volumes");
                }
                _ => crate::watch::health().succeeded("volumes"),
            }
        })
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
        return keep_directory(&pv, &agent, &dir).await;
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
    if still_mounted(&pv) {
        // Its claim goes only once no pod uses it (the claim's protection
        // finalizer): until then a container may still be writing, for as
        // long as its termination grace period lasts.
        tracing::info!(volume = %pv.name_any(), "wipe waits until no pod uses the volume");
        return Ok(Requeue::requeue(Duration::from_secs(2)));
    }
    if enforcement(&pv) == SizeEnforcement::Image {
        let mountpoint = dir.clone();
        blocking(move || image::unmount(&mountpoint)).await?;
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            agent.metrics.directories_wiped.inc();
            tracing::info!(volume = %pv.name_any(), dir = %dir.display(), "wiped");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path: dir, source }),
    }
    let image = image::image_path(&dir);
    match std::fs::remove_file(&image) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Io {
                path: image,
                source: e,
            });
        }
        _ => {}
    }
    finalizer::set(&volumes(&agent), &pv, FINALIZER_AGENT, false).await?;
    Ok(Requeue::await_change())
}

/// Whether the volume is still bound to its claim: the claim exists, so a
/// pod may still use the volume.
fn still_mounted(pv: &PersistentVolume) -> bool {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

/// A live volume: its directory exists, or is made now if the volume is
/// new (`statefulapp.io/directory-made` records that it was made), or is
/// reported missing.
async fn keep_directory(
    pv: &PersistentVolume,
    agent: &Agent,
    dir: &std::path::Path,
) -> Result<Requeue> {
    let made_before = pv.annotations().contains_key(ANNOTATION_DIRECTORY_MADE);
    let mode = enforcement(pv);
    let present = match mode {
        SizeEnforcement::None => dir.is_dir(),
        SizeEnforcement::Image => image::image_path(dir).is_file(),
    };
    if present {
        if mode == SizeEnforcement::Image {
            let (mountpoint, size, filesystem) = (
                dir.to_path_buf(),
                crate::capacity::volume_size(pv),
                filesystem(pv),
            );
            blocking(move || {
                std::fs::create_dir_all(&mountpoint).map_err(|source| Error::Io {
                    path: mountpoint.clone(),
                    source,
                })?;
                image::ensure_mounted(&mountpoint)?;
                if !made_before {
                    // A crash between making and recording: finish the making.
                    image::create(&mountpoint, size, filesystem)?;
                }
                Ok(())
            })
            .await?;
            // A size raised since: grow the image and its filesystem while
            // mounted (the instance may be running). What the filesystem
            // spans is recorded only once it grew, so a failed growth is
            // tried again.
            let spans = match filesystem_size(pv) {
                Some(bytes) => bytes,
                None => image::image_size(dir)?,
            };
            if spans < size {
                let mountpoint = dir.to_path_buf();
                if let Err(error) = blocking(move || image::grow(&mountpoint, size)).await {
                    let note = format!(
                        "node {}: growing volume {} to {} failed: {error}",
                        agent.node,
                        pv.name_any(),
                        crate::quantity::human(size)
                    );
                    tracing::warn!("{note}");
                    agent
                        .warn("VolumeGrowFailed", note, &pv.object_ref(&()))
                        .await;
                    return Ok(Requeue::requeue(Duration::from_secs(60)));
                }
                record_filesystem_size(agent, pv, size).await?;
                return Ok(Requeue::await_change()); // the update comes back
            }
            if made_before && filesystem_size(pv).is_none() {
                record_filesystem_size(agent, pv, spans).await?;
                return Ok(Requeue::await_change());
            }
        }
        let has_finalizer = pv.finalizers().iter().any(|f| f == FINALIZER_AGENT);
        if pv.annotations().contains_key(ANNOTATION_DATA_MISSING) {
            tracing::info!(volume = %pv.name_any(), dir = %dir.display(), "data directory is back");
        }
        if !made_before || !has_finalizer || pv.annotations().contains_key(ANNOTATION_DATA_MISSING)
        {
            mark_made(agent, pv, None).await?;
        }
        return Ok(Requeue::await_change());
    }
    let disk = agent.disk();
    if !made_before && disk == Disk::Ours && mode == SizeEnforcement::Image {
        let (mountpoint, size, filesystem) = (
            dir.to_path_buf(),
            crate::capacity::volume_size(pv),
            filesystem(pv),
        );
        blocking(move || image::create(&mountpoint, size, filesystem)).await?;
        mark_made(agent, pv, Some(image::image_size(dir)?)).await?;
        return Ok(Requeue::await_change());
    }
    if !made_before && disk == Disk::Ours {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        mark_made(agent, pv, None).await?;
        return Ok(Requeue::await_change());
    }
    let report = match disk {
        Disk::NotMounted => format!(
            "node {}: {} is missing: the base dir {} is not the node's data disk (no {DISK_MARKER}; is the disk mounted?)",
            agent.node,
            dir.display(),
            agent.base_dir.display()
        ),
        Disk::Ours => format!(
            "node {}: data directory {} is missing (is the data disk mounted?); an empty one is never made in its place",
            agent.node,
            dir.display()
        ),
    };
    if pv.annotations().get(ANNOTATION_DATA_MISSING) != Some(&report) {
        tracing::warn!(volume = %pv.name_any(), "{report}");
        set_data_missing(agent, pv, Some(&report)).await?;
        let event = Event {
            type_: EventType::Warning,
            reason: "DataMissing".into(),
            note: Some(report),
            action: "CheckData".into(),
            secondary: None,
        };
        if let Err(error) = agent.recorder.publish(&event, &pv.object_ref(&())).await {
            tracing::warn!(%error, "could not publish event");
        }
    }
    Ok(Requeue::requeue(RECHECK))
}

/// Records on the volume that its directory exists on the node: the
/// agent's finalizer, `directory-made`, no `data-missing`, and for a new
/// image the bytes its filesystem spans. One patch, made only to the
/// object that was read (its uid). It adds the finalizer (the provisioner
/// makes volumes with it) only to the version read, so as not to drop
/// someone else's: otherwise it carries no version, and the binder's
/// writes to a new volume do not make it fail.
async fn mark_made(agent: &Agent, pv: &PersistentVolume, spans: Option<u64>) -> Result<()> {
    let mut annotations =
        json!({ ANNOTATION_DIRECTORY_MADE: agent.node, ANNOTATION_DATA_MISSING: null });
    if let Some(bytes) = spans {
        annotations[ANNOTATION_FILESYSTEM_SIZE] = json!(bytes.to_string());
    }
    let mut patch = json!({ "metadata": { "uid": pv.uid(), "annotations": annotations } });
    let finalizers = pv.finalizers();
    if !finalizers.iter().any(|f| f == FINALIZER_AGENT) {
        // A merge patch replaces the whole list: only on the version read.
        let mut finalizers = finalizers.to_vec();
        finalizers.push(FINALIZER_AGENT.to_string());
        patch["metadata"]["finalizers"] = json!(finalizers);
        patch["metadata"]["resourceVersion"] = json!(pv.resource_version());
    }
    volumes(agent)
        .patch(&pv.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn set_data_missing(
    agent: &Agent,
    pv: &PersistentVolume,
    report: Option<&str>,
) -> Result<()> {
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_DATA_MISSING: report } } });
    volumes(agent)
        .patch(&pv.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Records on the volume the bytes its filesystem spans (made or grown to):
/// the provisioner completes a growth when it reaches the capacity.
async fn record_filesystem_size(agent: &Agent, pv: &PersistentVolume, bytes: u64) -> Result<()> {
    let patch =
        json!({ "metadata": { "annotations": { ANNOTATION_FILESYSTEM_SIZE: bytes.to_string() } } });
    volumes(agent)
        .patch(&pv.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The bytes the volume's filesystem spans, as its agent recorded.
fn filesystem_size(pv: &PersistentVolume) -> Option<u64> {
    pv.annotations()
        .get(ANNOTATION_FILESYSTEM_SIZE)
        .and_then(|b| b.parse().ok())
}

/// The filesystem of an `image` volume (its provisioner chose).
fn filesystem(pv: &PersistentVolume) -> ImageFilesystem {
    pv.annotations()
        .get(ANNOTATION_FILESYSTEM)
        .and_then(|fs| fs.parse().ok())
        .unwrap_or_default()
}

/// How the volume's size is enforced on the node (its provisioner chose).
fn enforcement(pv: &PersistentVolume) -> SizeEnforcement {
    pv.annotations()
        .get(ANNOTATION_SIZE_ENFORCEMENT)
        .and_then(|mode| mode.parse().ok())
        .unwrap_or(SizeEnforcement::None)
}

/// Runs filesystem work (mkfs, mount, resize) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Agent(format!("filesystem work stopped: {e}")))?
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

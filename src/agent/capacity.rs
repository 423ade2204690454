//! The agent's side of [`crate::capacity`]: measures its base dir and its
//! volumes, and publishes the node's `CSIStorageCapacity` when it changed.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::{Agent, Disk, data_dir, enforcement, image, usage};
use crate::capacity::{self, Room};
use crate::metrics::VolumeLabels;
use crate::names::SizeEnforcement;
use crate::names::{ANNOTATION_PERSISTENCE_ID, FIELD_MANAGER, LABEL_NAMESPACE};
use crate::provisioner::ANNOTATION_DIRECTORY;
use crate::{Error, Result};

/// How often the reservations are summed (from the watched volumes) and
/// a change published: new volumes count within this.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(2);
/// How often the disk and each volume's usage are measured (a walk of
/// each volume's files).
const MEASURE_INTERVAL: Duration = Duration::from_secs(30);

/// Where the agent publishes its node's capacity.
#[derive(Clone, Debug)]
pub struct Target {
    /// Namespace of the `CSIStorageCapacity` objects (the chart's).
    pub namespace: String,
    /// The StorageClass the capacity is for.
    pub storage_class: String,
}

/// One of the node's volumes, as its object says.
pub(super) struct Volume {
    pub name: String,
    pub size: u64,
    pub labels: VolumeLabels,
    pub dir: Option<std::path::PathBuf>,
    pub enforcement: SizeEnforcement,
    /// The usage recorded on the volume object.
    pub recorded_used: Option<u64>,
    pub reference: k8s_openapi::api::core::v1::ObjectReference,
}

pub(super) fn volumes(agent: &Agent) -> Vec<Volume> {
    let Some(store) = agent.store.get() else {
        return Vec::new();
    };
    store.state().iter().map(|pv| volume(agent, pv)).collect()
}

fn volume(agent: &Agent, pv: &PersistentVolume) -> Volume {
    let size = crate::capacity::volume_size(pv);
    Volume {
        name: pv.name_any(),
        size,
        labels: VolumeLabels {
            volume: pv.name_any(),
            namespace: pv
                .labels()
                .get(LABEL_NAMESPACE)
                .cloned()
                .unwrap_or_default(),
            persistence_id: pv
                .annotations()
                .get(ANNOTATION_PERSISTENCE_ID)
                .cloned()
                .unwrap_or_default(),
        },
        dir: pv
            .annotations()
            .get(ANNOTATION_DIRECTORY)
            .and_then(|relative| data_dir(&agent.base_dir, relative).ok()),
        enforcement: enforcement(pv),
        recorded_used: pv
            .annotations()
            .get(capacity::ANNOTATION_USED)
            .and_then(|u| u.parse().ok()),
        reference: {
            use kube::Resource;
            pv.object_ref(&())
        },
    }
}

/// Measures what each volume's data takes, records it (metrics, and the
/// agent's table read by the publisher) and returns the disk's room.
pub(super) async fn measure(agent: &Arc<Agent>) -> Result<Room> {
    let volumes = volumes(agent);
    let base = agent.base_dir.clone();
    let dirs: Vec<_> = volumes
        .iter()
        .map(|v| (v.name.clone(), v.dir.clone(), v.enforcement))
        .collect();
    let (free, used) = tokio::task::spawn_blocking(move || {
        let mut used = BTreeMap::new();
        for (name, dir, mode) in dirs {
            // What the volume takes from the node's disk: an image's
            // allocated blocks, or a directory's files.
            let bytes = match (dir, mode) {
                (Some(dir), SizeEnforcement::Image) => image::allocated(&dir)?,
                (Some(dir), SizeEnforcement::None) => {
                    usage::allocated(&dir).map_err(|source| Error::Io { path: dir, source })?
                }
                (None, _) => 0,
            };
            used.insert(name, bytes);
        }
        let free = usage::free(&base).map_err(|source| Error::Io { path: base, source })?;
        Ok::<_, Error>((free, used))
    })
    .await
    .map_err(|e| Error::Agent(format!("measuring the disk: {e}")))??;
    let used_by_volumes = used.values().fold(0u64, |a, b| a.saturating_add(*b));
    agent.metrics.volume_used.clear();
    agent.metrics.volume_size.clear();
    for volume in &volumes {
        let bytes = used.get(&volume.name).copied().unwrap_or(0);
        agent
            .metrics
            .volume_used
            .get_or_create(&volume.labels)
            .set(bytes as i64);
        agent
            .metrics
            .volume_size
            .get_or_create(&volume.labels)
            .set(volume.size as i64);
        record_usage(agent, volume, bytes).await;
    }
    *agent.used.write().unwrap_or_else(PoisonError::into_inner) = used;
    Ok(Room {
        free,
        used_by_volumes,
    })
}

/// Records a volume's usage on its object (read into the app's status)
/// when it moved by a mebibyte and 1% of its size, and warns once when a
/// volume whose size is not enforced passes it.
async fn record_usage(agent: &Agent, volume: &Volume, bytes: u64) {
    let recorded: Option<u64> = volume.recorded_used;
    let step = (volume.size / 100).max(1 << 20);
    let over = volume.enforcement == SizeEnforcement::None && bytes > volume.size;
    let crossed = recorded.is_some_and(|r| (r > volume.size) != (bytes > volume.size));
    if recorded.is_none_or(|r| r.abs_diff(bytes) >= step) || crossed {
        let patch = serde_json::json!({ "metadata": { "annotations": {
            capacity::ANNOTATION_USED: bytes.to_string(),
        }}});
        let api: Api<PersistentVolume> = Api::all(agent.client.clone());
        if let Err(error) = api
            .patch(
                &volume.name,
                &crate::names::patch_params(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(volume = %volume.name, %error, "recording usage failed");
        }
    }
    let first = {
        let mut warned = agent
            .over_size
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !over {
            warned.remove(&volume.name);
            return;
        }
        warned.insert(volume.name.clone())
    };
    if !first {
        return;
    }
    let note = format!(
        "volume {} ({}) on node {} holds {}, past its size {}: its size is not enforced on this node (agent.sizeEnforcement none)",
        volume.name,
        volume.labels.persistence_id,
        agent.node,
        crate::quantity::human(bytes),
        crate::quantity::human(volume.size)
    );
    tracing::warn!("{note}");
    agent.warn("VolumeOverSize", note, &volume.reference).await;
}

/// Publishes the node's capacity whenever it changes; measures the disk
/// every [`MEASURE_INTERVAL`]. Never ends.
pub(super) async fn publish(agent: Arc<Agent>, target: Target) {
    let api: Api<CSIStorageCapacity> = Api::namespaced(agent.client.clone(), &target.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut room: Option<(Instant, u64)> = None;
    let mut published: Option<(u64, u64, String)> = None;
    // The node's hostname label, read with each measurement.
    let mut hostname: Option<String> = None;
    loop {
        if let Some(store) = agent.store.get()
            && store.wait_until_ready().await.is_ok()
        {
            if room.is_none_or(|(at, _)| at.elapsed() >= MEASURE_INTERVAL) {
                match crate::hostname::lookup(&agent.client, &agent.node).await {
                    Ok(value) => hostname = Some(value),
                    Err(error) => {
                        tracing::warn!(%error, "reading the node's hostname label failed")
                    }
                }
                match measure(&agent).await {
                    // A base dir that is not the data disk takes no volumes.
                    Ok(measured) if agent.disk() == Disk::Ours => {
                        room = Some((Instant::now(), measured.for_volumes()));
                    }
                    Ok(_) => room = Some((Instant::now(), 0)),
                    Err(error) => tracing::warn!(%error, "measuring the disk failed"),
                }
            }
            if let (Some((_, room)), Some(hostname)) = (room, &hostname) {
                let reserved = reserved(&agent);
                agent.metrics.room.set(room as i64);
                agent.metrics.reserved.set(reserved as i64);
                let now = (room, reserved, hostname.clone());
                if published.as_ref() != Some(&now) {
                    let object = capacity::object(
                        &target.storage_class,
                        &agent.node,
                        hostname,
                        room,
                        reserved,
                    );
                    let name = capacity::object_name(&target.storage_class, &agent.node);
                    match api.patch(&name, &params, &Patch::Apply(&object)).await {
                        Ok(_) => {
                            tracing::info!(
                                room,
                                reserved,
                                available = capacity::available(room, reserved),
                                "published disk capacity"
                            );
                            published = Some(now);
                        }
                        Err(error) => tracing::warn!(%error, "publishing disk capacity failed"),
                    }
                }
            }
        }
        tokio::time::sleep(PUBLISH_INTERVAL).await;
    }
}

/// What the node's volumes reserve: each its size, or its last measured
/// usage where larger.
fn reserved(agent: &Agent) -> u64 {
    let used = agent.used.read().unwrap_or_else(PoisonError::into_inner);
    volumes(agent)
        .iter()
        .map(|v| capacity::reservation(v.size, used.get(&v.name).copied().unwrap_or(0)))
        .fold(0, u64::saturating_add)
}

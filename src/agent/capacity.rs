//! The agent's side of [`crate::capacity`]: measures its base dir and its
//! volumes, and publishes the node's `CSIStorageCapacity` when it changed.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use super::{Agent, Disk, data_dir, usage};
use crate::capacity::{self, Room};
use crate::metrics::VolumeLabels;
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
}

pub(super) fn volumes(agent: &Agent) -> Vec<Volume> {
    let Some(store) = agent.store.get() else {
        return Vec::new();
    };
    store.state().iter().map(|pv| volume(agent, pv)).collect()
}

fn volume(agent: &Agent, pv: &PersistentVolume) -> Volume {
    let size = pv
        .spec
        .as_ref()
        .and_then(|spec| spec.capacity.as_ref())
        .and_then(|capacity| capacity.get("storage"))
        .and_then(|q| crate::quantity::bytes(&q.0))
        .unwrap_or(0);
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
    }
}

/// Measures what each volume's data takes, records it (metrics, and the
/// agent's table read by the publisher) and returns the disk's room.
pub(super) async fn measure(agent: &Arc<Agent>) -> Result<Room> {
    let volumes = volumes(agent);
    let base = agent.base_dir.clone();
    let dirs: Vec<(String, Option<std::path::PathBuf>)> = volumes
        .iter()
        .map(|v| (v.name.clone(), v.dir.clone()))
        .collect();
    let (free, used) = tokio::task::spawn_blocking(move || {
        let mut used = BTreeMap::new();
        for (name, dir) in dirs {
            let bytes = match dir {
                Some(dir) => {
                    usage::allocated(&dir).map_err(|source| Error::Io { path: dir, source })?
                }
                None => 0,
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
    }
    *agent.used.write().unwrap_or_else(PoisonError::into_inner) = used;
    Ok(Room {
        free,
        used_by_volumes,
    })
}

/// Publishes the node's capacity whenever it changes; measures the disk
/// every [`MEASURE_INTERVAL`]. Never ends.
pub(super) async fn publish(agent: Arc<Agent>, target: Target) {
    let api: Api<CSIStorageCapacity> = Api::namespaced(agent.client.clone(), &target.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut room: Option<(Instant, u64)> = None;
    let mut published: Option<(u64, u64)> = None;
    loop {
        if let Some(store) = agent.store.get()
            && store.wait_until_ready().await.is_ok()
        {
            if room.is_none_or(|(at, _)| at.elapsed() >= MEASURE_INTERVAL) {
                match measure(&agent).await {
                    // A base dir that is not the data disk takes no volumes.
                    Ok(measured) if agent.disk() == Disk::Ours => {
                        room = Some((Instant::now(), measured.for_volumes()));
                    }
                    Ok(_) => room = Some((Instant::now(), 0)),
                    Err(error) => tracing::warn!(%error, "measuring the disk failed"),
                }
            }
            if let Some((_, room)) = room {
                let reserved = reserved(&agent);
                agent.metrics.room.set(room as i64);
                agent.metrics.reserved.set(reserved as i64);
                if published != Some((room, reserved)) {
                    let object =
                        capacity::object(&target.storage_class, &agent.node, room, reserved);
                    let name = capacity::object_name(&target.storage_class, &agent.node);
                    match api.patch(&name, &params, &Patch::Apply(&object)).await {
                        Ok(_) => {
                            tracing::info!(
                                room,
                                reserved,
                                available = capacity::available(room, reserved),
                                "published disk capacity"
                            );
                            published = Some((room, reserved));
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

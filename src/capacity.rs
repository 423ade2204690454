//! Disk capacity of a node, published where the stock kube-scheduler reads
//! it: one `CSIStorageCapacity` per node and StorageClass. kube-scheduler's
//! volume binding checks those objects for any provisioner that has a
//! `CSIDriver` object of its name with `storageCapacity: true` (the chart
//! makes one), so a `WaitForFirstConsumer` claim is placed only on a node
//! whose published capacity holds it.
//!
//! Each node agent measures its base dir and publishes:
//! - `room` (annotation [`ANNOTATION_ROOM`]): the space the node's volumes
//!   may take in all, that is the filesystem's free space plus what the
//!   volumes already use. It changes only when something else on the disk
//!   grows or shrinks, not when a volume writes.
//! - `capacity`: `room` less what the node's volumes reserve (each its
//!   size, or its usage when that is larger): what a new volume may have.
//!
//! The provisioner reads `room` and recounts the reservations itself from
//! the volume objects before it makes a volume, one claim per node at a
//! time, so it never overcommits a node even when the scheduler decided on
//! a capacity published a moment too early.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::names::LABEL_NODE;

/// Annotation on a published capacity: the bytes the node's volumes may
/// take in all (free space plus what they use now).
pub const ANNOTATION_ROOM: &str = "statefulapp.io/room";
/// Annotation on a published capacity: the bytes the node's volumes
/// reserve (the sum of their sizes, or of their usage where larger).
pub const ANNOTATION_RESERVED: &str = "statefulapp.io/reserved";
/// Annotation on a volume, written by its node's agent: the bytes its data
/// takes on the node, as last measured.
pub const ANNOTATION_USED: &str = "statefulapp.io/used-bytes";

/// The label kube-scheduler matches a capacity's node topology against;
/// the provisioner pins volumes with the same one (see [`crate::hostname`]).
pub use crate::hostname::LABEL_HOSTNAME;

/// Name of the capacity object of `node` for `class`: `<class>.<node>`
/// (both DNS subdomains, so is this) unless too long, then hashed.
pub fn object_name(class: &str, node: &str) -> String {
    let name = format!("{class}.{node}");
    if name.len() <= 253 {
        return name;
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    format!("sapp-capacity-{}", &digest[..32])
}

/// A volume's size in bytes (`spec.capacity.storage`; 0 if unreadable).
pub fn volume_size(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> u64 {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.capacity.as_ref())
        .and_then(|capacity| capacity.get("storage"))
        .and_then(|q| crate::quantity::bytes(&q.0))
        .unwrap_or(0)
}

/// What one volume reserves: its size, or what it uses if more (a volume
/// whose size is not enforced may pass it).
pub fn reservation(size: u64, used: u64) -> u64 {
    size.max(used)
}

/// What is left for new volumes on a node.
pub fn available(room: u64, reserved: u64) -> u64 {
    room.saturating_sub(reserved)
}

/// A node's disk, as one measurement saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Free bytes of the base dir's filesystem (for unprivileged users:
    /// blocks kept for root are not counted).
    pub free: u64,
    /// Bytes the node's volumes take now (their data, or their images'
    /// allocated blocks).
    pub used_by_volumes: u64,
}

impl Room {
    /// The bytes the node's volumes may take in all.
    pub fn for_volumes(self) -> u64 {
        self.free.saturating_add(self.used_by_volumes)
    }
}

/// The `CSIStorageCapacity` an agent publishes, for server-side apply:
/// for the node that carries `hostname` (see [`crate::hostname`]).
pub fn object(class: &str, node: &str, hostname: &str, room: u64, reserved: u64) -> Value {
    let labels = BTreeMap::from([
        (LABEL_NODE, node),
        ("app.kubernetes.io/managed-by", "statefulapp-operator"),
    ]);
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIStorageCapacity",
        "metadata": {
            "name": object_name(class, node),
            "labels": labels,
            "annotations": {
                ANNOTATION_ROOM: room.to_string(),
                ANNOTATION_RESERVED: reserved.to_string(),
            },
        },
        "storageClassName": class,
        "nodeTopology": { "matchLabels": { LABEL_HOSTNAME: hostname } },
        "capacity": available(room, reserved).to_string(),
    })
}

/// Why the provisioner refuses a claim on a node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "node {node} has no published disk capacity for StorageClass {class} (is its node agent running?)"
    )]
    NotPublished { node: String, class: String },
    #[error(
        "node {node} has {} left for volumes ({} in all, {} reserved); the claim asks {}",
        crate::quantity::human(available(*room, *reserved)),
        crate::quantity::human(*room),
        crate::quantity::human(*reserved),
        crate::quantity::human(*request)
    )]
    NoRoom {
        node: String,
        room: u64,
        reserved: u64,
        request: u64,
    },
}

/// Whether a volume of `request` bytes fits on `node`, given its published
/// `room` (None: nothing published) and the reservations of its volumes.
pub fn check(
    node: &str,
    class: &str,
    room: Option<u64>,
    reservations: impl IntoIterator<Item = u64>,
    request: u64,
) -> Result<(), Refusal> {
    let Some(room) = room else {
        return Err(Refusal::NotPublished {
            node: node.into(),
            class: class.into(),
        });
    };
    let reserved: u64 = reservations.into_iter().fold(0, u64::saturating_add);
    if reserved.saturating_add(request) > room {
        return Err(Refusal::NoRoom {
            node: node.into(),
            room,
            reserved,
            request,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn a_volume_that_fits_is_accepted() {
        assert_eq!(
            check("n", "c", Some(1000 * MI), [300 * MI, 200 * MI], 500 * MI),
            Ok(())
        );
    }

    #[test]
    fn a_volume_past_the_room_is_refused_with_the_numbers() {
        let refusal = check("n1", "c", Some(1000 * MI), [600 * MI], 500 * MI).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "node n1 has 400Mi left for volumes (1000Mi in all, 600Mi reserved); the claim asks 500Mi"
        );
    }

    #[test]
    fn a_node_without_published_capacity_takes_nothing() {
        assert!(matches!(
            check("n1", "c", None, [], 1),
            Err(Refusal::NotPublished { .. })
        ));
    }

    #[test]
    fn a_volume_over_its_size_reserves_its_usage() {
        assert_eq!(reservation(100, 150), 150);
        assert_eq!(reservation(100, 10), 100);
    }

    #[test]
    fn the_published_capacity_is_the_room_less_the_reservations() {
        let published = object("statefulapp-local", "node-1", "host-1", 1000, 300);
        assert_eq!(published["capacity"], "700");
        assert_eq!(published["metadata"]["name"], "statefulapp-local.node-1");
        assert_eq!(
            published["nodeTopology"]["matchLabels"][LABEL_HOSTNAME],
            "host-1"
        );
        assert_eq!(object("c", "n", "n", 100, 300)["capacity"], "0");
    }

    #[test]
    fn long_names_are_hashed_and_stay_valid() {
        let node = "n".repeat(250);
        let name = object_name("statefulapp-local", &node);
        assert!(name.len() <= 253);
        assert_ne!(name, object_name("statefulapp-local", &"m".repeat(250)));
    }
}

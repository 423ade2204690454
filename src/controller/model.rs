//! The planner's input model: the observed state of one StatefulApp, as
//! plain data ([`Observed`], [`AppView`], [`InstanceView`], [`PodView`], ...).
//! Built by [`super::observe`] from the caches' entries; rebuilt from
//! scratch on every reconcile (nothing is remembered between reconciles).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use uuid::Uuid;

use crate::api::{KillSelection, NodeLossPolicy};

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub app: AppView,
    /// Every instance with at least one claim or volume, by uuid.
    pub instances: BTreeMap<Uuid, InstanceView>,
    /// Nodes that exist and are Ready.
    pub ready_nodes: BTreeSet<String>,
    /// Nodes that exist (Ready or not).
    pub known_nodes: BTreeSet<String>,
    /// For nodes that exist but are not Ready: since when.
    pub not_ready_since: BTreeMap<String, Timestamp>,
    /// Volumes detached from instances replaced after a node loss: kept.
    pub orphaned_volumes: Vec<OrphanedVolume>,
    /// The uid of the app's namespace, if known.
    pub namespace_uid: Option<String>,
    /// Volumes of the app's name made in another namespace object (one
    /// deleted since): kept, never used, reported.
    pub foreign_volumes: Vec<ForeignVolume>,
    /// Volumes adopted from an earlier namespace on the user's request.
    pub adopting: BTreeSet<String>,
    /// Pods with the app's labels that the app does not control: left alone.
    pub lookalike_pods: Vec<String>,
    /// Ready nodes an instance pod of the app may be bound to directly
    /// (not cordoned, taints tolerated, no node selection in the template).
    pub direct_nodes: BTreeSet<String>,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForeignVolume {
    pub name: String,
    /// The uid of the namespace it was made in.
    pub namespace_uid: String,
}

/// The parts of the StatefulApp the planner needs.
#[derive(Clone, Debug, PartialEq)]
pub struct AppView {
    pub name: String,
    pub desired: usize,
    pub volumes: Vec<String>,
    /// Each volume's `size` in bytes: claims asking for less are grown.
    pub volume_sizes: BTreeMap<String, u64>,
    pub template_hash: String,
    pub kill_selection: KillSelection,
    pub minimum_health_capacity: f64,
    pub node_loss: NodeLossPolicy,
    /// Instance uuids named by a valid `statefulapp.io/wipe` annotation.
    pub wipe_requested: BTreeSet<Uuid>,
    /// The app is being deleted with `wipe-on-delete`: wipe everything.
    pub wipe_all: bool,
    /// Stopped instances keep their resources reserved on their node.
    pub hold_resources: bool,
    /// Hash of what a reservation of the current template holds.
    pub reservation_hash: String,
    /// What a reservation of the current template holds (for status).
    pub reserved_resources: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrphanedVolume {
    pub instance: Uuid,
    pub volume: String,
    pub object: VolumeView,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct InstanceView {
    pub uuid: Uuid,
    /// Creation of its oldest claim or volume: the instance's age.
    pub created: Option<Timestamp>,
    /// The node its volumes are pinned to, once placed.
    pub node: Option<String>,
    pub claims: BTreeMap<String, ClaimView>,
    pub volumes: BTreeMap<String, VolumeView>,
    pub pod: Option<PodView>,
    /// The pod holding its resources while it is stopped.
    pub reservation: Option<ReservationView>,
}

impl InstanceView {
    /// Some claim asks for more than it holds: a volume is growing.
    pub fn growing(&self) -> bool {
        self.claims
            .values()
            .any(|c| matches!((c.requested, c.capacity), (Some(r), Some(c)) if r > c))
    }

    /// A wipe began: some claim or volume carries the operator's wipe mark.
    pub fn wiping(&self) -> bool {
        self.claims.values().any(|c| c.wipe_marked) || self.volumes.values().any(|v| v.wipe_marked)
    }

    /// Being replaced after a node loss: its claims carry the orphan mark.
    pub fn orphaning(&self) -> bool {
        self.claims.values().any(|c| c.orphan_marked)
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ClaimView {
    pub name: String,
    pub bound_volume: Option<String>,
    /// Bytes the claim asks for (`spec.resources.requests.storage`).
    pub requested: Option<u64>,
    /// Bytes it holds once bound (`status.capacity.storage`).
    pub capacity: Option<u64>,
    pub wipe_marked: bool,
    pub orphan_marked: bool,
    pub deleting: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct VolumeView {
    pub name: String,
    pub node: Option<String>,
    /// The claim its `claimRef` names (namespace implied), if any.
    pub claim_ref: Option<String>,
    /// Whether `claimRef` carries the uid of a claim that no longer exists.
    pub claim_ref_stale: bool,
    pub wipe_marked: bool,
    pub orphan_marked: bool,
    pub deleting: bool,
    /// The node agent's report that the data directory is missing.
    pub data_missing: Option<String>,
    /// Bytes the volume takes on its node, as its agent last recorded.
    pub used: Option<u64>,
    /// Whether the volume's size is enforced on its node.
    pub size_enforced: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodView {
    pub name: String,
    pub template_hash: String,
    pub node: Option<String>,
    pub running: bool,
    pub ready: bool,
    /// The pod ended (Succeeded or Failed) and must be replaced.
    pub finished: bool,
    pub deleting: bool,
    pub started_at: Option<Timestamp>,
    /// The kubelet refused it for want of a resource (`OutOfcpu`, ...).
    pub refused: Option<String>,
    /// The scheduler found no node for it.
    pub unschedulable: Option<Unschedulable>,
}

/// The scheduler's verdict on a pod it found no node for (its
/// `PodScheduled` condition, reason `Unschedulable`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Unschedulable {
    /// When the scheduler first said so.
    pub since: Option<Timestamp>,
    /// Why, as it says it ("0/3 nodes are available: 3 Insufficient cpu...").
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ReservationView {
    pub name: String,
    /// Bound to its node (by kube-scheduler).
    pub placed: bool,
    pub running: bool,
    pub hash: String,
    pub deleting: bool,
    /// Made to win back capacity the kubelet refused the instance's pod.
    pub reclaiming: bool,
    pub created: Option<Timestamp>,
}

//! What the operator observed: one record per instance, including stopped
//! ones, rebuilt from the cluster on every reconcile (status can be deleted
//! without losing anything).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatefulAppStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Instances whose pod runs (scale subresource `status.replicas`).
    #[serde(default)]
    pub running: i32,
    /// Instances kept reserved without a pod.
    #[serde(default)]
    pub stopped: i32,
    /// Running instances whose pod is Ready.
    #[serde(default)]
    pub ready: i32,
    /// Label selector of the app's pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Every known instance, running or not, oldest first.
    #[serde(default)]
    pub instances: Vec<InstanceStatus>,
    /// Volumes of instances replaced after a node loss: kept, never destroyed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned_volumes: Vec<VolumeStatus>,
    /// Instances wiped on request (newest last, at most 100): their ids may
    /// stay in the wipe annotation without being reported as unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wiped_instances: Vec<String>,
    /// `Ready`, `Reconciling` and `Stalled` (as kstatus and Flux read them), `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// `<app>.<uuid>`, like a Marathon task id.
    pub id: String,
    /// The node holding the instance's volumes (absent until first placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub state: InstanceState,
    /// When its current pod started running; absent while stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Whether the current pod is Ready.
    #[serde(default)]
    pub ready: bool,
    pub volumes: Vec<VolumeStatus>,
    /// The resources held on its node while it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationStatus>,
}

/// A stopped instance's reservation: a pod of the pause image that holds
/// the instance's resource requests on its node.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReservationStatus {
    /// The reservation pod (`kubectl describe node` lists it).
    pub pod: String,
    pub state: ReservationState,
    /// What it holds: the instance pod's requests (`cpu`, `memory`, ...).
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, String>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationState {
    /// Placed on the node: the resources are held.
    Held,
    /// Waiting to be placed (for room, preempting ordinary pods if it must).
    Pending,
    /// Being released (the instance starts, or the reservation changes).
    Releasing,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Placed or being placed; its pod is not running yet.
    Staging,
    Running,
    /// Reserved without a pod.
    Stopped,
    /// Its node is NotReady or gone.
    Unreachable,
    /// Being destroyed on request.
    Wiping,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    pub name: String,
    /// `<app>#<volume>#<uuid>`.
    pub persistence_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<String>,
    pub claim: String,
    pub size: String,
    /// What the volume's data takes on its node, as its node agent last
    /// measured it (for a volume of `image` mode, its image's blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
}

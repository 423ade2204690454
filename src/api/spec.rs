//! The `StatefulApp` custom resource: what the user asks for.
//!
//! Every rule a user can break is checked by the API server itself (OpenAPI
//! schema and CEL rules), so `kubectl apply` of a bad object fails at once.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::StatefulAppStatus;
use super::template::PodTemplate;

/// Most instances an app may ask for (`spec.instances`).
pub const MAX_INSTANCES: i32 = 1000;
/// Most volumes an instance may have (`spec.volumes`).
pub const MAX_VOLUMES: usize = 16;
/// Most volumes an app may have in all (`instances` x `volumes`): the
/// status lists each, and must stay well under etcd's 1.5 MiB object
/// limit (a test measures the largest allowed app's status).
pub const MAX_APP_VOLUMES: i32 = 1000;

/// A Marathon-style stateful ("resident") app: each instance owns node-local
/// persistent volumes and keeps its node and its data across stop, restart
/// and scale-to-zero, until a wipe is requested.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "statefulapp.io",
    version = "v1alpha1",
    kind = "StatefulApp",
    namespaced,
    shortname = "sapp",
    category = "all",
    status = "StatefulAppStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.instances",
        status_replicas_path = ".status.running",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.instances"),
    printcolumn(name = "Running", type_ = "integer", json_path = ".status.running"),
    printcolumn(name = "Stopped", type_ = "integer", json_path = ".status.stopped"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("a StatefulApp name must be at most 40 characters, so that instance and volume names derived from it stay valid"),
    validation = Rule::new("self.spec.instances * size(self.spec.volumes) <= 1000").message("instances x volumes must be at most 1000 (the status lists every volume and must stay small): use fewer instances or volumes, or more apps"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("a StatefulApp name must be a DNS label starting with a letter (lowercase letters, digits, '-')")
)]
#[serde(rename_all = "camelCase")]
pub struct StatefulAppSpec {
    /// How many instances should run. Instances beyond it are stopped, not
    /// deleted: they keep their node and volumes until wiped. At most
    /// 1000, and 1000 volumes in all (instances x volumes).
    #[schemars(range(min = 0, max = 1000))]
    pub instances: i32,

    /// The pod each instance runs. Volumes of `volumes` are added to it.
    pub template: PodTemplate,

    /// Persistent local volumes, created once per instance on its node.
    /// Immutable after creation, except that a volume's `size` may grow.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        validation = Rule::new("self.map(v, v.name) == oldSelf.map(v, v.name) && self.all(v, oldSelf.exists(o, o.name == v.name && o.mountPath == v.mountPath && has(o.containers) == has(v.containers) && (!has(o.containers) || o.containers == v.containers)))").message("volumes are immutable except for growing their size: create a new StatefulApp to change them"),
        validation = Rule::new("self.all(v, oldSelf.exists(o, o.name == v.name && (!isQuantity(o.size) || !isQuantity(v.size) || quantity(v.size).compareTo(quantity(o.size)) >= 0)))").message("a volume's size may grow, never shrink"),
        validation = Rule::new("self.all(v, self.exists_one(w, w.name == v.name))").message("volume names must be unique"),
        validation = Rule::new("self.all(v, self.exists_one(w, w.mountPath == v.mountPath))").message("volume mountPaths must be unique")
    )]
    pub volumes: Vec<VolumeSpec>,

    /// Which running instances stop first when `instances` goes down.
    #[serde(default)]
    pub kill_selection: KillSelection,

    /// How a template change rolls over the instances.
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,

    /// What to do with an instance whose node is lost.
    #[serde(default)]
    pub node_loss_policy: NodeLossPolicy,

    /// What a stopped instance keeps on its node besides its volumes.
    #[serde(default)]
    pub reservation: Reservation,

    /// Voluntary disruptions (drains, evictions) the app allows at once:
    /// with it, the operator keeps a PodDisruptionBudget of the app's
    /// instance pods; without it, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<Disruption>,
}

/// How many instance pods a drain or an eviction may take down at once.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// Instance pods that may be unavailable at once through voluntary
    /// disruptions (0: none may be evicted; a drain then waits).
    #[schemars(range(min = 0, max = 1000))]
    pub max_unavailable: i32,
}

/// Marathon reserves everything a resident task needs, so that it can be
/// relaunched on its node: by default a stopped instance keeps its CPU,
/// memory and extended resources there, held by a reservation pod.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    #[serde(default)]
    pub resources: ReservedResources,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReservedResources {
    /// A stopped instance's resource requests stay held on its node (a
    /// reservation pod of the pause image, which ordinary pods cannot
    /// preempt); its restart takes them over without a scheduling round.
    #[default]
    Hold,
    /// A stopped instance keeps only its volumes; its restart waits for
    /// room on its node.
    Release,
}

/// A persistent local volume (Marathon `persistent` volume).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Volume name, a DNS label unique within the app (Marathon `containerPath`).
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Size to reserve, a Kubernetes quantity such as `512Mi` or `10Gi`.
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && quantity(self).compareTo(quantity('1Pi')) <= 0").message("size must be a quantity between 1 byte and 1Pi, such as 512Mi or 10Gi"))]
    #[schemars(length(min = 1, max = 32))]
    pub size: String,

    /// Absolute path where the volume is mounted in the containers.
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(
        validation = Rule::new("self.startsWith('/')").message("mountPath must be an absolute path"),
        validation = Rule::new("!self.split('/').exists(p, p == '..')").message("mountPath must not contain '..'")
    )]
    pub mount_path: String,

    /// Containers to mount it in; all containers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub containers: Option<Vec<String>>,
}

/// Marathon's `killSelection`.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillSelection {
    /// Stop the most recently started instances first.
    #[default]
    YoungestFirst,
    /// Stop the longest-running instances first.
    OldestFirst,
}

/// Marathon's `upgradeStrategy`. Over-capacity is always 0: an instance owns
/// its volumes and cannot run twice.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// Fraction (0..1) of instances that must stay up during a rollout.
    #[serde(default = "default_minimum_health_capacity")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub minimum_health_capacity: f64,
}

fn default_minimum_health_capacity() -> f64 {
    0.5
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: default_minimum_health_capacity(),
        }
    }
}

/// What happens to an instance whose node is NotReady or gone.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeLossPolicy {
    #[serde(default)]
    pub action: NodeLossAction,
    /// With `Replace`: seconds the node must stay lost before replacing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2592000))]
    pub after_seconds: Option<i64>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeLossAction {
    /// Keep the instance reserved on its node and wait for the node to return.
    #[default]
    Wait,
    /// After `afterSeconds`, start a fresh instance elsewhere; the lost
    /// instance's volumes are kept and reported as orphaned.
    Replace,
}

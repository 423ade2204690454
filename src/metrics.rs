//! Prometheus metrics of the controller, provisioner and node agent. Kept out
//! of the logic: callers record, `http` serves.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{InstanceState, ReservationState, StatefulAppStatus};

// An app's nine series share one copy of its namespace and name, and a
// state is a static name: at 1,000 apps, labels of strings of their own
// were a megabyte and a half.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub namespace: Arc<str>,
    pub app: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub namespace: Arc<str>,
    pub app: Arc<str>,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

impl ReasonLabels {
    pub fn new(reason: &str) -> Self {
        ReasonLabels {
            reason: reason.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

pub struct ControllerMetrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub actions: Family<ActionLabels, Counter>,
    pub instances: Family<StateLabels, Gauge>,
    pub reservations: Family<StateLabels, Gauge>,
    pub orphaned_volumes: Family<AppLabels, Gauge>,
    pub volumes_provisioned: Counter,
    pub provisioning_failures: Family<ReasonLabels, Counter>,
    pub is_leader: Gauge,
}

/// Why the provisioner made no volume for a claim: it did not fit on the
/// node the scheduler chose, that node's agent published no capacity, or
/// the API server refused or failed (retried).
pub const PROVISIONING_FAILURES: [&str; 3] = ["NotEnoughDiskSpace", "NoCapacityPublished", "Error"];

const RESERVATION_STATES: [(ReservationState, &str); 3] = [
    (ReservationState::Held, "Held"),
    (ReservationState::Pending, "Pending"),
    (ReservationState::Releasing, "Releasing"),
];

const STATES: [(InstanceState, &str); 5] = [
    (InstanceState::Staging, "Staging"),
    (InstanceState::Running, "Running"),
    (InstanceState::Stopped, "Stopped"),
    (InstanceState::Unreachable, "Unreachable"),
    (InstanceState::Wiping, "Wiping"),
];

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ControllerMetrics {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            actions: Family::default(),
            instances: Family::default(),
            reservations: Family::default(),
            orphaned_volumes: Family::default(),
            volumes_provisioned: Counter::default(),
            provisioning_failures: Family::default(),
            is_leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("statefulapp");
        r.register(
            "reconciles",
            "Reconciles by result (success, error)",
            metrics.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            metrics.reconcile_duration.clone(),
        );
        r.register(
            "actions",
            "Actions applied, by kind (CreatePod, DeletePod, MarkForWipe, ...)",
            metrics.actions.clone(),
        );
        r.register(
            "instances",
            "Instances by app and state",
            metrics.instances.clone(),
        );
        r.register(
            "reservations",
            "Reservations of stopped instances by app and state (Held, Pending: not placed yet, Releasing)",
            metrics.reservations.clone(),
        );
        r.register(
            "orphaned_volumes",
            "Volumes kept from instances replaced after a node loss",
            metrics.orphaned_volumes.clone(),
        );
        r.register(
            "volumes_provisioned",
            "Node-local persistent volumes created by the provisioner",
            metrics.volumes_provisioned.clone(),
        );
        r.register(
            "provisioning_failures",
            "Claims the provisioner could not make a volume for, by reason (NotEnoughDiskSpace, NoCapacityPublished: sent back to the scheduler; Error: retried)",
            metrics.provisioning_failures.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            metrics.is_leader.clone(),
        );
        // The exporter lists a family only once it has a series: these start
        // at 0, so that alerts on them (`rate(...) > 0`) have a series to read
        // before the first failure.
        for result in ["success", "error"] {
            let _series = metrics.reconciles.get_or_create(&ResultLabels {
                result: result.to_string(),
            });
        }
        for reason in PROVISIONING_FAILURES {
            let _series = metrics
                .provisioning_failures
                .get_or_create(&ReasonLabels::new(reason));
        }
        metrics
    }

    /// Records the per-app gauges from a freshly computed status.
    pub fn observe_status(&self, namespace: &str, app: &str, status: &StatefulAppStatus) {
        let labels = app_labels(namespace, app);
        for (state, name) in STATES {
            let count = status.instances.iter().filter(|i| i.state == state).count();
            self.instances
                .get_or_create(&labels.with_state(name))
                .set(count as i64);
        }
        for (state, name) in RESERVATION_STATES {
            let count = status
                .instances
                .iter()
                .filter(|i| i.reservation.as_ref().is_some_and(|r| r.state == state))
                .count();
            self.reservations
                .get_or_create(&labels.with_state(name))
                .set(count as i64);
        }
        self.orphaned_volumes
            .get_or_create(&labels)
            .set(status.orphaned_volumes.len() as i64);
    }

    /// Drops the per-app series of a deleted app.
    pub fn forget_app(&self, namespace: &str, app: &str) {
        let labels = app_labels(namespace, app);
        for (_, name) in STATES {
            self.instances.remove(&labels.with_state(name));
        }
        for (_, name) in RESERVATION_STATES {
            self.reservations.remove(&labels.with_state(name));
        }
        self.orphaned_volumes.remove(&labels);
    }
}

fn app_labels(namespace: &str, app: &str) -> AppLabels {
    AppLabels {
        namespace: namespace.into(),
        app: app.into(),
    }
}

impl AppLabels {
    fn with_state(&self, state: &'static str) -> StateLabels {
        StateLabels {
            namespace: self.namespace.clone(),
            app: self.app.clone(),
            state,
        }
    }
}

/// One volume on an agent's node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VolumeLabels {
    pub volume: String,
    pub namespace: String,
    pub persistence_id: String,
}

pub struct AgentMetrics {
    pub volumes: Gauge,
    pub volume_used: Family<VolumeLabels, Gauge>,
    pub volume_size: Family<VolumeLabels, Gauge>,
    pub room: Gauge,
    pub reserved: Gauge,
    pub directories_wiped: Counter,
    pub orphaned_directories: Gauge,
}

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = AgentMetrics {
            volumes: Gauge::default(),
            volume_used: Family::default(),
            volume_size: Family::default(),
            room: Gauge::default(),
            reserved: Gauge::default(),
            directories_wiped: Counter::default(),
            orphaned_directories: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("statefulapp_agent");
        r.register(
            "volumes",
            "Data directories of live volumes on this node",
            metrics.volumes.clone(),
        );
        r.register(
            "volume_used_bytes",
            "Bytes a volume's data takes on this node, as last measured",
            metrics.volume_used.clone(),
        );
        r.register(
            "volume_size_bytes",
            "A volume's size (its reservation on this node)",
            metrics.volume_size.clone(),
        );
        r.register(
            "room_bytes",
            "Bytes this node's volumes may take in all (free space plus what they use)",
            metrics.room.clone(),
        );
        r.register(
            "reserved_bytes",
            "Bytes this node's volumes reserve (their sizes, or usage where larger)",
            metrics.reserved.clone(),
        );
        r.register(
            "directories_wiped",
            "Data directories destroyed for a wipe",
            metrics.directories_wiped.clone(),
        );
        r.register(
            "orphaned_directories",
            "Data directories on this node without a volume object (kept, never deleted)",
            metrics.orphaned_directories.clone(),
        );
        metrics
    }
}

//! The `statefulapp.io/v1alpha1` API: the custom resource, its status, and the
//! labels and annotations the operator reads and writes.

mod spec;
mod status;
mod template;

pub use spec::{
    Disruption, KillSelection, MAX_APP_VOLUMES, MAX_INSTANCES, MAX_VOLUMES, NodeLossAction,
    NodeLossPolicy, Reservation, ReservedResources, StatefulApp, StatefulAppSpec, UpgradeStrategy,
    VolumeSpec,
};
pub use status::{
    InstanceState, InstanceStatus, ReservationState, ReservationStatus, StatefulAppStatus,
    VolumeStatus,
};
pub use template::PodTemplate;

//! Deterministic names, ids, labels and annotations.
//!
//! Every object of an instance is named from (app, instance uuid, volume) so
//! that re-running any step finds the object it created before (I4). Strings
//! that are not valid label values (persistenceIds) go in annotations.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Label on pods, claims and volumes: the owning app's name.
pub const LABEL_APP: &str = "statefulapp.io/app";
/// Label on pods, claims and volumes: the instance uuid.
pub const LABEL_INSTANCE: &str = "statefulapp.io/instance";
/// Label on claims and volumes: the `spec.volumes[].name`.
pub const LABEL_VOLUME: &str = "statefulapp.io/volume";
/// Label on persistent volumes (cluster-scoped): the app's namespace.
pub const LABEL_NAMESPACE: &str = "statefulapp.io/namespace";
/// Label on persistent volumes: the node holding the data.
pub const LABEL_NODE: &str = "statefulapp.io/node";
/// Label on reservation pods: the app whose stopped instance they hold
/// resources for. Not `statefulapp.io/app`: a Service, a
/// PodDisruptionBudget or an autoscaler selecting the app's pods must never
/// count a reservation.
pub const LABEL_RESERVED_FOR: &str = "statefulapp.io/reserved-for";

/// Set on a claim by kube-scheduler: the node chosen for its first consumer.
pub const ANNOTATION_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Annotation on claims and volumes: `<app>#<volume>#<uuid>`.
pub const ANNOTATION_PERSISTENCE_ID: &str = "statefulapp.io/persistence-id";
/// Annotation on reservation pods: hash of what they hold (node, resources,
/// tolerations); a reservation of another hash is replaced.
pub const ANNOTATION_RESERVATION_HASH: &str = "statefulapp.io/reservation-hash";
/// Annotation on a reservation pod made to win back capacity the kubelet
/// refused the instance's pod (value: the refusal): it is kept until it is
/// placed, preempting ordinary pods if it must.
pub const ANNOTATION_RECLAIMING: &str = "statefulapp.io/reclaiming";
/// Annotation on pods: hash of the template they were built from.
pub const ANNOTATION_TEMPLATE_HASH: &str = "statefulapp.io/template-hash";
/// Annotation the operator puts on claims and volumes whose instance is
/// being wiped: the only mark that lets the node agent destroy data (I1).
pub const ANNOTATION_WIPE_MARK: &str = "statefulapp.io/wiping";

/// Annotation the operator puts on the claims and volumes of an instance it
/// replaced after a node loss (value: the instance id). Such volumes are
/// kept, reported as orphaned, and destroyed only by a wipe of that id.
pub const ANNOTATION_ORPHAN_MARK: &str = "statefulapp.io/orphaned";

/// User annotation on a StatefulApp: instance ids to wipe (comma separated).
pub const ANNOTATION_WIPE: &str = "statefulapp.io/wipe";
/// Set on a volume by its node's agent while the volume's data directory
/// is missing on the node (a data disk not mounted, a base dir changed):
/// which node and path. The agent never creates an empty directory in its
/// place; the instance waits.
pub const ANNOTATION_DATA_MISSING: &str = "statefulapp.io/data-missing";
/// The uid of the namespace a claim and its volume were made in. A volume
/// is adopted again only in that same namespace object: a namespace of the
/// same name made later is another tenant's.
pub const ANNOTATION_NAMESPACE_UID: &str = "statefulapp.io/namespace-uid";
/// Set by a user on a StatefulApp to adopt the volumes of the app's name
/// that were made in an earlier namespace of the same name (its uid, as the
/// `ForeignVolumes` Event gives it): an explicit act, never automatic.
pub const ANNOTATION_ADOPT_NAMESPACE_UID: &str = "statefulapp.io/adopt-namespace-uid";
/// Set on a volume by its node's agent once it made the volume's data
/// directory (value: the node): from then on a missing directory is data
/// that is not there, never a directory still to make.
pub const ANNOTATION_DIRECTORY_MADE: &str = "statefulapp.io/directory-made";
/// Set on a volume by its provisioner: how its size is enforced on the
/// node (`image`: a filesystem of its own; absent: not enforced, measured).
pub const ANNOTATION_SIZE_ENFORCEMENT: &str = "statefulapp.io/size-enforcement";

/// How a volume's size is enforced on its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SizeEnforcement {
    /// Not enforced: a directory; the agent measures its usage and warns
    /// when it passes the size.
    #[default]
    None,
    /// A filesystem of the volume's size per volume (an image file on a
    /// loop device): a write past the size fails with ENOSPC.
    Image,
}

impl SizeEnforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            SizeEnforcement::None => "none",
            SizeEnforcement::Image => "image",
        }
    }
}

impl std::str::FromStr for SizeEnforcement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(SizeEnforcement::None),
            "image" => Ok(SizeEnforcement::Image),
            other => Err(format!("unknown size enforcement {other:?}")),
        }
    }
}

/// Set on an `image` volume by its provisioner: the filesystem its agent
/// makes in the image (`ext4` when absent).
pub const ANNOTATION_FILESYSTEM: &str = "statefulapp.io/filesystem";
/// Set on an `image` volume by its node's agent: the bytes its filesystem
/// spans now (made or grown to). The volume's growth is done once it
/// reaches the volume's capacity.
pub const ANNOTATION_FILESYSTEM_SIZE: &str = "statefulapp.io/filesystem-size";

/// The filesystem of an `image` volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ImageFilesystem {
    /// Any size; grows online where the agent has `CAP_SYS_RESOURCE`.
    #[default]
    Ext4,
    /// At least [`ImageFilesystem::XFS_MINIMUM`]; grows online with
    /// `CAP_SYS_ADMIN`.
    Xfs,
}

impl ImageFilesystem {
    /// `mkfs.xfs` refuses smaller filesystems.
    pub const XFS_MINIMUM: u64 = 300 << 20;

    pub fn as_str(self) -> &'static str {
        match self {
            ImageFilesystem::Ext4 => "ext4",
            ImageFilesystem::Xfs => "xfs",
        }
    }

    /// The smallest volume it can hold.
    pub fn minimum(self) -> u64 {
        match self {
            ImageFilesystem::Ext4 => 0,
            ImageFilesystem::Xfs => Self::XFS_MINIMUM,
        }
    }
}

impl std::str::FromStr for ImageFilesystem {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ext4" => Ok(ImageFilesystem::Ext4),
            "xfs" => Ok(ImageFilesystem::Xfs),
            other => Err(format!("unknown filesystem {other:?}")),
        }
    }
}

/// User annotation on a StatefulApp: `"true"` destroys all data on deletion.
pub const ANNOTATION_WIPE_ON_DELETE: &str = "statefulapp.io/wipe-on-delete";

/// Annotations on instance and reservation pods that keep cluster
/// autoscalers from removing a node that holds an instance (running, or
/// stopped with its resources held): its data cannot move with it.
pub const NODE_KEEPING_ANNOTATIONS: [(&str, &str); 2] = [
    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
    ("karpenter.sh/do-not-disrupt", "true"),
];

/// Finalizer the node agent holds on the persistent volumes of its node.
pub const FINALIZER_AGENT: &str = "statefulapp.io/node-agent";
/// Finalizer on every StatefulApp: its deletion waits for the controller,
/// which then reads `wipe-on-delete` (however late it was set) and wipes
/// or keeps the data.
pub const FINALIZER_CLEANUP: &str = "statefulapp.io/cleanup";
/// The finalizer earlier versions set only on apps with `wipe-on-delete`:
/// still honoured, replaced by [`FINALIZER_CLEANUP`].
pub const FINALIZER_WIPE_ON_DELETE: &str = "statefulapp.io/wipe-on-delete";

/// Field manager for every write of the operator.
pub const FIELD_MANAGER: &str = "statefulapp-operator";

/// Patch parameters of every operator write: its field manager is how
/// anyone can audit what it changed (`metadata.managedFields`).
pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Create parameters of every operator write.
pub fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// An instance id `<app>.<uuid>`, the shape of a Marathon task id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub app: String,
    pub uuid: Uuid,
}

impl InstanceId {
    pub fn new(app: &str, uuid: Uuid) -> Self {
        InstanceId {
            app: app.to_string(),
            uuid,
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.app, self.uuid.hyphenated())
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{0:?} is not an instance id: expected <app>.<uuid>")]
    Malformed(String),
    #[error("{0:?} is not a persistenceId: expected <app>#<volume>#<uuid>")]
    MalformedPersistenceId(String),
}

impl FromStr for InstanceId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IdError::Malformed(s.to_string());
        // App names are DNS labels (no dots), so the last dot splits.
        let (app, uuid) = s.rsplit_once('.').ok_or_else(malformed)?;
        if !is_dns_label(app) || uuid.len() != 36 {
            return Err(malformed());
        }
        let uuid = Uuid::parse_str(uuid).map_err(|_| malformed())?;
        Ok(InstanceId::new(app, uuid))
    }
}

/// A persistenceId `<app>#<volume>#<uuid>`, as Marathon writes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PersistenceId {
    pub app: String,
    pub volume: String,
    pub uuid: Uuid,
}

impl PersistenceId {
    /// The persistenceId of `volume` of an instance. Derived (UUIDv5), so a
    /// claim re-created after a crash or a manual delete gets the same one.
    pub fn of(instance: &InstanceId, volume: &str) -> Self {
        PersistenceId {
            app: instance.app.clone(),
            volume: volume.to_string(),
            uuid: Uuid::new_v5(&instance.uuid, volume.as_bytes()),
        }
    }
}

impl fmt::Display for PersistenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}#{}", self.app, self.volume, self.uuid.hyphenated())
    }
}

impl FromStr for PersistenceId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IdError::MalformedPersistenceId(s.to_string());
        let mut parts = s.split('#');
        let (Some(app), Some(volume), Some(uuid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if !is_dns_label(app) || !is_dns_label(volume) || uuid.len() != 36 {
            return Err(malformed());
        }
        let uuid = Uuid::parse_str(uuid).map_err(|_| malformed())?;
        Ok(PersistenceId {
            app: app.to_string(),
            volume: volume.to_string(),
            uuid,
        })
    }
}

/// RFC 1123 label: lowercase alphanumerics and '-', 1..=63, alnum at both ends.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Pod of an instance: `<app>-<uuid>` (the task id with '-' for '.').
pub fn pod_name(instance: &InstanceId) -> String {
    format!("{}-{}", instance.app, instance.uuid.hyphenated())
}

/// Reservation pod of a stopped instance: `<app>-<uuid>-reserved`.
pub fn reservation_pod_name(instance: &InstanceId) -> String {
    format!("{}-reserved", pod_name(instance))
}

/// Claim of one volume of an instance: `<app>-<uuid>-<volume>`.
pub fn claim_name(instance: &InstanceId, volume: &str) -> String {
    format!("{}-{}-{}", instance.app, instance.uuid.hyphenated(), volume)
}

/// The pod volume of a StatefulApp volume: `sapp-<volume>`. A template may
/// mount it at more paths than its `mountPath` (an imported Marathon app
/// sees its volume in the sandbox too).
pub fn pod_volume_name(volume: &str) -> String {
    format!("sapp-{volume}")
}

/// Persistent volume of a persistenceId: `sapp-<uuid>` (cluster-scoped, so
/// the globally unique uuid alone names it).
pub fn volume_name(persistence: &PersistenceId) -> String {
    format!("sapp-{}", persistence.uuid.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn instance() -> InstanceId {
        InstanceId::new(
            "postgres",
            Uuid::parse_str("f2419e31-018a-11e6-b721-0261677b407a").unwrap(),
        )
    }

    #[test]
    fn instance_id_has_the_marathon_task_shape() {
        assert_eq!(
            instance().to_string(),
            "postgres.f2419e31-018a-11e6-b721-0261677b407a"
        );
        assert_eq!(
            instance().to_string().parse::<InstanceId>().unwrap(),
            instance()
        );
    }

    #[test]
    fn malformed_instance_ids_are_rejected() {
        for bad in [
            "",
            "postgres",
            "postgres.",
            ".f2419e31-018a-11e6-b721-0261677b407a",
            "Postgres.f2419e31-018a-11e6-b721-0261677b407a",
            "postgres.f2419e31018a11e6b7210261677b407a",
            "postgres.not-a-uuid-at-all-but-36-chars-long",
            "../etc.f2419e31-018a-11e6-b721-0261677b407a",
        ] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn persistence_id_is_stable_per_instance_and_volume() {
        let a = PersistenceId::of(&instance(), "pgdata");
        assert_eq!(a, PersistenceId::of(&instance(), "pgdata"));
        assert_ne!(a.uuid, PersistenceId::of(&instance(), "wal").uuid);
        assert!(a.to_string().starts_with("postgres#pgdata#"));
        assert_eq!(a.to_string().parse::<PersistenceId>().unwrap(), a);
    }

    #[test]
    fn object_names_are_valid_for_the_longest_allowed_inputs() {
        // App names are at most 40 characters, volume names at most 32.
        let app = "a".repeat(40);
        let id = InstanceId::new(&app, Uuid::new_v4());
        let volume = "v".repeat(32);
        assert!(pod_name(&id).len() <= 253);
        assert!(reservation_pod_name(&id).len() <= 253);
        assert!(claim_name(&id, &volume).len() <= 253);
        assert!(is_dns_label(&volume_name(&PersistenceId::of(&id, &volume))));
    }

    proptest! {
        #[test]
        fn instance_id_round_trips(app in "[a-z]([a-z0-9-]{0,38}[a-z0-9])?", raw in any::<u128>()) {
            let id = InstanceId::new(&app, Uuid::from_u128(raw));
            prop_assert_eq!(id.to_string().parse::<InstanceId>().unwrap(), id);
        }

        #[test]
        fn parsing_never_panics(s in ".*") {
            let _ = s.parse::<InstanceId>();
            let _ = s.parse::<PersistenceId>();
        }
    }
}

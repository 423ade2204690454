//! Dynamic provisioner for the `WaitForFirstConsumer` StorageClass: once the
//! scheduler has picked a node for a claim, creates a node-local persistent
//! volume pinned to that node by the hostname label it carries (reclaim
//! `Retain`, the node agent's finalizer set from birth). It also re-creates a volume object deleted by hand for a
//! claim still bound to it: the data directory was kept, so nothing is lost.
//! It never deletes volumes. It makes volumes only for the claims of
//! StatefulApp instances (see [`foreign`]).
//!
//! With capacity checks on (see [`crate::capacity`]), it makes a new volume
//! only if it fits in what the node's agent published, recounting the
//! node's reservations first, with the volumes it is making there at the
//! same time (see [`in_flight`]); a claim that
//! does not fit goes back to the scheduler (the selected-node annotation
//! removed, as Kubernetes' external provisioner does) with a Warning Event.

mod bind;
mod claim;
mod foreign;
mod in_flight;
mod resize;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;

use self::in_flight::InFlight;
use crate::agent::IMAGE_DATA;
use crate::capacity::{self, ANNOTATION_ROOM, ANNOTATION_USED, Refusal};
use crate::controller::cache::NodeStore;
use crate::names::{
    ANNOTATION_FILESYSTEM, ANNOTATION_SIZE_ENFORCEMENT, ImageFilesystem, SizeEnforcement,
    patch_params,
};

use crate::metrics::ReasonLabels;
use crate::names::{
    ANNOTATION_NAMESPACE_UID, ANNOTATION_PERSISTENCE_ID, ANNOTATION_SELECTED_NODE,
    ANNOTATION_WIPE_MARK, FINALIZER_AGENT, LABEL_APP, LABEL_INSTANCE, LABEL_NAMESPACE, LABEL_NODE,
    LABEL_VOLUME, PersistenceId, post_params, volume_name,
};
use crate::partial::slim_metadata;
use crate::watch::errors_logged;
use crate::{Error, Result};

use self::claim::ClaimRequest;

/// Annotation on volumes: the data directory, relative to the agent's base dir.
pub const ANNOTATION_DIRECTORY: &str = "statefulapp.io/directory";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

pub struct Provisioner {
    pub client: Client,
    /// The `provisioner` field of our StorageClass.
    pub name: String,
    /// Base directory of volumes on every node (the agents' `--base-dir`).
    pub base_dir: String,
    /// Counts volumes created.
    pub provisioned: prometheus_client::metrics::counter::Counter,
    /// Counts claims it could not make a volume for, by reason.
    pub failures: Family<ReasonLabels, Counter>,
    /// Claims provisioned at the same time. Unbounded, a scale-up of
    /// thousands of claims opened a connection to the API server for each
    /// (1,800 at 1,000 apps x 5), and the client keeps idle connections.
    pub max_concurrent: u16,
    /// Names this provisioner had before (`statefulapp.io/local`): claims
    /// and volumes made under them are still its own.
    pub former_names: Vec<String>,
    /// Namespace of the capacities the agents publish; `None`: no checks.
    pub capacity_namespace: Option<String>,
    /// How the sizes of new volumes are enforced on their nodes.
    pub size_enforcement: SizeEnforcement,
    /// The filesystem of new `image` volumes.
    pub image_filesystem: ImageFilesystem,
    /// Makes volumes for any claim of its class, not only for instances'.
    pub any_claim: bool,
    /// The controller's node cache, where the hostname a volume is pinned
    /// by is read without a request; `None`: read from the API server.
    pub nodes: Option<NodeStore>,
    /// The cluster's StorageClasses: a claim of a class of ours is
    /// provisioned as soon as the scheduler picks its node, without waiting
    /// for kube-controller-manager to annotate it with its provisioner.
    classes: reflector::Store<StorageClass>,
    classes_writer: Mutex<Option<reflector::store::Writer<StorageClass>>>,
    /// The volumes being made, per node, for the capacity checks.
    in_flight: InFlight,
    recorder: Recorder,
}

impl Provisioner {
    pub fn new(
        client: Client,
        name: String,
        base_dir: String,
        provisioned: prometheus_client::metrics::counter::Counter,
        max_concurrent: u16,
    ) -> Provisioner {
        let reporter = Reporter {
            controller: "statefulapp-provisioner".into(),
            instance: None,
        };
        let (classes, classes_writer) = reflector::store();
        Provisioner {
            classes,
            classes_writer: Mutex::new(Some(classes_writer)),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            name,
            base_dir,
            provisioned,
            failures: Family::default(),
            max_concurrent,
            former_names: Vec::new(),
            capacity_namespace: None,
            size_enforcement: SizeEnforcement::None,
            image_filesystem: ImageFilesystem::Ext4,
            any_claim: false,
            nodes: None,
            in_flight: InFlight::default(),
        }
    }

    fn is_ours(&self, provisioner: &str) -> bool {
        provisioner == self.name || self.former_names.iter().any(|n| n == provisioner)
    }

    /// The provisioner a claim waits for: the one kube-controller-manager
    /// annotated it with, or else its StorageClass's (set before that
    /// annotation comes, and never changed: a class's provisioner is
    /// immutable).
    fn provisioner_of(&self, claim: &ClaimRequest) -> Option<String> {
        if let Some(provisioner) = claim.annotations().get(STORAGE_PROVISIONER) {
            return Some(provisioner.clone());
        }
        let class = claim.spec.storage_class_name.as_deref()?;
        self.classes
            .get(&reflector::ObjectRef::new(class))
            .map(|class| class.provisioner.clone())
    }
}

pub async fn run(provisioner: Arc<Provisioner>) {
    let classes_writer = provisioner
        .classes_writer
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let classes = async {
        let Some(writer) = classes_writer else {
            // Run again: the first run's watch keeps the classes.
            return futures::future::pending().await;
        };
        let updates = watcher(
            Api::<StorageClass>::all(provisioner.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|class| class.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects();
        errors_logged(updates, "storage classes")
            .for_each(|_| async {})
            .await;
    };
    let claims: Api<ClaimRequest> = Api::all(provisioner.client.clone());
    let (store, writer) = reflector::store();
    let updates = watcher(claims, watcher::Config::default())
        .default_backoff()
        .modify(slim_claim)
        .try_filter_map(|event| std::future::ready(Ok(without_claims_at_rest(event))))
        .reflect(writer)
        .applied_objects();
    let config = controller::Config::default().concurrency(provisioner.max_concurrent);
    let provisioning = Controller::for_stream(errors_logged(updates, "claims"), store)
        .with_config(config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, provisioner.clone())
        .for_each(|_| async {});
    // The class watch runs as long as provisioning does.
    tokio::select! {
        _ = provisioning => {}
        _ = classes => {}
    }
}

/// Most claims in a cluster are bound and ask for no more than they hold,
/// or are going away ([`ClaimRequest::at_rest`]): they leave the store, and
/// an update that asks one to grow brings it back. (Deleted claims need
/// nothing either: only applied claims trigger a reconcile.)
fn without_claims_at_rest(
    event: watcher::Event<ClaimRequest>,
) -> Option<watcher::Event<ClaimRequest>> {
    match event {
        watcher::Event::Apply(claim) if claim.at_rest() => Some(watcher::Event::Delete(claim)),
        watcher::Event::InitApply(claim) if claim.at_rest() => None,
        other => Some(other),
    }
}

/// Keeps the annotations and labels provisioning reads or copies (of a
/// bound claim, nothing).
fn slim_claim(claim: &mut ClaimRequest) {
    claim.forget_if_bound();
    slim_metadata(&mut claim.metadata, |key| {
        [
            STORAGE_PROVISIONER,
            ANNOTATION_SELECTED_NODE,
            ANNOTATION_PERSISTENCE_ID,
            ANNOTATION_WIPE_MARK,
            ANNOTATION_NAMESPACE_UID,
            foreign::ANNOTATION_REFUSED,
            LABEL_APP,
            LABEL_INSTANCE,
            LABEL_VOLUME,
        ]
        .contains(&key)
    });
}

fn error_policy(claim: Arc<ClaimRequest>, error: &Error, ctx: Arc<Provisioner>) -> Requeue {
    ctx.failures
        .get_or_create(&ReasonLabels::new("Error"))
        .inc();
    tracing::warn!(claim = %claim.name_any(), %error, "provisioning failed, retrying");
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile(claim: Arc<ClaimRequest>, ctx: Arc<Provisioner>) -> Result<Requeue> {
    crate::worker::on_worker(provision(claim, ctx)).await
}

async fn provision(claim: Arc<ClaimRequest>, ctx: Arc<Provisioner>) -> Result<Requeue> {
    if claim.is_bound() {
        return resize::grow_if_asked(&claim, &ctx).await;
    }
    let provisioner = ctx.provisioner_of(&claim);
    let ours = provisioner.as_deref().is_some_and(|p| ctx.is_ours(p));
    if !ours || claim.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let Some(node) = claim.annotations().get(ANNOTATION_SELECTED_NODE) else {
        return Ok(Requeue::await_change()); // the scheduler has not placed it yet
    };
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let bound_to = claim.spec.volume_name.clone();
    if bound_to.is_none() && !ctx.any_claim && !foreign::is_instance_claim(&claim) {
        foreign::refuse(&ctx, &claim).await?;
        return Ok(Requeue::await_change());
    }
    let name = match &bound_to {
        Some(name) => name.clone(),
        None => volume_name_for(&claim),
    };
    // A claim naming its volume comes back here on the bind's own update:
    // one read ends it once that volume exists. A claim naming none is
    // first seen here, and its volume is made without a read first (the
    // capacity check reads the node's volumes anyway; without it, a second
    // attempt is refused as a conflict and ends there).
    if bound_to.is_some() && volumes.get_opt(&name).await?.is_some() {
        return Ok(Requeue::await_change());
    }
    let hostname = match ctx.nodes.as_ref().and_then(|nodes| nodes.hostname(node)) {
        Some(hostname) => hostname,
        None => crate::hostname::lookup(&ctx.client, node).await?,
    };
    let provisioner = provisioner.unwrap_or_default();
    let volume = volume_for(&claim, &name, node, &hostname, &provisioner, &ctx)?;
    let request = requested_bytes(&claim)?;
    let filesystem = ctx.image_filesystem;
    if bound_to.is_none()
        && ctx.size_enforcement == SizeEnforcement::Image
        && request < filesystem.minimum()
    {
        let note = format!(
            "{} volumes hold at least {}; the claim asks {}: ask for more in the StatefulApp's volume size",
            filesystem.as_str(),
            crate::quantity::human(filesystem.minimum()),
            crate::quantity::human(request)
        );
        warn(&ctx, &claim.object_ref(&()), "VolumeTooSmall", note).await;
        return Ok(Requeue::await_change());
    }
    // A volume object re-made for a bound claim holds data already there.
    // A new one stays in the ledger until it exists, so that the node's
    // other claims count it; the bind needs no ledger.
    let entered = match (&ctx.capacity_namespace, &bound_to) {
        (Some(namespace), None) => {
            let (entry, others) = ctx.in_flight.enter(node, &name, request);
            let class = class_of(&claim);
            match fits(&ctx, namespace, &class, node, Some(&name), &others, request).await? {
                Fit::Room => Some(entry),
                Fit::Made => return Ok(Requeue::await_change()),
                Fit::Refused(refusal) => {
                    drop(entry);
                    send_back(&ctx, &claim, refusal).await?;
                    return Ok(Requeue::await_change());
                }
            }
        }
        _ => None,
    };
    let created = volumes.create(&post_params(), &volume).await;
    drop(entered);
    match created {
        Ok(volume) => {
            ctx.provisioned.inc();
            tracing::info!(volume = %name, %node, "provisioned");
            if bound_to.is_none() {
                bind::complete(&ctx.client, &claim, &volume).await?;
            }
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Requeue::await_change())
}

/// What the capacity check found for a new volume.
pub(super) enum Fit {
    /// The volume fits on the node.
    Room,
    /// The volume is on the node already: nothing to make.
    Made,
    /// The volume does not fit: the claim goes back to the scheduler.
    Refused(Refusal),
}

/// Whether `request` more bytes fit on `node`: the room its agent
/// published against the sizes (or usage, where larger) of the volumes
/// the node holds now, read fresh from the API server, and of those being
/// made there (`in_flight`). A new volume's `name` found among them means
/// it is made already.
async fn fits(
    ctx: &Provisioner,
    namespace: &str,
    class: &str,
    node: &str,
    name: Option<&str>,
    in_flight: &BTreeMap<String, u64>,
    request: u64,
) -> Result<Fit> {
    let capacities: Api<CSIStorageCapacity> = Api::namespaced(ctx.client.clone(), namespace);
    let on_node = ListParams::default().labels(&format!("{LABEL_NODE}={node}"));
    let all_volumes = Api::<PersistentVolume>::all(ctx.client.clone());
    let capacity_name = capacity::object_name(class, node);
    let (capacity, volumes) = tokio::try_join!(
        capacities.get_opt(&capacity_name),
        all_volumes.list(&on_node),
    )?;
    let room = capacity.and_then(|c| {
        c.annotations()
            .get(ANNOTATION_ROOM)
            .and_then(|r| r.parse().ok())
    });
    let listed = volumes.items.iter().map(|pv| {
        let used = pv
            .annotations()
            .get(ANNOTATION_USED)
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        let reservation = capacity::reservation(capacity::volume_size(pv), used);
        (pv.name_any(), reservation)
    });
    if name.is_some_and(|name| volumes.items.iter().any(|pv| pv.name_any() == name)) {
        return Ok(Fit::Made);
    }
    let reservations = in_flight::reservations(listed, in_flight);
    Ok(
        match capacity::check(node, class, room, reservations, request) {
            Ok(()) => Fit::Room,
            Err(refusal) => Fit::Refused(refusal),
        },
    )
}

fn class_of(claim: &ClaimRequest) -> String {
    claim.spec.storage_class_name.clone().unwrap_or_default()
}

fn requested_bytes(claim: &ClaimRequest) -> Result<u64> {
    claim
        .spec
        .resources
        .requests
        .bytes()
        .ok_or_else(|| Error::Invalid("claim without a valid storage request".into()))
}

/// Publishes a Warning Event about `object` (failures are logged only).
async fn warn(ctx: &Provisioner, object: &ObjectReference, reason: &str, note: String) {
    tracing::warn!(object = ?object.name, namespace = ?object.namespace, reason, "{note}");
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Provision".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, object).await {
        tracing::warn!(%error, "could not publish event");
    }
}

/// Sends a claim that does not fit back to the scheduler: removes the
/// node it selected (kube-scheduler then places the pod again, on what
/// the nodes publish now) and says why in a Warning Event on the claim.
async fn send_back(ctx: &Provisioner, claim: &ClaimRequest, refusal: Refusal) -> Result<()> {
    let note = format!("{refusal}: sent back to the scheduler to choose another node");
    let claims: Api<ClaimRequest> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_SELECTED_NODE: null } } });
    claims
        .patch(&claim.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    let reason = match refusal {
        Refusal::NotPublished { .. } => "NoCapacityPublished",
        Refusal::NoRoom { .. } => "NotEnoughDiskSpace",
    };
    ctx.failures.get_or_create(&ReasonLabels::new(reason)).inc();
    warn(ctx, &claim.object_ref(&()), reason, note).await;
    Ok(())
}

fn persistence_id(claim: &ClaimRequest) -> Option<PersistenceId> {
    claim
        .annotations()
        .get(ANNOTATION_PERSISTENCE_ID)?
        .parse()
        .ok()
}

fn volume_name_for(claim: &ClaimRequest) -> String {
    match persistence_id(claim) {
        Some(id) => volume_name(&id),
        None => format!("pvc-{}", claim.uid().unwrap_or_default()),
    }
}

/// `<namespace>/<persistenceId>` for StatefulApp claims, else
/// `<namespace>/<claim>-<uid>`: unique, and safe as a path (validated names).
fn directory_for(claim: &ClaimRequest) -> String {
    let ns = claim.namespace().unwrap_or_default();
    match persistence_id(claim) {
        Some(id) => format!("{ns}/{id}"),
        None => format!(
            "{ns}/{}-{}",
            claim.name_any(),
            claim.uid().unwrap_or_default()
        ),
    }
}

/// The volume of `claim` on `node`, pinned to the node that carries
/// `hostname` (see [`crate::hostname`]).
fn volume_for(
    claim: &ClaimRequest,
    name: &str,
    node: &str,
    hostname: &str,
    provisioner: &str,
    ctx: &Provisioner,
) -> Result<PersistentVolume> {
    let spec = &claim.spec;
    let size = spec
        .resources
        .requests
        .storage
        .as_ref()
        .ok_or_else(|| Error::Invalid("claim without a storage request".into()))?;
    let mut labels: BTreeMap<String, String> = claim
        .labels()
        .iter()
        .filter(|(k, _)| [LABEL_APP, LABEL_INSTANCE, LABEL_VOLUME].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(
        LABEL_NAMESPACE.into(),
        claim.namespace().unwrap_or_default(),
    );
    labels.insert(LABEL_NODE.into(), node.into());
    let directory = directory_for(claim);
    let mut annotations = BTreeMap::from([
        (
            "pv.kubernetes.io/provisioned-by".to_string(),
            // The name the claim was made for (this one, or a former one).
            provisioner.to_string(),
        ),
        (ANNOTATION_DIRECTORY.to_string(), directory.clone()),
    ]);
    let mut path = format!("{}/{directory}", ctx.base_dir.trim_end_matches('/'));
    if ctx.size_enforcement == SizeEnforcement::Image {
        annotations.insert(
            ANNOTATION_SIZE_ENFORCEMENT.to_string(),
            SizeEnforcement::Image.as_str().to_string(),
        );
        annotations.insert(
            ANNOTATION_FILESYSTEM.to_string(),
            ctx.image_filesystem.as_str().to_string(),
        );
        // Exists only inside the volume's mounted filesystem.
        path = format!("{path}/{IMAGE_DATA}");
    }
    for key in [
        ANNOTATION_PERSISTENCE_ID,
        ANNOTATION_WIPE_MARK,
        ANNOTATION_NAMESPACE_UID,
    ] {
        if let Some(value) = claim.annotations().get(key) {
            annotations.insert(key.to_string(), value.clone());
        }
    }
    let volume = json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": annotations,
            "finalizers": [FINALIZER_AGENT],
        },
        "spec": {
            "capacity": { "storage": size },
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": spec.storage_class_name,
            "volumeMode": "Filesystem",
            "local": { "path": path },
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace(), "name": claim.name_any(), "uid": claim.uid(),
            },
            "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                { "key": crate::hostname::LABEL_HOSTNAME, "operator": "In", "values": [hostname] },
            ]}]}},
        },
    });
    Ok(serde_json::from_value(volume)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn claim(phase: &str, request: &str) -> ClaimRequest {
        serde_json::from_value(json!({
            "metadata": { "name": "c", "namespace": "ns" },
            "spec": { "volumeName": "pv", "resources": { "requests": { "storage": request } } },
            "status": { "phase": phase, "capacity": { "storage": "1Gi" } },
        }))
        .unwrap()
    }

    fn kept(event: Event<ClaimRequest>) -> Option<&'static str> {
        without_claims_at_rest(event).map(|event| match event {
            Event::Apply(_) => "apply",
            Event::Delete(_) => "delete",
            Event::InitApply(_) => "init-apply",
            Event::Init => "init",
            Event::InitDone => "init-done",
        })
    }

    #[test]
    fn bound_claims_at_rest_leave_the_store_and_others_stay() {
        assert_eq!(kept(Event::Apply(claim("Bound", "1Gi"))), Some("delete"));
        assert_eq!(kept(Event::InitApply(claim("Bound", "1Gi"))), None);
        assert_eq!(kept(Event::Apply(claim("Bound", "2Gi"))), Some("apply"));
        assert_eq!(
            kept(Event::InitApply(claim("Pending", "1Gi"))),
            Some("init-apply")
        );
        assert_eq!(kept(Event::Delete(claim("Bound", "1Gi"))), Some("delete"));
        assert_eq!(kept(Event::InitDone), Some("init-done"));
    }
}

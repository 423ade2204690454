//! Turns the cluster's objects into [`Observed`]. Pure: the reconciler lists
//! the objects, this only reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::cache::nodes;
use super::cache::{ClaimEntry, Meta, PodEntry, ReservationEntry, VolumeEntry};
use super::model::{
    AppView, ClaimView, ForeignVolume, InstanceView, Observed, OrphanedVolume, PodView,
    ReservationView, VolumeView,
};
use super::reservation::{ReservationConfig, may_bind_directly, pod_requests, reservation_hash};
use super::wipe_request::WipeRequest;
use crate::api::{ReservedResources, StatefulApp};
use crate::names::{
    ANNOTATION_ADOPT_NAMESPACE_UID, ANNOTATION_DATA_MISSING, ANNOTATION_NAMESPACE_UID,
    ANNOTATION_ORPHAN_MARK, ANNOTATION_RECLAIMING, ANNOTATION_RESERVATION_HASH,
    ANNOTATION_SELECTED_NODE, ANNOTATION_TEMPLATE_HASH, ANNOTATION_WIPE_MARK,
    ANNOTATION_WIPE_ON_DELETE, LABEL_INSTANCE, LABEL_NODE, LABEL_VOLUME,
};

pub struct ClusterObjects {
    pub pods: Vec<Arc<PodEntry>>,
    pub reservations: Vec<Arc<ReservationEntry>>,
    pub claims: Vec<Arc<ClaimEntry>>,
    pub volumes: Vec<Arc<VolumeEntry>>,
    pub nodes: Vec<Arc<Node>>,
    /// Nodes of the app's volumes whose object is gone: since when (a
    /// node deleted is lost from then, like one NotReady).
    pub gone_nodes: BTreeMap<String, Timestamp>,
    /// The uid of the app's namespace (unknown for a moment after the
    /// namespace is made, until the cache sees it).
    pub namespace_uid: Option<String>,
}

impl ClusterObjects {
    /// Uuids of every instance with a claim, volume or pod here.
    pub fn instance_uuids(&self) -> BTreeSet<Uuid> {
        let metas = self
            .pods
            .iter()
            .map(|o| &o.meta)
            .chain(self.claims.iter().map(|o| &o.meta))
            .chain(self.volumes.iter().map(|o| &o.meta));
        metas
            .filter_map(|m| m.label(LABEL_INSTANCE))
            .filter_map(|u| Uuid::parse_str(u).ok())
            .collect()
    }
}

/// What a pod of the app is made from: its template and where each volume
/// is mounted. A volume's size is not in it: a volume grows under a
/// running pod.
pub fn template_hash(app: &StatefulApp) -> String {
    let mounts: Vec<serde_json::Value> = app
        .spec
        .volumes
        .iter()
        .map(|v| serde_json::json!([v.name, v.mount_path, v.containers]))
        .collect();
    hash_with(app, &mounts)
}

/// The hash pods were stamped with before volumes could grow (sizes
/// included): a pod stamped with it for the current spec is current, so
/// an upgrade of the operator restarts nothing.
fn template_hash_with_sizes(app: &StatefulApp) -> String {
    hash_with(app, &app.spec.volumes)
}

/// The hash of `serde_json::to_vec(&(template, volumes))`, written out from
/// the template's own JSON (see [`crate::api::PodTemplate::json`]).
fn hash_with(app: &StatefulApp, volumes: &impl serde::Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"[");
    hasher.update(app.spec.template.json().as_bytes());
    hasher.update(b",");
    hasher.update(serde_json::to_vec(volumes).expect("serializable"));
    hasher.update(b"]");
    hex::encode(&hasher.finalize()[..8])
}

pub fn observe(
    app: &StatefulApp,
    wipe: &WipeRequest,
    objects: &ClusterObjects,
    reservations: &ReservationConfig,
    now: Timestamp,
) -> Observed {
    let pod_spec = app.spec.template.get().spec.unwrap_or_default();
    let deleting = app.metadata.deletion_timestamp.is_some();
    let wipe_on_delete = app
        .annotations()
        .get(ANNOTATION_WIPE_ON_DELETE)
        .is_some_and(|v| v == "true");
    let view = AppView {
        name: app.name_any(),
        desired: if deleting {
            0
        } else {
            app.spec.instances.max(0) as usize
        },
        volumes: app.spec.volumes.iter().map(|v| v.name.clone()).collect(),
        volume_sizes: app
            .spec
            .volumes
            .iter()
            .filter_map(|v| Some((v.name.clone(), crate::quantity::bytes(&v.size)?)))
            .collect(),
        template_hash: template_hash(app),
        kill_selection: app.spec.kill_selection,
        minimum_health_capacity: app.spec.upgrade_strategy.minimum_health_capacity,
        node_loss: app.spec.node_loss_policy.clone(),
        wipe_requested: wipe.valid.iter().map(|id| id.uuid).collect(),
        wipe_all: deleting && wipe_on_delete,
        hold_resources: !deleting && app.spec.reservation.resources == ReservedResources::Hold,
        reservation_hash: reservation_hash(&pod_spec, reservations),
        reserved_resources: pod_requests(&pod_spec)
            .into_iter()
            .map(|(name, q)| (name, q.0))
            .collect(),
    };

    let mut observed = Observed {
        app: view,
        instances: Default::default(),
        ready_nodes: BTreeSet::new(),
        known_nodes: BTreeSet::new(),
        not_ready_since: BTreeMap::new(),
        orphaned_volumes: Vec::new(),
        namespace_uid: objects.namespace_uid.clone(),
        foreign_volumes: Vec::new(),
        adopting: BTreeSet::new(),
        lookalike_pods: Vec::new(),
        direct_nodes: BTreeSet::new(),
        now,
    };
    let adopt_from = app.annotations().get(ANNOTATION_ADOPT_NAMESPACE_UID);
    for node in &objects.nodes {
        let name = node.name_any();
        let ready_condition = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        match ready_condition {
            Some(c) if c.status == "True" => {
                observed.ready_nodes.insert(name.clone());
                if may_bind_directly(&pod_spec, &nodes::placement(node)) {
                    observed.direct_nodes.insert(name.clone());
                }
            }
            Some(c) => {
                let since = c.last_transition_time.as_ref().map_or(now, |t| t.0);
                observed.not_ready_since.insert(name.clone(), since);
            }
            None => {
                observed.not_ready_since.insert(name.clone(), now);
            }
        }
        observed.known_nodes.insert(name);
    }
    for (name, since) in &objects.gone_nodes {
        observed
            .not_ready_since
            .entry(name.clone())
            .or_insert(*since);
    }

    let live_claims: BTreeSet<&str> = objects
        .claims
        .iter()
        .map(|c| c.meta.name.as_str())
        .collect();
    for claim in &objects.claims {
        let Some((uuid, volume)) = instance_and_volume(&claim.meta) else {
            continue;
        };
        let instance = instance_entry(&mut observed, uuid, claim.meta.created);
        if instance.node.is_none() {
            instance.node = claim
                .meta
                .annotation(ANNOTATION_SELECTED_NODE)
                .map(str::to_owned);
        }
        instance.claims.insert(
            volume,
            ClaimView {
                name: claim.meta.name.clone(),
                bound_volume: claim.volume_name.clone().filter(|_| claim.bound),
                requested: claim.requested,
                capacity: claim.capacity,
                wipe_marked: claim.meta.has_annotation(ANNOTATION_WIPE_MARK),
                orphan_marked: claim.meta.has_annotation(ANNOTATION_ORPHAN_MARK),
                deleting: claim.meta.deleting,
            },
        );
    }
    for pv in &objects.volumes {
        let Some((uuid, volume)) = instance_and_volume(&pv.meta) else {
            continue;
        };
        // Volumes made before namespace uids were recorded carry none and
        // are adopted by namespace name, as they always were.
        if let Some(made_in) = pv.meta.annotation(ANNOTATION_NAMESPACE_UID)
            && objects.namespace_uid.as_deref() != Some(made_in)
        {
            if adopt_from.map(String::as_str) == Some(made_in) {
                observed.adopting.insert(pv.meta.name.clone());
            } else {
                observed.foreign_volumes.push(ForeignVolume {
                    name: pv.meta.name.clone(),
                    namespace_uid: made_in.to_string(),
                });
                continue;
            }
        }
        let node = pv.meta.label(LABEL_NODE).map(str::to_owned);
        let claim_uid = pv.claim_uid.as_ref();
        let claim_uid_live = objects
            .claims
            .iter()
            .any(|c| c.meta.uid.as_ref() == claim_uid);
        let orphaned = pv.meta.has_annotation(ANNOTATION_ORPHAN_MARK);
        let view = VolumeView {
            name: pv.meta.name.clone(),
            node: node.clone(),
            claim_ref_stale: claim_uid.is_some()
                && !claim_uid_live
                && pv
                    .claim_name
                    .as_deref()
                    .is_some_and(|n| live_claims.contains(n)),
            claim_ref: pv.claim_name.clone(),
            wipe_marked: pv.meta.has_annotation(ANNOTATION_WIPE_MARK),
            orphan_marked: orphaned,
            deleting: pv.meta.deleting,
            data_missing: pv
                .meta
                .annotation(ANNOTATION_DATA_MISSING)
                .map(str::to_string),
            used: pv
                .meta
                .annotation(crate::capacity::ANNOTATION_USED)
                .and_then(|u| u.parse().ok()),
            size_enforced: pv
                .meta
                .annotation(crate::names::ANNOTATION_SIZE_ENFORCEMENT)
                .is_some_and(|mode| mode != "none"),
        };
        // Volumes of a replaced instance stay out of the instance list (they
        // must not bring it back) unless a wipe names that instance.
        let wiped = observed.app.wipe_all || observed.app.wipe_requested.contains(&uuid);
        let still_claimed = observed
            .instances
            .get(&uuid)
            .is_some_and(|i| i.claims.contains_key(&volume));
        if orphaned && !wiped && !still_claimed {
            observed.orphaned_volumes.push(OrphanedVolume {
                instance: uuid,
                volume,
                object: view,
            });
            continue;
        }
        let instance = instance_entry(&mut observed, uuid, pv.meta.created);
        if node.is_some() {
            // The volume's node affinity is the authority on placement.
            instance.node = node;
        }
        instance.volumes.insert(volume, view);
    }
    let former_hash = template_hash_with_sizes(app);
    let app_uid = app.uid().and_then(|uid| uid.parse::<Uuid>().ok());
    for pod in &objects.pods {
        match pod.owner {
            Some(owner) if Some(owner) == app_uid => {}
            // An earlier app of this name made it: the garbage collector
            // removes it with its owner; not an instance of this one.
            Some(_) => continue,
            None => {
                // Carries our labels, but no StatefulApp made it: never an
                // instance's pod, never stopped or deleted by us.
                observed.lookalike_pods.push(pod.meta.name.clone());
                continue;
            }
        }
        let Some(uuid) = instance_of(&pod.meta) else {
            continue;
        };
        let phase = pod.phase.as_deref().unwrap_or("Pending");
        let view = PodView {
            name: pod.meta.name.clone(),
            template_hash: match pod.meta.annotation(ANNOTATION_TEMPLATE_HASH) {
                Some(hash) if hash == former_hash => observed.app.template_hash.clone(),
                hash => hash.unwrap_or_default().to_owned(),
            },
            node: pod.node_name.clone(),
            running: phase == "Running",
            ready: phase == "Running" && pod.ready,
            finished: phase == "Succeeded" || phase == "Failed",
            deleting: pod.meta.deleting,
            started_at: pod.started_at,
            refused: pod.refused.clone(),
            unschedulable: pod.unschedulable.clone(),
        };
        // A pod without claims or volumes belongs to no known instance: it
        // is listed so that it gets stopped, never adopted as a new instance.
        let instance = instance_entry(&mut observed, uuid, pod.meta.created);
        if instance.node.is_none() {
            instance.node = view.node.clone();
        }
        instance.pod = Some(view);
    }
    let own = |owner: &Option<Uuid>| owner.is_some() && *owner == app_uid;
    for reservation in objects.reservations.iter().filter(|r| own(&r.owner)) {
        let Some(uuid) = instance_of(&reservation.meta) else {
            continue;
        };
        let view = ReservationView {
            name: reservation.meta.name.clone(),
            placed: reservation.node_name.is_some(),
            running: reservation.running,
            hash: reservation
                .meta
                .annotation(ANNOTATION_RESERVATION_HASH)
                .unwrap_or_default()
                .to_owned(),
            deleting: reservation.meta.deleting,
            reclaiming: reservation.meta.has_annotation(ANNOTATION_RECLAIMING),
            created: reservation.meta.created,
        };
        // Its age is not the instance's: a reservation of no known
        // instance makes a remnant, which is released.
        instance_entry(&mut observed, uuid, None).reservation = Some(view);
    }
    observed
}

fn instance_entry(
    observed: &mut Observed,
    uuid: Uuid,
    created: Option<Timestamp>,
) -> &mut InstanceView {
    let instance = observed
        .instances
        .entry(uuid)
        .or_insert_with(|| InstanceView {
            uuid,
            ..Default::default()
        });
    instance.created = match (instance.created, created) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    instance
}

/// The instance an object belongs to, by its label.
fn instance_of(meta: &Meta) -> Option<Uuid> {
    Uuid::parse_str(meta.label(LABEL_INSTANCE)?).ok()
}

fn instance_and_volume(meta: &Meta) -> Option<(Uuid, String)> {
    Some((instance_of(meta)?, meta.label(LABEL_VOLUME)?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::names::LABEL_APP;

    const APP_UID: &str = "8a0b3c2e-4f5d-4e6a-9b7c-1d2e3f4a5b6c";

    fn app(size: &str, mount_path: &str) -> StatefulApp {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
            "metadata": { "name": "db", "namespace": "ns", "uid": APP_UID },
            "spec": {
                "instances": 1,
                "template": { "spec": { "containers": [{ "name": "db", "image": "db:1" }] } },
                "volumes": [{ "name": "data", "size": size, "mountPath": mount_path }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_growing_volume_keeps_the_pods_current_and_a_new_mount_does_not() {
        let small = app("100Mi", "/data");
        assert_eq!(template_hash(&small), template_hash(&app("1Gi", "/data")));
        assert_ne!(template_hash(&small), template_hash(&app("100Mi", "/srv")));
        // Pods stamped before sizes could change carry the hash with sizes.
        assert_ne!(
            template_hash_with_sizes(&small),
            template_hash_with_sizes(&app("1Gi", "/data"))
        );
    }

    #[test]
    fn hashes_are_those_running_pods_were_stamped_with() {
        // Before templates were kept as JSON, the hashes were taken of the
        // serialized structs: pods stamped then must stay current.
        let db = app("100Mi", "/data");
        let template = db.spec.template.get();
        let hash = |input: Vec<u8>| hex::encode(&Sha256::digest(&input)[..8]);
        let mounts = vec![serde_json::json!(["data", "/data", null])];
        assert_eq!(
            template_hash(&db),
            hash(serde_json::to_vec(&(&template, mounts)).unwrap())
        );
        assert_eq!(
            template_hash_with_sizes(&db),
            hash(serde_json::to_vec(&(&template, &db.spec.volumes)).unwrap())
        );
    }

    /// A pod of instance `uuid` with the app's labels, controlled by the
    /// StatefulApp `db` of `owner_uid` (none: made by hand).
    fn pod(uuid: u128, owner_uid: Option<&str>) -> Arc<PodEntry> {
        let instance = Uuid::from_u128(uuid);
        let owners: Vec<serde_json::Value> = owner_uid
            .into_iter()
            .map(|uid| {
                serde_json::json!({ "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
                    "name": "db", "uid": uid, "controller": true })
            })
            .collect();
        let pod: super::super::cache::CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": format!("db-{instance}"), "ownerReferences": owners,
                          "labels": { LABEL_APP: "db", LABEL_INSTANCE: instance.to_string() } },
            "spec": { "nodeName": "n1" },
            "status": { "phase": "Running" },
        }))
        .unwrap();
        Arc::new(PodEntry::from(&pod))
    }

    #[test]
    fn only_pods_the_app_itself_controls_are_its_instances() {
        let objects = ClusterObjects {
            pods: vec![
                pod(1, Some(APP_UID)),
                // Of an app of the same name deleted before this one was made.
                pod(2, Some("0f0e0d0c-0b0a-4909-8807-060504030201")),
                pod(3, None),
            ],
            reservations: vec![],
            claims: vec![],
            volumes: vec![],
            nodes: vec![],
            gone_nodes: BTreeMap::new(),
            namespace_uid: None,
        };
        let wipe = WipeRequest {
            valid: vec![],
            rejected: vec![],
        };
        let observed = observe(
            &app("1Gi", "/data"),
            &wipe,
            &objects,
            &ReservationConfig::default(),
            Timestamp::UNIX_EPOCH,
        );
        let instances: Vec<Uuid> = observed.instances.keys().copied().collect();
        assert_eq!(instances, [Uuid::from_u128(1)]);
        assert_eq!(
            observed.lookalike_pods,
            [format!("db-{}", Uuid::from_u128(3))]
        );
    }
}

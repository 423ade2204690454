//! A model of the cluster for planner tests: applies the planner's actions to
//! an [`Observed`] and plays the other actors (scheduler, kwok, provisioner,
//! PV binder, garbage collection, node agent) one step at a time.
//!
//! The planner never reads the model directly: [`World::through_observe`] writes
//! the world out as cluster objects, keeps them as the caches do (their
//! entries), and reads them back through the real [`observe`], so every
//! planner and property test runs through `observe` too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use uuid::Uuid;

use super::cache::{
    CachedClaim, CachedPod, CachedVolume, ClaimEntry, PodEntry, ReservationEntry, VolumeEntry,
};
use super::model::{
    AppView, ClaimView, InstanceView, Observed, OrphanedVolume, PodView, ReservationView,
    VolumeView,
};
use super::observe::{ClusterObjects, observe};
use super::plan::{Action, Plan, plan};
use super::reservation::ReservationConfig;
use super::wipe_request::WipeRequest;
use crate::api::{KillSelection, NodeLossPolicy, StatefulApp};
use crate::capacity::ANNOTATION_USED;
use crate::names::{
    ANNOTATION_DATA_MISSING, ANNOTATION_NAMESPACE_UID, ANNOTATION_ORPHAN_MARK,
    ANNOTATION_RECLAIMING, ANNOTATION_RESERVATION_HASH, ANNOTATION_SELECTED_NODE,
    ANNOTATION_SIZE_ENFORCEMENT, ANNOTATION_TEMPLATE_HASH, ANNOTATION_WIPE_MARK, InstanceId,
    LABEL_APP, LABEL_INSTANCE, LABEL_NAMESPACE, LABEL_NODE, LABEL_RESERVED_FOR, LABEL_VOLUME,
};

pub struct World {
    pub observed: Observed,
    nodes: Vec<String>,
    next_uuid: u128,
    clock: i64,
    /// First node ever seen per instance: it must never change (I2).
    pub first_node: BTreeMap<Uuid, String>,
    /// Instances whose data was destroyed, and whether a wipe asked for it.
    pub destroyed: Vec<(Uuid, bool)>,
    /// Pods bound straight to a node that its kubelet refuses next (another
    /// pod took the resources in the instant they were free).
    pub refuse_next: usize,
    /// Nodes where reservations cannot be placed (full of pods that
    /// outrank them).
    pub full_nodes: BTreeSet<String>,
}

impl World {
    pub fn new(nodes: usize) -> World {
        let names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
        World {
            observed: Observed {
                app: AppView {
                    name: "postgres".into(),
                    desired: 0,
                    volumes: vec!["pgdata".into(), "wal".into()],
                    volume_sizes: BTreeMap::from([
                        ("pgdata".into(), 1 << 30),
                        ("wal".into(), 1 << 30),
                    ]),
                    template_hash: "v1".into(),
                    kill_selection: KillSelection::YoungestFirst,
                    minimum_health_capacity: 0.5,
                    node_loss: NodeLossPolicy::default(),
                    wipe_requested: BTreeSet::new(),
                    wipe_all: false,
                    hold_resources: true,
                    reservation_hash: "r1".into(),
                    reserved_resources: BTreeMap::new(),
                },
                instances: BTreeMap::new(),
                ready_nodes: names.iter().cloned().collect(),
                known_nodes: names.iter().cloned().collect(),
                not_ready_since: BTreeMap::new(),
                orphaned_volumes: Vec::new(),
                namespace_uid: Some("ns-uid".into()),
                foreign_volumes: Vec::new(),
                adopting: BTreeSet::new(),
                lookalike_pods: Vec::new(),
                direct_nodes: names.iter().cloned().collect(),
                now: Timestamp::from_second(1_700_000_000).unwrap(),
            },
            nodes: names,
            next_uuid: 1,
            clock: 0,
            first_node: BTreeMap::new(),
            destroyed: Vec::new(),
            refuse_next: 0,
            full_nodes: BTreeSet::new(),
        }
    }

    pub fn plan(&mut self) -> Plan {
        let observed = self.through_observe();
        let mut counter = self.next_uuid;
        let result = plan(&observed, &mut || {
            counter += 1;
            Uuid::from_u128(counter)
        });
        self.next_uuid = counter;
        result
    }

    pub fn apply(&mut self, action: &Action) {
        let now = self.observed.now;
        let hash = self.observed.app.template_hash.clone();
        let sizes = self.observed.app.volume_sizes.clone();
        let instances = &mut self.observed.instances;
        match action {
            Action::CreateClaim {
                instance, volume, ..
            } => {
                let view = instances.entry(*instance).or_insert_with(|| InstanceView {
                    uuid: *instance,
                    created: Some(now),
                    ..Default::default()
                });
                view.claims
                    .entry(volume.clone())
                    .or_insert_with(|| ClaimView {
                        name: format!("{instance}-{volume}"),
                        requested: sizes.get(volume).copied(),
                        ..Default::default()
                    });
                // Created bound to its existing volume: the binder completes it.
                if let Some(v) = view.volumes.get_mut(volume) {
                    v.claim_ref_stale = false;
                }
            }
            Action::GrowClaim {
                instance, volume, ..
            } => {
                let claim = instances
                    .get_mut(instance)
                    .and_then(|view| view.claims.get_mut(volume))
                    .expect("a claim grown exists");
                claim.requested = sizes.get(volume).copied();
            }
            Action::RebindVolume { volume_object, .. } => {
                for view in instances.values_mut() {
                    for v in view
                        .volumes
                        .values_mut()
                        .filter(|v| &v.name == volume_object)
                    {
                        v.claim_ref_stale = false;
                    }
                }
            }
            Action::CreatePod { instance, node } => {
                if let Some(view) = instances.get_mut(instance)
                    && view.pod.is_none()
                {
                    // Never beside its own reservation (it would hold the
                    // resources twice), and only on the instance's node.
                    assert!(
                        view.reservation.is_none(),
                        "pod of {instance} created beside its reservation"
                    );
                    if let Some(node) = node {
                        assert_eq!(view.node.as_ref(), Some(node), "bound off its node (I2)");
                    }
                    view.pod = Some(PodView {
                        name: format!("pod-{instance}"),
                        template_hash: hash,
                        node: node.clone(),
                        ..Default::default()
                    });
                }
            }
            Action::CreateReservation {
                instance,
                node,
                reclaim,
            } => {
                if let Some(view) = instances.get_mut(instance)
                    && view.reservation.is_none()
                {
                    assert!(
                        view.pod.as_ref().is_none_or(|p| p.finished || p.deleting),
                        "reservation of {instance} made beside its live pod"
                    );
                    assert_eq!(view.node.as_ref(), Some(node), "reserved off its node");
                    view.reservation = Some(ReservationView {
                        name: format!("reservation-{instance}"),
                        hash: self.observed.app.reservation_hash.clone(),
                        reclaiming: reclaim.is_some(),
                        created: Some(now),
                        ..Default::default()
                    });
                }
            }
            Action::DeleteReservation { instance, .. } => {
                // No grace period: gone at once, as the API server does.
                if let Some(view) = instances.get_mut(instance) {
                    view.reservation = None;
                }
            }
            Action::DeletePod { instance, .. } => {
                if let Some(pod) = instances.get_mut(instance).and_then(|i| i.pod.as_mut()) {
                    pod.deleting = true;
                }
            }
            Action::MarkOrphaned { instance } => {
                if let Some(view) = instances.get_mut(instance) {
                    view.claims
                        .values_mut()
                        .for_each(|c| c.orphan_marked = true);
                    view.volumes
                        .values_mut()
                        .for_each(|v| v.orphan_marked = true);
                }
            }
            Action::MarkForWipe { instance } => {
                if let Some(view) = instances.get_mut(instance) {
                    view.claims.values_mut().for_each(|c| c.wipe_marked = true);
                    view.volumes.values_mut().for_each(|v| v.wipe_marked = true);
                }
            }
            Action::DeleteClaim { instance, claim } => {
                if let Some(view) = instances.get_mut(instance) {
                    view.claims
                        .values_mut()
                        .filter(|c| &c.name == claim)
                        .for_each(|c| c.deleting = true);
                }
            }
            Action::DeleteVolume {
                instance,
                volume_object,
            } => {
                if let Some(view) = instances.get_mut(instance) {
                    view.volumes
                        .values_mut()
                        .filter(|v| &v.name == volume_object)
                        .for_each(|v| v.deleting = true);
                }
            }
        }
    }

    /// One step of everyone else: pods terminate or start, claims get
    /// volumes on the pod's node, deletions complete, the agent wipes.
    pub fn step(&mut self) {
        self.clock += 1;
        self.observed.now = Timestamp::from_second(1_700_000_000 + self.clock).unwrap();
        let now = self.observed.now;
        let ready_nodes = self.observed.ready_nodes.clone();
        let mut gone = Vec::new();
        for (index, view) in self.observed.instances.values_mut().enumerate() {
            if view.pod.as_ref().is_some_and(|p| p.deleting) {
                view.pod = None;
            }
            // Reservations are placed on their node, or go once deleted.
            if view.reservation.as_ref().is_some_and(|r| r.deleting) {
                view.reservation = None;
            }
            if let Some(r) = view.reservation.as_mut()
                && view
                    .node
                    .as_ref()
                    .is_some_and(|n| ready_nodes.contains(n) && !self.full_nodes.contains(n))
            {
                r.placed = true;
                r.running = true;
            }
            // The scheduler: a pod with all its claims is placed on the
            // volumes' node, or (first time) on some node.
            let claims_complete =
                view.claims.len() == 2 && view.claims.values().all(|c| !c.deleting);
            // The kubelet refuses a pod bound to it without room.
            if let Some(pod) = view.pod.as_mut()
                && pod.node.is_some()
                && !pod.running
                && !pod.finished
                && self.refuse_next > 0
            {
                self.refuse_next -= 1;
                pod.finished = true;
                pod.refused = Some("OutOfcpu".into());
            }
            if let Some(pod) = view.pod.as_mut()
                && !pod.running
                && !pod.finished
                && claims_complete
            {
                let node = view
                    .node
                    .clone()
                    .unwrap_or_else(|| self.nodes[index % self.nodes.len()].clone());
                if ready_nodes.contains(&node) {
                    view.node = Some(node.clone());
                    pod.node = Some(node);
                    pod.running = true;
                    pod.ready = true;
                    pod.started_at = Some(now);
                }
            }
            // The provisioner and the binder.
            if let Some(node) = view.node.clone() {
                for (volume, claim) in view.claims.iter_mut().filter(|(_, c)| !c.deleting) {
                    let pv = view
                        .volumes
                        .entry(volume.clone())
                        .or_insert_with(|| VolumeView {
                            name: format!("pv-{}-{volume}", view.uuid),
                            node: Some(node.clone()),
                            claim_ref: Some(claim.name.clone()),
                            wipe_marked: claim.wipe_marked,
                            ..Default::default()
                        });
                    if !pv.deleting && !pv.claim_ref_stale {
                        claim.bound_volume = Some(pv.name.clone());
                    }
                }
            }
            // Claims go once no pod uses them; volumes once unclaimed.
            if view.pod.is_none() {
                view.claims.retain(|_, c| !c.deleting);
            }
            let claimed: BTreeSet<String> = view.claims.keys().cloned().collect();
            let before = view.volumes.len();
            let wiped = view.volumes.values().any(|v| v.deleting && v.wipe_marked);
            view.volumes
                .retain(|name, v| !v.deleting || claimed.contains(name));
            if view.volumes.len() < before {
                self.destroyed.push((view.uuid, wiped));
            }
            // Detached volumes of a replaced instance become orphans.
            if view.claims.is_empty() && view.volumes.values().all(|v| v.orphan_marked) {
                for (volume, object) in std::mem::take(&mut view.volumes) {
                    self.observed.orphaned_volumes.push(OrphanedVolume {
                        instance: view.uuid,
                        volume,
                        object,
                    });
                }
            }
            if view.claims.is_empty()
                && view.volumes.is_empty()
                && view.pod.is_none()
                && view.reservation.is_none()
            {
                gone.push(view.uuid);
            }
            if let Some(node) = &view.node {
                let first = self
                    .first_node
                    .entry(view.uuid)
                    .or_insert_with(|| node.clone());
                assert_eq!(first, node, "instance {} moved node (I2)", view.uuid);
            }
        }
        for uuid in gone {
            self.observed.instances.remove(&uuid);
        }
    }

    /// The node stops answering (NotReady since now).
    pub fn lose_node(&mut self, node: &str) {
        self.observed.ready_nodes.remove(node);
        self.observed.direct_nodes.remove(node);
        self.observed
            .not_ready_since
            .insert(node.to_string(), self.observed.now);
    }

    /// Moves the clock forward without anything else happening.
    pub fn advance(&mut self, seconds: i64) {
        self.clock += seconds;
        self.observed.now = Timestamp::from_second(1_700_000_000 + self.clock).unwrap();
    }

    /// Plans, applies and steps until nothing is left to do. Returns the
    /// number of rounds, or panics if it never settles.
    pub fn converge(&mut self) -> usize {
        for round in 0..50 {
            let plan = self.plan();
            if plan.actions.is_empty() {
                return round;
            }
            for action in &plan.actions {
                self.apply(action);
            }
            self.step();
        }
        panic!("did not converge: {:#?}", self.observed);
    }

    pub fn running(&self) -> usize {
        self.observed
            .instances
            .values()
            .filter(|i| i.pod.as_ref().is_some_and(|p| p.running && !p.deleting))
            .count()
    }

    pub fn live(&self) -> Vec<Uuid> {
        self.observed
            .instances
            .values()
            .filter(|i| !i.wiping())
            .map(|i| i.uuid)
            .collect()
    }
}

/// The app's uid: its pods and reservations are controlled by it.
const APP_UID: &str = "5a1c0000-0000-4000-8000-000000000001";

impl World {
    /// The planner's input, as the controller makes it: the world's pods,
    /// reservations, claims, volumes and nodes written out as the objects
    /// the API server would hold, kept as the caches keep them (entries made
    /// by the caches' own conversion), and read back by the real
    /// [`observe`]. The world's model must come back whole: anything
    /// `observe` drops or misreads fails every planner test.
    pub fn through_observe(&self) -> Observed {
        let model = &self.observed;
        let wipe = WipeRequest {
            valid: model
                .app
                .wipe_requested
                .iter()
                .map(|uuid| InstanceId::new(&model.app.name, *uuid))
                .collect(),
            rejected: Vec::new(),
        };
        let mut observed = observe(
            &self.app_object(),
            &wipe,
            &self.cluster_objects(),
            &ReservationConfig::default(),
            model.now,
        );
        // The app's own part (its template and reservation hashes, ...)
        // is set by the tests, not made from a spec.
        observed.app = model.app.clone();
        assert_eq!(
            &observed, model,
            "observe() did not read back the world's objects as the world holds them"
        );
        observed
    }

    fn app_object(&self) -> StatefulApp {
        let app = &self.observed.app;
        serde_json::from_value(serde_json::json!({
            "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
            "metadata": { "name": app.name, "namespace": NAMESPACE, "uid": APP_UID },
            "spec": {
                "instances": app.desired,
                "template": { "spec": { "containers": [{ "name": "db", "image": "db:1" }] } },
                "volumes": app.volumes.iter().map(|v| serde_json::json!({
                    "name": v, "size": "1Gi", "mountPath": format!("/{v}"),
                })).collect::<Vec<_>>(),
            },
        }))
        .expect("a valid app")
    }

    /// The world as the caches would hold it.
    fn cluster_objects(&self) -> ClusterObjects {
        let model = &self.observed;
        let app = model.app.name.as_str();
        let mut objects = ClusterObjects {
            pods: Vec::new(),
            reservations: Vec::new(),
            claims: Vec::new(),
            volumes: Vec::new(),
            nodes: model
                .known_nodes
                .iter()
                .map(|name| Arc::new(node(name, model)))
                .collect(),
            gone_nodes: BTreeMap::new(),
            namespace_uid: model.namespace_uid.clone(),
        };
        for i in model.instances.values() {
            let labels = |volume: Option<&str>| {
                let mut labels = BTreeMap::from([
                    (LABEL_APP.to_string(), app.to_string()),
                    (LABEL_INSTANCE.to_string(), i.uuid.to_string()),
                ]);
                if let Some(volume) = volume {
                    labels.insert(LABEL_VOLUME.to_string(), volume.to_string());
                }
                labels
            };
            for (volume, claim) in &i.claims {
                let mut annotations = marks(claim.wipe_marked, claim.orphan_marked);
                if let Some(node) = &i.node {
                    annotations.insert(ANNOTATION_SELECTED_NODE.into(), node.clone());
                }
                let storage = |bytes: Option<u64>| bytes.map(|b| serde_json::json!(b.to_string()));
                let object: CachedClaim = serde_json::from_value(serde_json::json!({
                    "metadata": meta(&claim.name, Some(&claim_uid(&claim.name)), i.created,
                                     claim.deleting, labels(Some(volume)), annotations, None),
                    "spec": {
                        "volumeName": claim.bound_volume,
                        "resources": { "requests": { "storage": storage(claim.requested) } },
                    },
                    "status": {
                        "phase": if claim.bound_volume.is_some() { "Bound" } else { "Pending" },
                        "capacity": { "storage": storage(claim.capacity) },
                    },
                }))
                .expect("a valid claim");
                objects.claims.push(Arc::new(ClaimEntry::from(&object)));
            }
            for (volume, pv) in &i.volumes {
                let object = volume_object(i.uuid, volume, pv, i.created, model);
                objects.volumes.push(Arc::new(VolumeEntry::from(&object)));
            }
            if let Some(pod) = &i.pod {
                let phase = match (pod.finished, pod.running) {
                    (true, _) => "Failed",
                    (false, true) => "Running",
                    (false, false) => "Pending",
                };
                let mut conditions = vec![serde_json::json!({
                    "type": "Ready", "status": if pod.ready { "True" } else { "False" },
                })];
                if let Some(verdict) = &pod.unschedulable {
                    conditions.push(serde_json::json!({
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": verdict.message,
                        "lastTransitionTime": verdict.since.map(|t| t.to_string()),
                    }));
                }
                let annotations = BTreeMap::from([(
                    ANNOTATION_TEMPLATE_HASH.to_string(),
                    pod.template_hash.clone(),
                )]);
                let object: CachedPod = serde_json::from_value(serde_json::json!({
                    "metadata": meta(&pod.name, None, i.created, pod.deleting, labels(None),
                                     annotations, Some(app)),
                    "spec": { "nodeName": pod.node },
                    "status": {
                        "phase": phase,
                        "reason": pod.refused,
                        "startTime": pod.started_at.map(|t| t.to_string()),
                        "conditions": conditions,
                    },
                }))
                .expect("a valid pod");
                objects.pods.push(Arc::new(PodEntry::from(&object)));
            }
            if let Some(r) = &i.reservation {
                let mut annotations =
                    BTreeMap::from([(ANNOTATION_RESERVATION_HASH.to_string(), r.hash.clone())]);
                if r.reclaiming {
                    annotations.insert(ANNOTATION_RECLAIMING.into(), "OutOfcpu".into());
                }
                let labels = BTreeMap::from([
                    (LABEL_RESERVED_FOR.to_string(), app.to_string()),
                    (LABEL_INSTANCE.to_string(), i.uuid.to_string()),
                ]);
                let node = r.placed.then(|| i.node.clone().unwrap_or_default());
                let object: CachedPod = serde_json::from_value(serde_json::json!({
                    "metadata": meta(&r.name, None, r.created, r.deleting, labels, annotations,
                                     Some(app)),
                    "spec": { "nodeName": node },
                    "status": { "phase": if r.running { "Running" } else { "Pending" } },
                }))
                .expect("a valid reservation pod");
                objects
                    .reservations
                    .push(Arc::new(ReservationEntry::from(&object)));
            }
        }
        for orphan in &model.orphaned_volumes {
            let object =
                volume_object(orphan.instance, &orphan.volume, &orphan.object, None, model);
            objects.volumes.push(Arc::new(VolumeEntry::from(&object)));
        }
        objects
    }
}

/// The namespace the simulated app lives in.
const NAMESPACE: &str = "shop";

/// A claim's uid: one per claim name (a claim made again under its name
/// is told apart by a volume's stale `claimRef`, see [`volume_object`]).
fn claim_uid(name: &str) -> String {
    format!("uid-{name}")
}

/// The wipe and orphan marks an object carries.
fn marks(wipe: bool, orphan: bool) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    if wipe {
        annotations.insert(ANNOTATION_WIPE_MARK.to_string(), "true".to_string());
    }
    if orphan {
        annotations.insert(ANNOTATION_ORPHAN_MARK.to_string(), "true".to_string());
    }
    annotations
}

/// An object's metadata; `owner`: the app that controls it.
fn meta(
    name: &str,
    uid: Option<&str>,
    created: Option<Timestamp>,
    deleting: bool,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner: Option<&str>,
) -> serde_json::Value {
    let owners: Vec<serde_json::Value> = owner
        .into_iter()
        .map(|app| {
            serde_json::json!({ "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
                                "name": app, "uid": APP_UID, "controller": true })
        })
        .collect();
    serde_json::json!({
        "name": name,
        "namespace": NAMESPACE,
        "uid": uid,
        "creationTimestamp": created.map(|t| t.to_string()),
        "deletionTimestamp": deleting.then_some("2023-11-14T22:13:20Z"),
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": owners,
    })
}

/// A volume of instance `uuid` as the provisioner makes it.
fn volume_object(
    uuid: Uuid,
    volume: &str,
    pv: &VolumeView,
    created: Option<Timestamp>,
    model: &Observed,
) -> CachedVolume {
    let mut labels = BTreeMap::from([
        (LABEL_APP.to_string(), model.app.name.clone()),
        (LABEL_NAMESPACE.to_string(), NAMESPACE.to_string()),
        (LABEL_INSTANCE.to_string(), uuid.to_string()),
        (LABEL_VOLUME.to_string(), volume.to_string()),
    ]);
    if let Some(node) = &pv.node {
        labels.insert(LABEL_NODE.to_string(), node.clone());
    }
    let mut annotations = marks(pv.wipe_marked, pv.orphan_marked);
    if let Some(uid) = &model.namespace_uid {
        annotations.insert(ANNOTATION_NAMESPACE_UID.into(), uid.clone());
    }
    if let Some(report) = &pv.data_missing {
        annotations.insert(ANNOTATION_DATA_MISSING.into(), report.clone());
    }
    if let Some(used) = pv.used {
        annotations.insert(ANNOTATION_USED.into(), used.to_string());
    }
    if pv.size_enforced {
        annotations.insert(ANNOTATION_SIZE_ENFORCEMENT.into(), "quota".into());
    }
    // A stale claimRef carries the uid of the claim of that name before
    // it was made again.
    let claim_uid = pv.claim_ref.as_deref().map(|claim| {
        if pv.claim_ref_stale {
            format!("{}-before", claim_uid(claim))
        } else {
            claim_uid(claim)
        }
    });
    serde_json::from_value(serde_json::json!({
        "metadata": meta(&pv.name, None, created, pv.deleting, labels, annotations, None),
        "spec": { "claimRef": pv.claim_ref.as_ref().map(|claim| serde_json::json!({
            "name": claim, "namespace": NAMESPACE, "uid": claim_uid,
        })) },
    }))
    .expect("a valid volume")
}

/// A node as the node cache keeps it: Ready, or not since when.
fn node(name: &str, model: &Observed) -> Node {
    let condition = if model.ready_nodes.contains(name) {
        serde_json::json!({ "type": "Ready", "status": "True" })
    } else {
        serde_json::json!({
            "type": "Ready", "status": "False",
            "lastTransitionTime": model.not_ready_since.get(name).map(|t| t.to_string()),
        })
    };
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "status": { "conditions": [condition] },
    }))
    .expect("a valid node")
}

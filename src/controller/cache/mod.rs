//! Watched caches of what the controller reads: the pods, reservation pods,
//! claims and volumes of StatefulApps (by label, grouped by app), their
//! PodDisruptionBudgets, and the nodes. One watch per
//! kind feeds both a cache and the controller's triggers; reconciles read
//! the caches, so a busy app costs the API server no lists. The caches keep
//! what [`super::observe`] reads: apps less their managed fields, and for
//! pods, claims and volumes a compact entry each, grouped by app. One file
//! per cached kind holds its wire type, its entry and the conversion
//! ([`pods`], [`claims`], [`volumes`], [`nodes`], [`namespaces`]).
//!
//! A cache lags the controller's own writes by a watch event; see
//! [`super::expectations`] for how planning waits for it.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

mod apps;
mod by_app;
pub mod claims;
pub mod meta;
mod namespaces;
pub mod nodes;
pub mod pods;
pub mod volumes;

use self::apps::SeenStatuses;
use self::by_app::{ByApp, FileAs, by_app};
use self::namespaces::NamespaceStore;
use self::nodes::NodeCache;
pub use self::nodes::NodeStore;
use super::observe::ClusterObjects;
use crate::api::StatefulApp;
use crate::names::{LABEL_APP, LABEL_NAMESPACE, LABEL_NODE, LABEL_RESERVED_FOR};
use crate::watch::errors_logged;

pub use self::by_app::AppKey;
pub use self::claims::{CachedClaim, ClaimEntry};
pub use self::meta::Meta;
pub use self::pods::{CachedPod, PodEntry, ReservationEntry};
pub use self::volumes::{CachedVolume, VolumeEntry};

/// Objects of one kind as the watch delivers them, for the
/// controller's triggers; errors are logged, not passed on (see
/// [`crate::watch`]).
pub type Updates<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The read side, shared by every reconcile.
#[derive(Clone)]
pub struct Caches {
    apps: Store<StatefulApp>,
    /// A digest of each app's status as the API server last showed it
    /// (the app store keeps only part of it).
    statuses: SeenStatuses,
    pods: ByApp<PodEntry>,
    reservations: ByApp<ReservationEntry>,
    claims: ByApp<ClaimEntry>,
    volumes: ByApp<VolumeEntry>,
    nodes: NodeStore,
    namespaces: NamespaceStore,
    /// The apps' PodDisruptionBudgets (see [`super::disruption`]).
    budgets: Store<PodDisruptionBudget>,
}

/// The watch streams that fill [`Caches`]; the controller must poll them.
pub struct Feeds {
    pub apps: Updates<StatefulApp>,
    pub pods: Updates<CachedPod>,
    /// Reservation pods of stopped instances (their own label: they are
    /// not the app's pods).
    pub reservations: Updates<CachedPod>,
    pub claims: Updates<CachedClaim>,
    pub volumes: Updates<CachedVolume>,
    /// One item per node readiness change.
    pub node_changes: BoxStream<'static, ()>,
    /// Fills the namespace cache; yields nothing.
    pub namespaces: BoxStream<'static, ()>,
    pub budgets: Updates<PodDisruptionBudget>,
}

pub fn start(client: &Client) -> (Caches, Feeds) {
    let labelled = || watcher::Config::default().labels(LABEL_APP);
    let all = watcher::Config::default;
    let statuses = SeenStatuses::default();
    let recorder = statuses.clone();
    let (apps, apps_feed) = cached(Api::all(client.clone()), all(), move |app| {
        recorder.slim(app)
    });
    let (pods, pods_feed) = grouped(Api::all(client.clone()), labelled(), pod_entry);
    let reserving = watcher::Config::default().labels(LABEL_RESERVED_FOR);
    let (reservations, reservations_feed) =
        grouped(Api::all(client.clone()), reserving, reservation_entry);
    let (claims, claims_feed) = grouped(Api::all(client.clone()), labelled(), claim_entry);
    let (volumes, volumes_feed) = grouped(Api::all(client.clone()), labelled(), volume_entry);
    let nodes = NodeCache::new(client.clone());
    let (namespaces, namespaces_feed) = namespaces::start(client.clone());
    let (budgets, budgets_feed) = cached(
        Api::all(client.clone()),
        labelled(),
        |b: &mut PodDisruptionBudget| b.metadata.managed_fields = None,
    );
    let caches = Caches {
        apps,
        statuses,
        pods,
        reservations,
        claims,
        volumes,
        nodes: nodes.store,
        namespaces,
        budgets,
    };
    let feeds = Feeds {
        apps: apps_feed,
        pods: pods_feed,
        reservations: reservations_feed,
        claims: claims_feed,
        volumes: volumes_feed,
        node_changes: nodes.readiness_changes,
        namespaces: namespaces_feed,
        budgets: budgets_feed,
    };
    (caches, feeds)
}

fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, Updates<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    let feed = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .touched_objects();
    let feed = errors_logged(feed, K::kind(&())).boxed();
    (reader, feed)
}

/// Like [`cached`], keeping an entry per object, grouped by app (see
/// [`by_app`]).
fn grouped<K, V>(
    api: Api<K>,
    config: watcher::Config,
    file_as: FileAs<K, V>,
) -> (ByApp<V>, Updates<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
    V: Send + Sync + 'static,
{
    let (reader, mut writer) = by_app(file_as);
    let feed = watcher(api, config)
        .default_backoff()
        .inspect_ok(move |event| writer.apply(event))
        .touched_objects();
    let feed = errors_logged(feed, K::kind(&())).boxed();
    (reader, feed)
}

fn pod_entry(pod: &CachedPod) -> Option<(AppKey, PodEntry)> {
    Some((in_its_namespace(pod)?, pod.into()))
}

fn reservation_entry(pod: &CachedPod) -> Option<(AppKey, ReservationEntry)> {
    Some((reserved_for(pod)?, pod.into()))
}

/// The app a reservation pod holds resources for.
pub(super) fn reserved_for<K: Resource>(object: &K) -> Option<AppKey> {
    let app = object.labels().get(LABEL_RESERVED_FOR)?;
    Some((object.namespace()?, app.clone()))
}

fn claim_entry(claim: &CachedClaim) -> Option<(AppKey, ClaimEntry)> {
    Some((in_its_namespace(claim)?, claim.into()))
}

fn volume_entry(pv: &CachedVolume) -> Option<(AppKey, VolumeEntry)> {
    Some((in_labelled_namespace(pv)?, pv.into()))
}

/// The app of a pod or claim: its label, in the object's namespace.
pub(super) fn in_its_namespace<K: Resource>(object: &K) -> Option<AppKey> {
    let app = object.labels().get(LABEL_APP)?;
    Some((object.namespace()?, app.clone()))
}

/// The app of a volume (cluster-scoped): its labels name app and namespace.
pub(super) fn in_labelled_namespace<K: Resource>(object: &K) -> Option<AppKey> {
    let labels = object.labels();
    Some((
        labels.get(LABEL_NAMESPACE)?.clone(),
        labels.get(LABEL_APP)?.clone(),
    ))
}

impl Caches {
    /// The nodes, as cached for every reconcile (the provisioner reads
    /// their hostnames there).
    pub fn nodes(&self) -> NodeStore {
        self.nodes.clone()
    }

    /// A digest of app `key`'s (`namespace/name`) status as the API server
    /// last showed it.
    pub fn seen_status(&self, key: &str) -> Option<u64> {
        self.statuses.get(key)
    }

    /// The app store the controller serves from.
    pub fn apps(&self) -> Store<StatefulApp> {
        self.apps.clone()
    }

    /// Whether every cache holds a full first list. Never waits: the
    /// controller polls the feeds only while it has room for reconciles, so
    /// a reconcile waiting for a cache would keep it from filling.
    pub fn ready(&self) -> bool {
        self.pods.ready()
            && self.reservations.ready()
            && self.claims.ready()
            && self.volumes.ready()
            && self.nodes.ready()
            && self.namespaces.ready()
            && self.budgets.wait_until_ready().now_or_never().is_some()
    }

    /// The PodDisruptionBudget named `name` in `ns`, if the app label is on it.
    pub fn budget(&self, ns: &str, name: &str) -> Option<Arc<PodDisruptionBudget>> {
        self.budgets.get(&ObjectRef::new(name).within(ns))
    }

    /// Everything cached about app `name` in `ns`; `None` until [`ready`].
    ///
    /// [`ready`]: Caches::ready
    pub fn objects_of(&self, ns: &str, name: &str) -> Option<ClusterObjects> {
        if !self.ready() {
            return None;
        }
        let volumes = self.volumes.of_app(ns, name);
        let gone_nodes = self
            .nodes
            .gone_since(volumes.iter().filter_map(|v| v.meta.label(LABEL_NODE)));
        Some(ClusterObjects {
            pods: self.pods.of_app(ns, name),
            reservations: self.reservations.of_app(ns, name),
            claims: self.claims.of_app(ns, name),
            volumes,
            nodes: self.nodes.snapshot(),
            gone_nodes,
            namespace_uid: self.namespaces.uid(ns),
        })
    }
}

//! Watched caches of what the controller reads: the pods, claims and volumes
//! of StatefulApps (by label), and the nodes. One watch per kind feeds both
//! a cache and the controller's triggers; reconciles read the caches, so a
//! busy app costs the API server no lists. Cached objects are trimmed to
//! what [`super::observe`] reads.
//!
//! A cache lags the controller's own writes by a watch event; see
//! [`super::expectations`] for how planning waits for it.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, Pod, PodCondition, PodSpec, PodStatus,
};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::nodes::{NodeCache, NodeStore};
use super::observe::ClusterObjects;
use crate::api::StatefulApp;
use crate::names::{LABEL_APP, LABEL_NAMESPACE};

/// Objects of one kind as the watch delivers them (trimmed), for the
/// controller's triggers.
pub type Updates<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The read side, shared by every reconcile.
#[derive(Clone)]
pub struct Caches {
    apps: Store<StatefulApp>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    nodes: NodeStore,
}

/// The watch streams that fill [`Caches`]; the controller must poll them.
pub struct Feeds {
    pub apps: Updates<StatefulApp>,
    pub pods: Updates<Pod>,
    pub claims: Updates<PersistentVolumeClaim>,
    pub volumes: Updates<PersistentVolume>,
    /// One item per node readiness change.
    pub node_changes: BoxStream<'static, ()>,
}

pub fn start(client: &Client) -> (Caches, Feeds) {
    let labelled = || watcher::Config::default().labels(LABEL_APP);
    let (apps, apps_feed) = cached(Api::all(client.clone()), watcher::Config::default(), |_| {});
    let (pods, pods_feed) = cached(Api::all(client.clone()), labelled(), trim_pod);
    let (claims, claims_feed) = cached(Api::all(client.clone()), labelled(), |_| {});
    let (volumes, volumes_feed) = cached(Api::all(client.clone()), labelled(), |_| {});
    let nodes = NodeCache::new(client.clone());
    let caches = Caches {
        apps,
        pods,
        claims,
        volumes,
        nodes: nodes.store,
    };
    let feeds = Feeds {
        apps: apps_feed,
        pods: pods_feed,
        claims: claims_feed,
        volumes: volumes_feed,
        node_changes: nodes.readiness_changes,
    };
    (caches, feeds)
}

fn cached<K>(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> (Store<K>, Updates<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    let feed = watcher(api, config)
        .default_backoff()
        .modify(move |object: &mut K| {
            object.meta_mut().managed_fields = None;
            trim(object);
        })
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, feed)
}

/// A pod as `observe` needs it: identity, labels, annotations, its node,
/// phase, readiness and start time.
fn trim_pod(pod: &mut Pod) {
    let node_name = pod.spec.as_mut().and_then(|s| s.node_name.take());
    pod.spec = Some(PodSpec {
        node_name,
        ..Default::default()
    });
    if let Some(status) = pod.status.take() {
        let ready: Option<Vec<PodCondition>> = status
            .conditions
            .map(|cs| cs.into_iter().filter(|c| c.type_ == "Ready").collect());
        pod.status = Some(PodStatus {
            phase: status.phase,
            conditions: ready,
            start_time: status.start_time,
            ..Default::default()
        });
    }
}

impl Caches {
    /// The app store the controller serves from.
    pub fn apps(&self) -> Store<StatefulApp> {
        self.apps.clone()
    }

    /// Whether every cache holds a full first list. Never waits: the
    /// controller polls the feeds only while it has room for reconciles, so
    /// a reconcile waiting for a cache would keep it from filling.
    pub fn ready(&self) -> bool {
        filled(&self.pods) && filled(&self.claims) && filled(&self.volumes) && self.nodes.ready()
    }

    /// Everything cached about app `name` in `ns`; `None` until [`ready`].
    ///
    /// [`ready`]: Caches::ready
    pub fn objects_of(&self, ns: &str, name: &str) -> Option<ClusterObjects> {
        if !self.ready() {
            return None;
        }
        let of_app = |labels: &std::collections::BTreeMap<String, String>| {
            labels.get(LABEL_APP).map(String::as_str) == Some(name)
        };
        Some(ClusterObjects {
            pods: filtered(&self.pods, |p| is_in(p, ns) && of_app(p.labels())),
            claims: filtered(&self.claims, |c| is_in(c, ns) && of_app(c.labels())),
            volumes: filtered(&self.volumes, |v| {
                of_app(v.labels())
                    && v.labels().get(LABEL_NAMESPACE).map(String::as_str) == Some(ns)
            }),
            nodes: self.nodes.snapshot(),
        })
    }
}

/// Whether `store` has received its first full list (never waits).
pub(super) fn filled<K: Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> bool {
    store.wait_until_ready().now_or_never().is_some()
}

fn is_in<K: Resource>(object: &Arc<K>, ns: &str) -> bool {
    object.meta().namespace.as_deref() == Some(ns)
}

fn filtered<K>(store: &Store<K>, keep: impl Fn(&Arc<K>) -> bool) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().into_iter().filter(|o| keep(o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trimmed_pods_keep_what_observe_reads() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p", "labels": { "a": "b" }, "annotations": { "h": "1" },
                          "managedFields": [{ "manager": "x" }] },
            "spec": { "nodeName": "n1", "containers": [{ "name": "c", "image": "i" }] },
            "status": { "phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                        "conditions": [{ "type": "Ready", "status": "True" },
                                       { "type": "PodScheduled", "status": "True" }],
                        "containerStatuses": [] },
        }))
        .unwrap();
        trim_pod(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert!(spec.containers.is_empty());
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.start_time.is_some());
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        assert!(status.container_statuses.is_none());
        assert_eq!(pod.labels().get("a").map(String::as_str), Some("b"));
    }
}

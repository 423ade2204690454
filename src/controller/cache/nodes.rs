//! One watched cache of the cluster's nodes, shared by every reconcile.
//!
//! A reconcile needs only each node's name, Ready condition, and whether
//! pods may be bound to it directly (cordon, taints); the cache keeps
//! nothing else (node objects carry images, addresses and managed
//! fields, which at thousands of reconciles were most of the controller's
//! memory and API traffic when nodes were listed each time).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::controller::reservation::NodePlacement;
use crate::hostname::LABEL_HOSTNAME;

/// Read side of the cache.
#[derive(Clone)]
pub struct NodeStore(Store<Node>, Gone);

/// Since when each node whose object is gone has been known gone: a Node
/// deleted is lost from then, not for good at once (the same machine may
/// register it again). Kept in memory only: a restarted controller counts
/// from when it first misses a node, which only ever waits longer.
#[derive(Clone, Default)]
struct Gone(Arc<Mutex<BTreeMap<String, Timestamp>>>);

impl Gone {
    fn went(&self, name: String) {
        let mut gone = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        gone.entry(name).or_insert_with(Timestamp::now);
    }

    fn back(&self, name: &str) {
        let mut gone = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        gone.remove(name);
    }
}

impl NodeStore {
    /// Whether the first full list has arrived.
    pub fn ready(&self) -> bool {
        // The store is ready once its first full list has arrived; never
        // waits (see `Caches::ready`).
        self.0.wait_until_ready().now_or_never().is_some()
    }

    /// The value that selects node `name` (see [`crate::hostname`]), if
    /// the node is in the cache.
    pub fn hostname(&self, name: &str) -> Option<String> {
        self.0
            .get(&ObjectRef::new(name))
            .map(|node| crate::hostname::of(&node))
    }

    /// Every known node.
    pub fn snapshot(&self) -> Vec<Arc<Node>> {
        self.0.state()
    }

    /// For each of `names` that no node object has: since when it is
    /// known gone (from now, for one missed only now).
    pub fn gone_since<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, Timestamp> {
        let mut gone = self.1.0.lock().unwrap_or_else(PoisonError::into_inner);
        names
            .into_iter()
            .filter(|name| self.0.get(&ObjectRef::new(name)).is_none())
            .map(|name| {
                let since = *gone.entry(name.to_string()).or_insert_with(Timestamp::now);
                (name.to_string(), since)
            })
            .collect()
    }
}

/// The cache and the stream that keeps it filled. The stream yields an item
/// whenever a node's readiness changes or a node goes away: every app may
/// have instances there and must be looked at again.
pub struct NodeCache {
    pub store: NodeStore,
    pub readiness_changes: BoxStream<'static, ()>,
}

impl NodeCache {
    pub fn new(client: Client) -> NodeCache {
        let (reader, writer) = reflector::store::<Node>();
        let gone = Gone::default();
        let mut tracker = ReadinessTracker {
            gone: gone.clone(),
            ..ReadinessTracker::default()
        };
        let readiness_changes = watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(trim)
            .reflect(writer)
            .filter_map(move |event| {
                let changed = match event {
                    Ok(event) => tracker.changed(&event),
                    Err(error) => {
                        tracing::warn!(%error, "node watch failed, retrying");
                        false
                    }
                };
                futures::future::ready(changed.then_some(()))
            })
            .boxed();
        NodeCache {
            store: NodeStore(reader, gone),
            readiness_changes,
        }
    }
}

/// Keeps the name, the hostname label where it is not the name (the
/// provisioner pins volumes by it), the Ready condition, the cordon and
/// the taints that keep pods off.
fn trim(node: &mut Node) {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready").cloned());
    let name = node.metadata.name.take();
    let hostname = node
        .metadata
        .labels
        .take()
        .and_then(|mut labels| labels.remove_entry(LABEL_HOSTNAME))
        .filter(|(_, value)| Some(value) != name.as_ref());
    node.metadata = ObjectMeta {
        name,
        uid: node.metadata.uid.take(),
        resource_version: node.metadata.resource_version.take(),
        labels: hostname.map(|label| BTreeMap::from([label])),
        ..Default::default()
    };
    node.spec = node.spec.take().map(|spec| NodeSpec {
        unschedulable: spec.unschedulable,
        taints: spec.taints.map(|taints| {
            taints
                .into_iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .collect()
        }),
        ..Default::default()
    });
    node.status = Some(NodeStatus {
        conditions: ready.map(|c| vec![c]),
        ..Default::default()
    });
}

/// Whether pods may be bound to the node without kube-scheduler.
pub fn placement(node: &Node) -> NodePlacement {
    let spec = node.spec.as_ref();
    NodePlacement {
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Remembers each node's readiness to tell real changes from heartbeats.
#[derive(Default)]
struct ReadinessTracker {
    ready: BTreeMap<String, bool>,
    /// Nodes seen during a (re-)list in progress.
    listing: Option<BTreeSet<String>>,
    gone: Gone,
}

impl ReadinessTracker {
    fn changed(&mut self, event: &Event<Node>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeSet::new());
                false
            }
            Event::InitApply(node) => {
                if let Some(seen) = &mut self.listing {
                    seen.insert(node.name_any());
                }
                self.update(node)
            }
            Event::InitDone => {
                // Nodes deleted while the watch was down are missing here.
                let seen = self.listing.take().unwrap_or_default();
                let before = self.ready.len();
                let gone = &self.gone;
                self.ready.retain(|name, _| {
                    let kept = seen.contains(name);
                    if !kept {
                        gone.went(name.clone());
                    }
                    kept
                });
                self.ready.len() != before
            }
            Event::Apply(node) => self.update(node),
            Event::Delete(node) => {
                self.gone.went(node.name_any());
                self.ready.remove(&node.name_any()).is_some()
            }
        }
    }

    fn update(&mut self, node: &Node) -> bool {
        self.gone.back(&node.name_any());
        let ready = is_ready(node);
        self.ready.insert(node.name_any(), ready) != Some(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "a": "b" }, "managedFields": [] },
            "status": {
                "conditions": [
                    { "type": "MemoryPressure", "status": "False" },
                    { "type": "Ready", "status": ready },
                ],
                "images": [{ "names": ["postgres:16"], "sizeBytes": 1 }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn trimming_keeps_only_name_and_readiness() {
        let mut n = node("n1", "True");
        trim(&mut n);
        assert_eq!(n.name_any(), "n1");
        assert!(n.metadata.labels.is_none());
        let status = n.status.as_ref().unwrap();
        assert!(status.images.is_none());
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        assert!(is_ready(&n));
    }

    #[test]
    fn trimming_keeps_a_hostname_only_where_it_is_not_the_name() {
        let mut same = node("n1", "True");
        same.labels_mut().insert(LABEL_HOSTNAME.into(), "n1".into());
        trim(&mut same);
        assert!(same.metadata.labels.is_none());
        assert_eq!(crate::hostname::of(&same), "n1");

        let mut other = node("ip-10-0-0-7.ec2.internal", "True");
        other
            .labels_mut()
            .insert(LABEL_HOSTNAME.into(), "db-7".into());
        trim(&mut other);
        assert_eq!(crate::hostname::of(&other), "db-7");
        assert_eq!(other.labels().len(), 1);
    }

    #[test]
    fn trimming_keeps_the_cordon_and_the_taints_that_keep_pods_off() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": { "name": "n1" },
            "spec": { "unschedulable": true, "podCIDR": "10.0.0.0/24", "taints": [
                { "key": "a", "effect": "NoSchedule" },
                { "key": "b", "effect": "PreferNoSchedule" },
                { "key": "c", "effect": "NoExecute" },
            ]},
        }))
        .unwrap();
        trim(&mut n);
        let placement = placement(&n);
        assert!(placement.unschedulable);
        let keys: Vec<&str> = placement.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
        assert!(n.spec.unwrap().pod_cidr.is_none());
    }

    #[test]
    fn only_readiness_changes_and_deletions_trigger() {
        let mut t = ReadinessTracker::default();
        assert!(!t.changed(&Event::Init));
        assert!(t.changed(&Event::InitApply(node("n1", "True"))));
        assert!(t.changed(&Event::InitApply(node("n2", "True"))));
        assert!(!t.changed(&Event::InitDone));
        assert!(!t.changed(&Event::Apply(node("n1", "True"))), "heartbeat");
        assert!(t.changed(&Event::Apply(node("n1", "Unknown"))));
        assert!(t.changed(&Event::Delete(node("n1", "Unknown"))));
        assert!(!t.changed(&Event::Delete(node("n1", "Unknown"))));
        // A re-list that no longer finds n2: it was deleted meanwhile.
        assert!(!t.changed(&Event::Init));
        assert!(t.changed(&Event::InitDone));
        assert!(t.ready.is_empty());
    }

    #[test]
    fn a_deleted_node_is_gone_until_registered_again() {
        let mut t = ReadinessTracker::default();
        t.changed(&Event::Apply(node("n1", "True")));
        assert!(t.gone.0.lock().unwrap().is_empty());
        t.changed(&Event::Delete(node("n1", "True")));
        let since = t.gone.0.lock().unwrap()["n1"];
        // Deleted again (a re-list): still gone since the first time.
        t.changed(&Event::Delete(node("n1", "True")));
        assert_eq!(t.gone.0.lock().unwrap()["n1"], since);
        t.changed(&Event::Apply(node("n1", "True")));
        assert!(t.gone.0.lock().unwrap().is_empty(), "registered again");
    }
}

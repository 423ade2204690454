//! One watched cache of the namespaces' identities (name -> uid), shared by
//! every reconcile: a volume is adopted again only by an app in the same
//! namespace object it was made in, not merely one of the same name (a
//! namespace deleted and created again is another tenant's).

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// Read side of the cache.
#[derive(Clone)]
pub struct NamespaceStore(Store<PartialObjectMeta<Namespace>>);

impl NamespaceStore {
    /// Whether the first full list has arrived (never waits).
    pub fn ready(&self) -> bool {
        self.0.wait_until_ready().now_or_never().is_some()
    }

    /// The uid of namespace `name`, if it exists.
    pub fn uid(&self, name: &str) -> Option<String> {
        self.0.get(&ObjectRef::new(name))?.uid()
    }
}

/// The cache and the stream that fills it (it triggers nothing: a reconcile
/// that finds its namespace unknown comes back shortly).
pub fn start(client: Client) -> (NamespaceStore, BoxStream<'static, ()>) {
    let (reader, writer) = reflector::store();
    // Metadata only: a namespace's spec and status are never read.
    let namespaces = Api::<PartialObjectMeta<Namespace>>::all(client);
    let feed = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .modify(|ns| {
            // Only the identity is read.
            ns.metadata.managed_fields = None;
            ns.metadata.labels = None;
            ns.metadata.annotations = None;
        })
        .reflect(writer)
        .filter_map(|event| {
            if let Err(error) = event {
                tracing::warn!(%error, "namespace watch failed, retrying");
            }
            futures::future::ready(None::<()>)
        })
        .boxed();
    (NamespaceStore(reader), feed)
}

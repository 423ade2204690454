//! A watched cache grouped by the app an object belongs to, so that a
//! reconcile reads its own app's objects without looking at anyone else's.
//! (kube-runtime's reflector store is a flat map: reading one app's objects
//! from it means copying and filtering every object of every app, which at
//! a thousand apps was most of the controller's CPU.)
//!
//! Fed by a watcher's events, with the same semantics as the reflector: a
//! relist is buffered and replaces the cache whole when it is complete. It
//! keeps an entry made from each object (see [`super::meta`]), not the
//! object.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use kube::Resource;
use kube::runtime::watcher::Event;

/// An app: its namespace and name.
pub type AppKey = (String, String);

/// Says which app an object belongs to and makes its entry; `None` leaves
/// it out of the cache.
pub type FileAs<K, V> = fn(&K) -> Option<(AppKey, V)>;

/// An object's identity: its namespace (none for a cluster-scoped object)
/// and name.
type ObjectId = (Option<String>, String);

/// The read side, cheap to clone.
pub struct ByApp<V> {
    shared: Arc<RwLock<Grouped<V>>>,
}

impl<V> Clone for ByApp<V> {
    fn clone(&self) -> Self {
        ByApp {
            shared: self.shared.clone(),
        }
    }
}

/// The write side, for the watch stream of `K`.
pub struct ByAppWriter<K, V> {
    shared: Arc<RwLock<Grouped<V>>>,
    file_as: FileAs<K, V>,
    /// A relist in progress.
    relist: Option<Grouped<V>>,
}

/// Each object's identity and each app's key are held once and shared by
/// both maps (as strings of their own, they were a tenth of the
/// controller's memory at 5,000 instances).
struct Grouped<V> {
    apps: HashMap<Arc<AppKey>, HashMap<Arc<ObjectId>, Arc<V>>>,
    /// Where each object is filed, to move it when its labels change.
    filed_under: HashMap<Arc<ObjectId>, Arc<AppKey>>,
    /// Whether a full list has arrived.
    ready: bool,
}

impl<V> Default for Grouped<V> {
    fn default() -> Self {
        Grouped {
            apps: HashMap::new(),
            filed_under: HashMap::new(),
            ready: false,
        }
    }
}

pub fn by_app<K, V>(file_as: FileAs<K, V>) -> (ByApp<V>, ByAppWriter<K, V>) {
    let shared = Arc::new(RwLock::new(Grouped::default()));
    let reader = ByApp {
        shared: shared.clone(),
    };
    let writer = ByAppWriter {
        shared,
        file_as,
        relist: None,
    };
    (reader, writer)
}

impl<V> ByApp<V> {
    /// Whether a full list has arrived.
    pub fn ready(&self) -> bool {
        self.shared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
    }

    /// The entries of the app `name` in `ns`.
    pub fn of_app(&self, ns: &str, name: &str) -> Vec<Arc<V>> {
        let grouped = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        let key = (ns.to_owned(), name.to_owned());
        grouped
            .apps
            .get(&key)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl<K: Resource, V> ByAppWriter<K, V> {
    pub fn apply(&mut self, event: &Event<K>) {
        match event {
            Event::Apply(object) => self.write().file(self.file_as, object),
            Event::Delete(object) => self.write().remove(&id_of(object)),
            Event::Init => self.relist = Some(Grouped::default()),
            Event::InitApply(object) => {
                let file_as = self.file_as;
                self.relist
                    .get_or_insert_with(Grouped::default)
                    .file(file_as, object);
            }
            Event::InitDone => {
                let mut listed = self.relist.take().unwrap_or_default();
                listed.ready = true;
                *self.write() = listed;
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Grouped<V>> {
        self.shared.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V> Grouped<V> {
    fn file<K: Resource>(&mut self, file_as: FileAs<K, V>, object: &K) {
        let id = id_of(object);
        self.remove(&id);
        if let Some((app, entry)) = file_as(object) {
            let app = match self.apps.get_key_value(&app) {
                Some((shared, _)) => shared.clone(),
                None => Arc::new(app),
            };
            let id = Arc::new(id);
            let entries = self.apps.entry(app.clone()).or_default();
            entries.insert(id.clone(), Arc::new(entry));
            self.filed_under.insert(id, app);
        }
    }

    fn remove(&mut self, id: &ObjectId) {
        let Some(app) = self.filed_under.remove(id) else {
            return;
        };
        if let Some(objects) = self.apps.get_mut(&*app) {
            objects.remove(id);
            if objects.is_empty() {
                self.apps.remove(&*app);
            }
        }
    }
}

fn id_of<K: Resource>(object: &K) -> ObjectId {
    let meta = object.meta();
    let name = meta.name.clone().unwrap_or_default();
    (meta.namespace.clone(), name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn object(ns: &str, name: &str, app: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// Files a config map under its `app` label, as its name.
    fn file_as(object: &ConfigMap) -> Option<(AppKey, String)> {
        let app = object.metadata.labels.as_ref()?.get("app")?;
        let key = (object.metadata.namespace.clone()?, app.clone());
        Some((key, object.metadata.name.clone()?))
    }

    fn names(cache: &ByApp<String>, ns: &str, app: &str) -> Vec<String> {
        let mut names: Vec<String> = cache
            .of_app(ns, app)
            .iter()
            .map(|name| name.to_string())
            .collect();
        names.sort();
        names
    }

    fn listed(objects: &[ConfigMap]) -> (ByApp<String>, ByAppWriter<ConfigMap, String>) {
        let (cache, mut writer) = by_app(file_as);
        writer.apply(&Event::Init);
        for object in objects {
            writer.apply(&Event::InitApply(object.clone()));
        }
        writer.apply(&Event::InitDone);
        (cache, writer)
    }

    #[test]
    fn groups_by_app_and_namespace() {
        let (cache, _) = listed(&[
            object("a", "web-0", "web"),
            object("a", "web-1", "web"),
            object("a", "db-0", "db"),
            object("b", "web-0", "web"),
        ]);
        assert!(cache.ready());
        assert_eq!(names(&cache, "a", "web"), ["web-0", "web-1"]);
        assert_eq!(names(&cache, "a", "db"), ["db-0"]);
        assert_eq!(names(&cache, "b", "web"), ["web-0"]);
        assert!(names(&cache, "b", "db").is_empty());
    }

    #[test]
    fn not_ready_until_the_first_list_is_complete() {
        let (cache, mut writer) = by_app(file_as);
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(object("a", "web-0", "web")));
        assert!(!cache.ready());
        assert!(
            names(&cache, "a", "web").is_empty(),
            "a partial list is not shown"
        );
        writer.apply(&Event::InitDone);
        assert_eq!(names(&cache, "a", "web"), ["web-0"]);
    }

    #[test]
    fn applies_deletes_and_relabels() {
        let (cache, mut writer) = listed(&[object("a", "web-0", "web")]);
        writer.apply(&Event::Apply(object("a", "web-1", "web")));
        assert_eq!(names(&cache, "a", "web"), ["web-0", "web-1"]);
        writer.apply(&Event::Apply(object("a", "web-1", "db")));
        assert_eq!(names(&cache, "a", "web"), ["web-0"], "moved with its label");
        assert_eq!(names(&cache, "a", "db"), ["web-1"]);
        writer.apply(&Event::Delete(object("a", "web-0", "web")));
        assert!(names(&cache, "a", "web").is_empty());
        let mut unlabelled = object("a", "web-1", "db");
        unlabelled.metadata.labels = None;
        writer.apply(&Event::Apply(unlabelled));
        assert!(names(&cache, "a", "db").is_empty(), "no app, not cached");
    }

    #[test]
    fn a_relist_replaces_everything() {
        let (cache, mut writer) = listed(&[object("a", "web-0", "web"), object("a", "db-0", "db")]);
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(object("a", "web-1", "web")));
        assert_eq!(
            names(&cache, "a", "db"),
            ["db-0"],
            "served until the relist is done"
        );
        writer.apply(&Event::InitDone);
        assert_eq!(names(&cache, "a", "web"), ["web-1"]);
        assert!(names(&cache, "a", "db").is_empty(), "gone while unwatched");
        assert!(cache.ready());
    }
}

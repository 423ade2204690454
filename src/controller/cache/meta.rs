//! The compact metadata every cache entry keeps: name, uid, creation,
//! deletion, and only our own labels and annotations.
//!
//! The watched objects must carry a whole `ObjectMeta` (360 bytes before any
//! string) for kube-runtime, and maps of labels and annotations (a map node
//! is over 500 bytes, even for three entries); at 15,000 cached objects that
//! was most of the controller's memory. An entry keeps a few strings and a
//! short list of our own labels and annotations, each key a shared static
//! string (a key of its own costs an allocation per object: at 5,000
//! instances a few megabytes).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::names::*;

/// A label or annotation key: one of ours, shared, or another kept whole.
type Key = Cow<'static, str>;

/// The keys every cached object may carry.
const KNOWN_KEYS: &[&str] = &[
    LABEL_APP,
    LABEL_INSTANCE,
    LABEL_VOLUME,
    LABEL_NAMESPACE,
    LABEL_NODE,
    LABEL_RESERVED_FOR,
    ANNOTATION_PERSISTENCE_ID,
    ANNOTATION_RESERVATION_HASH,
    ANNOTATION_RECLAIMING,
    ANNOTATION_TEMPLATE_HASH,
    ANNOTATION_WIPE_MARK,
    ANNOTATION_ORPHAN_MARK,
    ANNOTATION_DATA_MISSING,
    ANNOTATION_NAMESPACE_UID,
    ANNOTATION_ADOPT_NAMESPACE_UID,
    ANNOTATION_DIRECTORY_MADE,
    ANNOTATION_SIZE_ENFORCEMENT,
    ANNOTATION_FILESYSTEM,
    ANNOTATION_FILESYSTEM_SIZE,
    ANNOTATION_SELECTED_NODE,
    crate::provisioner::ANNOTATION_DIRECTORY,
    crate::capacity::ANNOTATION_USED,
];

fn key(k: &str) -> Key {
    KNOWN_KEYS
        .iter()
        .find(|known| **known == k)
        .map_or_else(|| Cow::Owned(k.to_string()), |known| Cow::Borrowed(*known))
}

/// An object's metadata, as far as the controller reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub uid: Option<String>,
    pub created: Option<Timestamp>,
    /// Whether the object is being deleted.
    pub deleting: bool,
    labels: Box<[(Key, Box<str>)]>,
    annotations: Box<[(Key, Box<str>)]>,
}

impl Meta {
    /// Keeps our own labels and annotations, and the node kube-scheduler
    /// selected for a claim.
    pub fn of(meta: &ObjectMeta) -> Meta {
        let ours = |map: &Option<std::collections::BTreeMap<String, String>>| {
            map.iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("statefulapp.io/") || *k == ANNOTATION_SELECTED_NODE)
                .map(|(k, v)| (key(k), v.as_str().into()))
                .collect()
        };
        Meta {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            deleting: meta.deletion_timestamp.is_some(),
            labels: ours(&meta.labels),
            annotations: ours(&meta.annotations),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    pub fn has_annotation(&self, key: &str) -> bool {
        self.annotation(key).is_some()
    }
}

fn find<'a>(pairs: &'a [(Key, Box<str>)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn our_keys_are_shared_and_others_of_ours_kept_whole() {
        let meta = Meta::of(&ObjectMeta {
            labels: Some(BTreeMap::from([
                (LABEL_APP.to_string(), "db".to_string()),
                ("statefulapp.io/new-label".to_string(), "x".to_string()),
                ("team".to_string(), "a".to_string()),
            ])),
            ..ObjectMeta::default()
        });
        assert_eq!(meta.label(LABEL_APP), Some("db"));
        assert_eq!(meta.label("statefulapp.io/new-label"), Some("x"));
        assert_eq!(meta.label("team"), None);
        assert!(matches!(meta.labels[0].0, Cow::Borrowed(_)));
    }
}

//! The compact metadata every cache entry keeps: name, uid, creation,
//! deletion, and only our own labels and annotations.
//!
//! The watched objects must carry a whole `ObjectMeta` (360 bytes before any
//! string) for kube-runtime, and maps of labels and annotations (a map node
//! is over 500 bytes, even for three entries); at 15,000 cached objects that
//! was most of the controller's memory. An entry keeps a few strings, and
//! our own labels and annotations packed in two allocations ([`Tags`]): a
//! volume carries ten of them, and as pairs of strings they took 800 bytes
//! a volume, a fifth of the controller's heap at 5,000 instances.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::names::*;

/// The keys every cached object may carry, each written as its index.
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

/// A key not in [`KNOWN_KEYS`]: written out before its value, with a `=`
/// (which no label or annotation key holds).
const OTHER_KEY: u8 = 0x7f;
/// Marks an annotation's key; a label's has the bit clear.
const ANNOTATION: u8 = 0x80;
const _: () = assert!(KNOWN_KEYS.len() < OTHER_KEY as usize);

/// An object's metadata, as far as the controller reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub uid: Option<String>,
    pub created: Option<Timestamp>,
    /// Whether the object is being deleted.
    pub deleting: bool,
    tags: Tags,
}

impl Meta {
    /// Keeps our own labels and annotations, and the node kube-scheduler
    /// selected for a claim.
    pub fn of(meta: &ObjectMeta) -> Meta {
        Meta {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            deleting: meta.deletion_timestamp.is_some(),
            tags: Tags::of(&meta.labels, &meta.annotations),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.tags.get(0, key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.tags.get(ANNOTATION, key)
    }

    pub fn has_annotation(&self, key: &str) -> bool {
        self.annotation(key).is_some()
    }
}

/// Labels and annotations: their values (and keys not known) one after
/// another in `text`, and for each, its key and where it ends in `text`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Tags {
    text: Box<str>,
    ends: Box<[(u8, u32)]>,
}

type Map = Option<BTreeMap<String, String>>;

impl Tags {
    fn of(labels: &Map, annotations: &Map) -> Tags {
        let ours = |k: &&String| k.starts_with("statefulapp.io/") || *k == ANNOTATION_SELECTED_NODE;
        let mut text = String::new();
        let mut ends = Vec::new();
        for (kind, map) in [(0, labels), (ANNOTATION, annotations)] {
            for (k, v) in map.iter().flatten().filter(|(k, _)| ours(k)) {
                let key = match KNOWN_KEYS.iter().position(|known| known == k) {
                    Some(index) => index as u8,
                    None => {
                        text.push_str(k);
                        text.push('=');
                        OTHER_KEY
                    }
                };
                text.push_str(v);
                // Labels and annotations together are at most 256 KiB.
                ends.push((kind | key, text.len() as u32));
            }
        }
        Tags {
            text: text.into(),
            ends: ends.into(),
        }
    }

    /// The value of label (`kind` 0) or annotation (`kind` [`ANNOTATION`])
    /// `key`.
    fn get(&self, kind: u8, key: &str) -> Option<&str> {
        let mut start = 0;
        for &(tag, end) in self.ends.iter() {
            let segment = &self.text[start..end as usize];
            start = end as usize;
            if tag & ANNOTATION != kind {
                continue;
            }
            let value = match tag & !ANNOTATION {
                OTHER_KEY => segment
                    .split_once('=')
                    .filter(|(k, _)| *k == key)
                    .map(|(_, v)| v),
                index => (KNOWN_KEYS[index as usize] == key).then_some(segment),
            };
            if value.is_some() {
                return value;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_our_own_keys_known_or_not_and_no_others() {
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
        assert_eq!(
            meta.annotation(LABEL_APP),
            None,
            "a label is not an annotation"
        );
    }

    #[test]
    fn labels_and_annotations_of_the_same_key_are_told_apart() {
        let meta = Meta::of(&ObjectMeta {
            labels: Some(BTreeMap::from([
                (LABEL_INSTANCE.to_string(), "label".to_string()),
                ("statefulapp.io/x".to_string(), "a=b".to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (LABEL_INSTANCE.to_string(), "annotation".to_string()),
                ("statefulapp.io/x".to_string(), String::new()),
                ("statefulapp.io/y".to_string(), "1".to_string()),
                (ANNOTATION_SELECTED_NODE.to_string(), "n1".to_string()),
            ])),
            ..ObjectMeta::default()
        });
        assert_eq!(meta.label(LABEL_INSTANCE), Some("label"));
        assert_eq!(meta.annotation(LABEL_INSTANCE), Some("annotation"));
        assert_eq!(meta.label("statefulapp.io/x"), Some("a=b"));
        assert_eq!(meta.annotation("statefulapp.io/x"), Some(""));
        assert!(meta.has_annotation("statefulapp.io/x"));
        assert_eq!(meta.annotation("statefulapp.io/y"), Some("1"));
        assert_eq!(meta.label("statefulapp.io/y"), None);
        assert_eq!(meta.annotation(ANNOTATION_SELECTED_NODE), Some("n1"));
        assert_eq!(meta.annotation("statefulapp.io/z"), None);
    }

    #[test]
    fn no_labels_no_annotations() {
        let meta = Meta::of(&ObjectMeta::default());
        assert_eq!(meta.label(LABEL_APP), None);
        assert!(!meta.has_annotation(ANNOTATION_WIPE_MARK));
    }
}

//! The compact metadata every cache entry keeps: name, uid, creation,
//! deletion, and only our own labels and annotations.
//!
//! The watched objects must carry a whole `ObjectMeta` (360 bytes before any
//! string) for kube-runtime, and maps of labels and annotations (a map node
//! is over 500 bytes, even for three entries); at 15,000 cached objects that
//! was most of the controller's memory. An entry keeps a few strings and a
//! short list of our own labels and annotations.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::names::ANNOTATION_SELECTED_NODE;

/// An object's metadata, as far as the controller reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    pub name: String,
    pub uid: Option<String>,
    pub created: Option<Timestamp>,
    /// Whether the object is being deleted.
    pub deleting: bool,
    labels: Box<[(String, String)]>,
    annotations: Box<[(String, String)]>,
}

impl Meta {
    /// Keeps our own labels and annotations, and the node kube-scheduler
    /// selected for a claim.
    pub fn of(meta: &ObjectMeta) -> Meta {
        let ours = |map: &Option<std::collections::BTreeMap<String, String>>| {
            map.iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("statefulapp.io/") || *k == ANNOTATION_SELECTED_NODE)
                .map(|(k, v)| (k.clone(), v.clone()))
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

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

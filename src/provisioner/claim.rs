//! A claim as the provisioner reads it (a partial object, see
//! [`crate::partial`]). The provisioner watches the claims of every
//! StorageClass (a watch cannot select on the class), so its cache holds
//! only identity, annotations and the request. A bound claim is kept only
//! while it asks to grow (see [`ClaimRequest::at_rest`]), and then only its
//! identity, volume and storage request and capacity, what a growth reads
//! (see [`ClaimRequest::forget_if_bound`]). Of the request and the
//! capacity it keeps only the storage quantity: a map of one entry costs
//! over 500 bytes, two of them a kilobyte per claim in the cluster.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::controller::cache::claims::StorageRequest;
use crate::partial::core_v1_kind;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimRequest {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RequestSpec,
    #[serde(default)]
    pub status: ClaimPhase,
}

impl ClaimRequest {
    pub fn is_bound(&self) -> bool {
        self.status.phase.as_deref() == Some("Bound")
    }

    /// A bound claim that asks for no more than it holds, or is being
    /// deleted: nothing for the provisioner to do until an update asks it
    /// to grow (a claim going away grows no more).
    pub fn at_rest(&self) -> bool {
        let request = self.spec.resources.requests.bytes();
        let capacity = self.status.capacity.bytes().unwrap_or(0);
        self.is_bound()
            && (self.metadata.deletion_timestamp.is_some()
                || request.is_none_or(|request| request <= capacity))
    }

    /// A bound claim needs no provisioning: keep its identity, and what
    /// tells whether it asks to grow. (If
    /// its volume goes, the claim turns `Lost`, and that update brings the
    /// whole request back.) Most claims in a cluster are bound: this keeps
    /// the provisioner's cache small.
    pub fn forget_if_bound(&mut self) {
        if !self.is_bound() {
            return;
        }
        let meta = std::mem::take(&mut self.metadata);
        self.metadata = ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            deletion_timestamp: meta.deletion_timestamp,
            ..ObjectMeta::default()
        };
        self.spec = RequestSpec {
            volume_name: self.spec.volume_name.take(),
            resources: std::mem::take(&mut self.spec.resources),
            ..RequestSpec::default()
        };
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimPhase {
    pub phase: Option<String>,
    #[serde(default)]
    pub capacity: StorageRequest,
}
core_v1_kind!(
    ClaimRequest,
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    NamespaceResourceScope
);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSpec {
    pub access_modes: Option<Vec<String>>,
    #[serde(default)]
    pub resources: Resources,
    pub storage_class_name: Option<String>,
    pub volume_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub requests: StorageRequest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    #[test]
    fn keeps_the_request() {
        let claim: ClaimRequest = serde_json::from_value(json!({
            "metadata": { "name": "c", "annotations": { "a": "1" } },
            "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "sc",
                      "resources": { "requests": { "storage": "1Gi" } }, "volumeMode": "Filesystem" },
            "status": { "phase": "Pending" },
        }))
        .unwrap();
        assert_eq!(
            claim.spec.access_modes,
            Some(vec!["ReadWriteOnce".to_string()])
        );
        assert_eq!(claim.spec.storage_class_name.as_deref(), Some("sc"));
        assert_eq!(
            claim.spec.resources.requests.storage,
            Some(Quantity("1Gi".into()))
        );
        assert!(claim.spec.volume_name.is_none());
    }

    fn claim(phase: &str) -> ClaimRequest {
        serde_json::from_value(json!({
            "metadata": { "name": "c", "namespace": "ns", "uid": "u",
                          "annotations": { "volume.kubernetes.io/selected-node": "n1" } },
            "spec": { "storageClassName": "sc", "volumeName": "pv",
                      "resources": { "requests": { "storage": "1Gi", "other": "1" } } },
            "status": { "phase": phase, "capacity": { "storage": "1Gi" } },
        }))
        .unwrap()
    }

    #[test]
    fn a_bound_claim_keeps_only_its_identity() {
        let mut bound = claim("Bound");
        bound.forget_if_bound();
        assert_eq!(bound.metadata.name.as_deref(), Some("c"));
        assert_eq!(bound.metadata.namespace.as_deref(), Some("ns"));
        assert!(bound.metadata.annotations.is_none());
        assert!(bound.spec.storage_class_name.is_none());
        let one_gib = Some(Quantity("1Gi".into()));
        assert_eq!(bound.spec.resources.requests.storage, one_gib);
        assert_eq!(bound.status.capacity.storage, one_gib);
        assert_eq!(bound.spec.volume_name.as_deref(), Some("pv"));
    }

    #[test]
    fn a_bound_claim_is_at_rest_until_it_asks_for_more_than_it_holds() {
        assert!(claim("Bound").at_rest());
        assert!(!claim("Pending").at_rest());
        assert!(!claim("Lost").at_rest());
        let mut growing = claim("Bound");
        growing.spec.resources.requests.storage = Some(Quantity("2Gi".into()));
        assert!(!growing.at_rest());
        growing.status.capacity.storage = Some(Quantity("2Gi".into()));
        assert!(growing.at_rest());
        let mut deleting = claim("Bound");
        deleting.spec.resources.requests.storage = Some(Quantity("2Gi".into()));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(deleting.at_rest(), "a claim going away grows no more");
    }

    #[test]
    fn a_pending_or_lost_claim_keeps_its_request() {
        for phase in ["Pending", "Lost"] {
            let mut unbound = claim(phase);
            unbound.forget_if_bound();
            assert!(unbound.metadata.annotations.is_some(), "{phase}");
            let one_gib = Some(Quantity("1Gi".into()));
            assert_eq!(unbound.spec.resources.requests.storage, one_gib);
        }
    }
}

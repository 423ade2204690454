//! A claim as the provisioner reads it (a partial object, see
//! [`crate::partial`]). The provisioner watches the claims of every
//! StorageClass (a watch cannot select on the class), so its cache holds
//! only identity, annotations and the request.

use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::partial::core_v1_kind;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimRequest {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RequestSpec,
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
    pub requests: BTreeMap<String, Quantity>,
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(claim.spec.resources.requests["storage"].0, "1Gi");
        assert!(claim.spec.volume_name.is_none());
    }
}

//! The CRD, printed from the Rust types (never written by hand).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::api::StatefulApp;

/// The `statefulapps.statefulapp.io` CRD.
///
/// The embedded pod template keeps its full schema (so the API server
/// validates it) but loses its field descriptions, as controller-gen's
/// `maxDescLen=0` does: they would make up most of the document and push it
/// past the 256 KiB that client-side `kubectl apply` can store.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(StatefulApp::crd()).expect("CRD serializes");
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        let properties = &mut version["schema"]["openAPIV3Schema"]["properties"];
        strip_descriptions(&mut properties["spec"]["properties"]["template"]);
        // An app the controller has not seen yet reads as `observedGeneration:
        // 0`, behind its generation: kstatus (Flux) and Argo CD's health
        // check then report it in progress, not current, until the
        // controller writes its status.
        properties["status"]["default"] = json!({ "observedGeneration": 0 });
    }
    serde_json::from_value(crd).expect("CRD deserializes")
}

/// The CRD as the YAML document kept in `crds/` and the Helm chart's `files/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crd())
}

fn strip_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            // Only a string `description` is a schema keyword; a property
            // named "description" holds an object and must stay.
            if map.get("description").is_some_and(Value::is_string) {
                map.remove("description");
            }
            map.values_mut().for_each(strip_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

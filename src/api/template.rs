//! An app's pod template, kept as compact JSON.
//!
//! A `PodTemplateSpec` holds every optional field of a pod and a container
//! inline, nearly all of them empty: a one-container template takes about
//! 5 KB, and the controller keeps every app (5 MB at 1,000 apps). Its JSON
//! takes a few hundred bytes. The template is read back into a
//! `PodTemplateSpec` where a pod is made of it. On the wire and in the CRD's
//! schema it is a `PodTemplateSpec`, as before.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `PodTemplateSpec` in the JSON serde writes for it (fields in a fixed
/// order, maps sorted, no spaces): equal templates have equal JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct PodTemplate {
    json: Box<str>,
}

impl PodTemplate {
    pub fn new(template: &PodTemplateSpec) -> PodTemplate {
        PodTemplate {
            // Kubernetes objects always have JSON: string keys, no
            // serializer of their own that can fail.
            json: serde_json::to_string(template)
                .expect("a PodTemplateSpec serializes")
                .into(),
        }
    }

    /// The template, as written.
    pub fn get(&self) -> PodTemplateSpec {
        serde_json::from_str(&self.json).expect("read back from its own JSON")
    }

    /// The template as `serde_json::to_vec` writes a `PodTemplateSpec`
    /// (what template hashes are taken of).
    pub fn json(&self) -> &str {
        &self.json
    }
}

impl Default for PodTemplate {
    fn default() -> PodTemplate {
        PodTemplate::new(&PodTemplateSpec::default())
    }
}

impl From<PodTemplateSpec> for PodTemplate {
    fn from(template: PodTemplateSpec) -> PodTemplate {
        PodTemplate::new(&template)
    }
}

impl fmt::Debug for PodTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

impl Serialize for PodTemplate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PodTemplate, D::Error> {
        PodTemplateSpec::deserialize(deserializer).map(|template| PodTemplate::new(&template))
    }
}

impl JsonSchema for PodTemplate {
    fn inline_schema() -> bool {
        PodTemplateSpec::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        PodTemplateSpec::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        PodTemplateSpec::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        PodTemplateSpec::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> serde_json::Value {
        json!({
            "metadata": { "labels": { "b": "2", "a": "1" }, "annotations": { "x": "y" } },
            "spec": {
                "containers": [{
                    "name": "db", "image": "postgres:9.5",
                    "command": ["sh", "-c", "exec postgres"],
                    "env": [{ "name": "PGDATA", "value": "/data/pg" }],
                    "resources": { "requests": { "cpu": "500m", "memory": "256Mi" },
                                   "limits": { "memory": "1Gi" } },
                    "readinessProbe": { "tcpSocket": { "port": 5432 }, "periodSeconds": 5 },
                    "ports": [{ "containerPort": 5432, "name": "pg" }],
                }],
                "nodeSelector": { "disk": "ssd" },
                "tolerations": [{ "key": "k", "operator": "Exists", "effect": "NoSchedule" }],
                "affinity": { "podAntiAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [
                    { "topologyKey": "kubernetes.io/hostname",
                      "labelSelector": { "matchLabels": { "app": "db" } } }] } },
                "terminationGracePeriodSeconds": 10,
            },
        })
    }

    #[test]
    fn reads_back_the_template_as_written() {
        let spec: PodTemplateSpec = serde_json::from_value(full()).unwrap();
        let template: PodTemplate = serde_json::from_value(full()).unwrap();
        assert_eq!(template.get(), spec);
        assert_eq!(serde_json::to_value(&template).unwrap(), full());
    }

    #[test]
    fn its_json_is_what_serde_writes_for_the_template() {
        // Template hashes were taken of `serde_json::to_vec(&PodTemplateSpec)`:
        // the same bytes keep every running pod current.
        let spec: PodTemplateSpec = serde_json::from_value(full()).unwrap();
        let template = PodTemplate::new(&spec);
        assert_eq!(
            template.json().as_bytes(),
            serde_json::to_vec(&spec).unwrap()
        );
    }

    #[test]
    fn equal_templates_compare_equal_whatever_the_order_written() {
        let a: PodTemplate = serde_json::from_str(
            r#"{"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
        )
        .unwrap();
        let b: PodTemplate = serde_json::from_str(
            r#"{"spec":{"containers":[{"image":"i","name":"c"}]},"metadata":{"labels":{"b":"2","a":"1"}}}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        let c: PodTemplate =
            serde_json::from_str(r#"{"spec":{"containers":[{"name":"c","image":"j"}]}}"#).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn reads_and_writes_yaml_too() {
        let yaml = "spec:\n  containers:\n  - image: i\n    name: c\n";
        let template: PodTemplate = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(template.get().spec.unwrap().containers[0].name, "c");
        assert_eq!(serde_yaml::to_string(&template).unwrap(), yaml);
    }

    #[test]
    fn takes_a_fraction_of_the_memory_of_the_structs() {
        let template: PodTemplate = serde_json::from_value(full()).unwrap();
        let structs = std::mem::size_of::<PodTemplateSpec>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::PodSpec>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::Container>();
        assert!(
            template.json().len() * 2 < structs,
            "{} bytes of JSON against {structs} bytes of structs before any string",
            template.json().len()
        );
    }
}

//! Marathon placement constraints as Kubernetes affinity and spread rules.

use serde_json::{Value, json};

use super::ImportError;

/// Affinity and topology spread for the pod template, plus warnings.
#[derive(Default)]
pub struct Placement {
    pub node_terms: Vec<Value>,
    pub anti_affinity: Vec<Value>,
    pub spread: Vec<Value>,
    pub warnings: Vec<String>,
}

fn node_key(field: &str, warnings: &mut Vec<String>) -> String {
    if field == "hostname" {
        "kubernetes.io/hostname".to_string()
    } else {
        warnings.push(format!(
            "constraint field {field:?} is matched against the node label {field:?}: label your nodes accordingly"
        ));
        field.to_string()
    }
}

/// `a|b|c` as a list of literals; None for any other regular expression.
fn literal_alternatives(pattern: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = pattern.split('|').map(str::to_string).collect();
    let literal = |p: &String| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    parts.iter().all(literal).then_some(parts)
}

pub fn placement(app_name: &str, constraints: &[Vec<Value>]) -> Result<Placement, ImportError> {
    let mut out = Placement::default();
    for constraint in constraints {
        let text: Vec<String> = constraint
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        let shown = format!("{text:?}");
        let (field, operator, value) = match text.as_slice() {
            [f, o] => (f.as_str(), o.as_str(), None),
            [f, o, v] => (f.as_str(), o.as_str(), Some(v.as_str())),
            _ => {
                return Err(ImportError::Unsupported(format!(
                    "constraint {shown} must have 2 or 3 parts"
                )));
            }
        };
        let same_app = json!({ "matchLabels": { "statefulapp.io/app": app_name } });
        match (operator, value) {
            ("UNIQUE", None) => {
                let key = node_key(field, &mut out.warnings);
                out.anti_affinity
                    .push(json!({ "topologyKey": key, "labelSelector": same_app }));
            }
            ("CLUSTER" | "IS", Some(v)) => {
                let key = node_key(field, &mut out.warnings);
                out.node_terms
                    .push(json!({ "key": key, "operator": "In", "values": [v] }));
            }
            ("LIKE" | "UNLIKE", Some(pattern)) => {
                let values = literal_alternatives(pattern).ok_or_else(|| {
                    ImportError::Unsupported(format!(
                        "constraint {shown}: Kubernetes selectors match values, not regular expressions; rewrite it as a list like \"a|b\""
                    ))
                })?;
                let key = node_key(field, &mut out.warnings);
                let op = if operator == "LIKE" { "In" } else { "NotIn" };
                out.node_terms
                    .push(json!({ "key": key, "operator": op, "values": values }));
            }
            ("GROUP_BY", _) => {
                let key = node_key(field, &mut out.warnings);
                if value.is_some() {
                    out.warnings.push(format!(
                        "constraint {shown}: the group count is not needed on Kubernetes; instances spread evenly over {key}"
                    ));
                }
                out.spread.push(json!({ "maxSkew": 1, "topologyKey": key,
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": same_app }));
            }
            ("MAX_PER", Some(n)) => {
                let key = node_key(field, &mut out.warnings);
                let n: i32 = n.parse().map_err(|_| {
                    ImportError::Unsupported(format!("constraint {shown}: MAX_PER needs a number"))
                })?;
                out.warnings.push(format!(
                    "constraint {shown} is approximated by an even spread over {key} (maxSkew {n})"
                ));
                out.spread
                    .push(json!({ "maxSkew": n.max(1), "topologyKey": key,
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": same_app }));
            }
            _ => {
                return Err(ImportError::Unsupported(format!(
                    "constraint {shown} is not supported"
                )));
            }
        }
    }
    Ok(out)
}

impl Placement {
    /// The pod template's `affinity` and `topologySpreadConstraints`.
    pub fn apply(self, pod_spec: &mut Value) -> Vec<String> {
        let mut affinity = json!({});
        if !self.node_terms.is_empty() {
            affinity["nodeAffinity"] = json!({ "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{ "matchExpressions": self.node_terms }] } });
        }
        if !self.anti_affinity.is_empty() {
            affinity["podAntiAffinity"] =
                json!({ "requiredDuringSchedulingIgnoredDuringExecution": self.anti_affinity });
        }
        if affinity.as_object().is_some_and(|o| !o.is_empty()) {
            pod_spec["affinity"] = affinity;
        }
        if !self.spread.is_empty() {
            pod_spec["topologySpreadConstraints"] = json!(self.spread);
        }
        self.warnings
    }
}

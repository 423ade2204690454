//! Marathon placement constraints as Kubernetes affinity and spread rules.
//! `LIKE`/`UNLIKE` regexes become value lists: enumerated from the regex
//! when its language is small and finite, else matched against the live
//! nodes' labels the caller passes in (the importer itself does no I/O).

use std::collections::{BTreeMap, BTreeSet};

use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{Value, json};

use super::report::Report;

/// Labels of the cluster's nodes, one map per node.
pub type NodeLabels = [BTreeMap<String, String>];

/// Affinity and topology spread for the pod template.
#[derive(Default)]
pub struct Placement {
    pub node_terms: Vec<Value>,
    pub pod_affinity: Vec<Value>,
    pub anti_affinity: Vec<Value>,
    pub spread: Vec<Value>,
}

/// The node label a Marathon constraint field (agent attribute) reads.
fn node_key(field: &str) -> (String, Option<String>) {
    match field {
        "hostname" | "@hostname" => ("kubernetes.io/hostname".into(), None),
        "@zone" => ("topology.kubernetes.io/zone".into(), None),
        "@region" => ("topology.kubernetes.io/region".into(), None),
        other => (
            other.to_string(),
            Some(format!(
                "agent attribute {other:?} is read from the node label {other:?}: label your nodes accordingly"
            )),
        ),
    }
}

/// Why a regex needs nodes: there is no finite list of its values.
pub const NEEDS_NODES: &str = "needs the cluster's nodes";

pub fn placement(
    app_name: &str,
    constraints: &[Vec<Value>],
    nodes: Option<&NodeLabels>,
    report: &mut Report,
) -> Placement {
    let mut out = Placement::default();
    for (i, constraint) in constraints.iter().enumerate() {
        let field_path = format!("constraints[{i}]");
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
                report.refused(field_path, format!("{shown} must have 2 or 3 parts"));
                continue;
            }
        };
        let (key, label_note) = node_key(field);
        let note = |detail: String| match &label_note {
            Some(n) => format!("{detail}; {n}"),
            None => detail,
        };
        let same_app = json!({ "matchLabels": { "statefulapp.io/app": app_name } });
        match (operator, value) {
            ("UNIQUE", None) => {
                out.anti_affinity
                    .push(json!({ "topologyKey": key, "labelSelector": same_app }));
                let detail = note(format!("required podAntiAffinity on {key}"));
                add(report, field_path, label_note.is_some(), detail);
            }
            ("CLUSTER", None) => {
                out.pod_affinity
                    .push(json!({ "topologyKey": key, "labelSelector": same_app }));
                let detail = note(format!(
                    "required podAffinity on {key}: all instances share one value"
                ));
                add(report, field_path, label_note.is_some(), detail);
            }
            ("CLUSTER" | "IS", Some(v)) => {
                out.node_terms
                    .push(json!({ "key": key, "operator": "In", "values": [v] }));
                let mut detail = note(format!("nodeAffinity {key} In [{v}]"));
                if key == "kubernetes.io/hostname" {
                    detail.push_str("; the value must be the Kubernetes node's hostname label, not the Mesos agent's");
                }
                add(report, field_path, label_note.is_some(), detail);
            }
            ("LIKE" | "UNLIKE", Some(pattern)) => {
                let op = if operator == "LIKE" { "In" } else { "NotIn" };
                like(
                    &mut out, report, field_path, &shown, &key, op, pattern, nodes, &note,
                );
            }
            ("GROUP_BY", count) => {
                let mut term = json!({ "maxSkew": 1, "topologyKey": key,
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": same_app });
                let detail = match count {
                    None => note(format!("topologySpreadConstraint on {key}, maxSkew 1")),
                    Some(n) => match n.parse::<i32>() {
                        Ok(n) if n > 0 => {
                            term["minDomains"] = json!(n);
                            note(format!(
                                "topologySpreadConstraint on {key}, maxSkew 1, minDomains {n}"
                            ))
                        }
                        _ => {
                            report.refused(
                                field_path,
                                format!("{shown}: GROUP_BY needs a positive count"),
                            );
                            continue;
                        }
                    },
                };
                out.spread.push(term);
                // Marathon balances over the values it has seen; a spread
                // constraint is the same rule, enforced by the scheduler.
                report.rewritten(field_path, detail);
            }
            ("MAX_PER", Some(n)) => match n.parse::<i32>() {
                Ok(1) => {
                    out.anti_affinity
                        .push(json!({ "topologyKey": key, "labelSelector": same_app }));
                    let detail = note(format!("at most 1 per {key}: required podAntiAffinity"));
                    add(report, field_path, label_note.is_some(), detail);
                }
                Ok(n) if n > 1 => {
                    out.spread.push(json!({ "maxSkew": n, "topologyKey": key,
                        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": same_app }));
                    report.approximated(
                        field_path,
                        note(format!(
                            "Kubernetes has no per-value cap: an even spread over {key} with maxSkew {n}"
                        )),
                    );
                }
                _ => report.refused(
                    field_path,
                    format!("{shown}: MAX_PER needs a positive number"),
                ),
            },
            _ => report.refused(field_path, format!("{shown}: unknown operator or arity")),
        }
    }
    out
}

fn add(report: &mut Report, field: String, via_label: bool, detail: String) {
    if via_label {
        report.rewritten(field, detail);
    } else {
        report.exact(field, detail);
    }
}

#[allow(clippy::too_many_arguments)]
fn like(
    out: &mut Placement,
    report: &mut Report,
    field_path: String,
    shown: &str,
    key: &str,
    op: &str,
    pattern: &str,
    nodes: Option<&NodeLabels>,
    note: &dyn Fn(String) -> String,
) {
    // Marathon matches the whole value.
    let anchored = format!("^(?:{pattern})$");
    let regex = match regex::Regex::new(&anchored) {
        Ok(r) => r,
        Err(e) => {
            report.refused(
                field_path,
                format!("{shown}: not a regular expression: {e}"),
            );
            return;
        }
    };
    if let Some(values) = finite_language(pattern) {
        out.node_terms
            .push(json!({ "key": key, "operator": op, "values": values }));
        let detail = note(format!(
            "nodeAffinity {key} {op} {values:?} (every value the regex matches)"
        ));
        if key.starts_with("topology.kubernetes.io/") {
            report.exact(field_path, detail);
        } else if key == "kubernetes.io/hostname" {
            report.rewritten(
                field_path,
                format!(
                    "{detail}; the values must be Kubernetes node names, not the Mesos agents'"
                ),
            );
        } else {
            report.rewritten(field_path, detail);
        }
        return;
    }
    let Some(nodes) = nodes else {
        report.refused(
            field_path,
            format!(
                "{shown}: the regex matches unboundedly many values and Kubernetes selectors match lists; this {NEEDS_NODES}: import with access to the cluster, or rewrite it as [\"{}\", \"{}\", \"<value>|<value>|...\"] listing the values of node label {key} it should match",
                first(shown),
                if op == "In" { "LIKE" } else { "UNLIKE" },
            ),
        );
        return;
    };
    let live: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|labels| labels.get(key).map(String::as_str))
        .collect();
    let matched: Vec<&str> = live.iter().copied().filter(|v| regex.is_match(v)).collect();
    if matched.is_empty() {
        if op == "In" {
            report.refused(
                field_path,
                format!(
                    "{shown}: no node's {key} label matches (values seen: {:?}); the app could never be placed",
                    live
                ),
            );
        } else {
            report.approximated(
                field_path,
                note(format!(
                    "no node's {key} label matches (values seen: {live:?}): nothing to exclude; nodes added later are not checked"
                )),
            );
        }
        return;
    }
    out.node_terms
        .push(json!({ "key": key, "operator": op, "values": matched }));
    report.approximated(
        field_path,
        note(format!(
            "nodeAffinity {key} {op} {matched:?}: the values of the live nodes the regex matched (of {live:?}); nodes added later with other matching values are not included"
        )),
    );
}

fn first(shown: &str) -> String {
    shown
        .trim_start_matches("[\"")
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Every string a regex matches, when there are at most `LIMIT` of them.
pub fn finite_language(pattern: &str) -> Option<Vec<String>> {
    const LIMIT: usize = 64;
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut values: Vec<String> = strings(&hir, LIMIT)?.into_iter().collect();
    values.retain(|v| !v.is_empty());
    if values.is_empty() || values.iter().any(|v| !is_label_value(v)) {
        return None;
    }
    values.sort();
    Some(values)
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn strings(hir: &Hir, limit: usize) -> Option<BTreeSet<String>> {
    let one = |s: String| Some(BTreeSet::from([s]));
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => one(String::new()),
        HirKind::Literal(lit) => one(String::from_utf8(lit.0.to_vec()).ok()?),
        HirKind::Class(Class::Unicode(class)) => {
            let mut out = BTreeSet::new();
            for range in class.iter() {
                for c in range.start()..=range.end() {
                    out.insert(c.to_string());
                    if out.len() > limit {
                        return None;
                    }
                }
            }
            Some(out)
        }
        HirKind::Class(Class::Bytes(class)) => {
            let mut out = BTreeSet::new();
            for range in class.iter() {
                for b in range.start()..=range.end() {
                    out.insert(char::from(b).to_string());
                    if out.len() > limit {
                        return None;
                    }
                }
            }
            Some(out)
        }
        HirKind::Capture(capture) => strings(&capture.sub, limit),
        HirKind::Concat(parts) => {
            let mut acc = BTreeSet::from([String::new()]);
            for part in parts {
                let next = strings(part, limit)?;
                acc = product(&acc, &next, limit)?;
            }
            Some(acc)
        }
        HirKind::Alternation(parts) => {
            let mut out = BTreeSet::new();
            for part in parts {
                out.extend(strings(part, limit)?);
                if out.len() > limit {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Repetition(rep) => {
            let max = rep.max?;
            let sub = strings(&rep.sub, limit)?;
            let mut out = BTreeSet::new();
            let mut acc = BTreeSet::from([String::new()]);
            for count in 0..=max {
                if count >= rep.min {
                    out.extend(acc.iter().cloned());
                }
                if count < max {
                    acc = product(&acc, &sub, limit)?;
                }
                if out.len() > limit {
                    return None;
                }
            }
            Some(out)
        }
    }
}

fn product(a: &BTreeSet<String>, b: &BTreeSet<String>, limit: usize) -> Option<BTreeSet<String>> {
    if a.len().saturating_mul(b.len()) > limit {
        return None;
    }
    Some(
        a.iter()
            .flat_map(|x| b.iter().map(move |y| format!("{x}{y}")))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_regexes_are_enumerated_large_ones_are_not() {
        assert_eq!(
            finite_language("us-east-1[ab]").unwrap(),
            vec!["us-east-1a", "us-east-1b"]
        );
        assert_eq!(finite_language("a|b|c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(
            finite_language("rack-(1|2)0?").unwrap(),
            vec!["rack-1", "rack-10", "rack-2", "rack-20"]
        );
        assert_eq!(finite_language("^zone-[0-2]$").unwrap().len(), 3);
        assert_eq!(finite_language("10\\.0\\.[0-9]+"), None, "unbounded");
        assert_eq!(finite_language("us-.*"), None);
        assert_eq!(finite_language("[a-z]{4}"), None, "too many");
        assert_eq!(finite_language("a b"), None, "not a label value");
    }

    #[test]
    fn like_matches_live_node_labels_or_refuses_with_the_rewrite() {
        let constraints = vec![vec![json!("@zone"), json!("LIKE"), json!("eu-.*")]];
        let mut report = Report::new("/a");
        placement("a", &constraints, None, &mut report);
        let refusal = &report.refusals()[0].detail;
        assert!(refusal.contains(NEEDS_NODES), "{refusal}");
        assert!(
            refusal.contains("[\"@zone\", \"LIKE\", \"<value>|"),
            "{refusal}"
        );

        let nodes: Vec<BTreeMap<String, String>> = ["eu-west-1a", "eu-west-1b", "us-east-1a"]
            .iter()
            .map(|z| BTreeMap::from([("topology.kubernetes.io/zone".into(), z.to_string())]))
            .collect();
        let mut report = Report::new("/a");
        let out = placement("a", &constraints, Some(&nodes), &mut report);
        assert_eq!(
            out.node_terms[0],
            json!({ "key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a", "eu-west-1b"] })
        );
        assert!(report.refusals().is_empty());
        assert!(
            report.entries[0].detail.contains("us-east-1a"),
            "reports what it saw"
        );
    }
}

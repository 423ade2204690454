//! The import report: every field of the input, what it became, or why not.

use serde::Serialize;
use serde_json::Value;

/// How a field of the Marathon app carried over.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The same meaning on Kubernetes.
    Exact,
    /// Runtime state in an export (`version`, `tasksRunning`): nothing to map.
    Ignored,
    /// Changed so that it keeps its meaning (a path made absolute, a port
    /// chosen for 0, a label value cleaned).
    Rewritten,
    /// Close, not the same (said how).
    Approximated,
    /// Not carried over (no equivalent, or runtime state).
    Dropped,
    /// Cannot be honoured: the app is not imported.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exact => "exact",
            Outcome::Ignored => "ignored",
            Outcome::Rewritten => "rewritten",
            Outcome::Approximated => "approximated",
            Outcome::Dropped => "dropped",
            Outcome::Refused => "refused",
        }
    }
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// Path of the field in the input, e.g. `container.volumes[0].containerPath`.
    pub field: String,
    pub outcome: Outcome,
    /// What it became, or why not.
    pub detail: String,
}

/// The report of one app.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The Marathon app id.
    pub app: String,
    pub entries: Vec<Entry>,
}

/// How a whole app carried over.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Exact,
    WithRewrites,
    Refused,
}

impl Report {
    pub fn new(app: &str) -> Self {
        Report {
            app: app.to_string(),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, field: impl Into<String>, outcome: Outcome, detail: impl Into<String>) {
        self.entries.push(Entry {
            field: field.into(),
            outcome,
            detail: detail.into(),
        });
    }

    pub fn exact(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.add(field, Outcome::Exact, detail);
    }

    pub fn ignored(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.add(field, Outcome::Ignored, detail);
    }

    pub fn rewritten(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.add(field, Outcome::Rewritten, detail);
    }

    pub fn approximated(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.add(field, Outcome::Approximated, detail);
    }

    pub fn dropped(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.add(field, Outcome::Dropped, detail);
    }

    pub fn refused(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.add(field, Outcome::Refused, detail);
    }

    pub fn refusals(&self) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.outcome == Outcome::Refused)
            .collect()
    }

    pub fn verdict(&self) -> Verdict {
        let worst = self.entries.iter().map(|e| e.outcome).max();
        match worst {
            None | Some(Outcome::Exact | Outcome::Ignored) => Verdict::Exact,
            Some(Outcome::Refused) => Verdict::Refused,
            Some(_) => Verdict::WithRewrites,
        }
    }

    /// Every leaf of `input` that no entry covers gets one: nothing is
    /// dropped silently, even fields this importer has never heard of.
    pub fn cover(&mut self, input: &Value) {
        let mut leaves = Vec::new();
        leaf_paths(input, String::new(), &mut leaves);
        for leaf in leaves {
            if !self.entries.iter().any(|e| covers(&e.field, &leaf)) {
                self.dropped(leaf, "no StatefulApp equivalent");
            }
        }
    }
}

/// Whether the entry for `field` speaks for `leaf` (itself or inside it).
fn covers(field: &str, leaf: &str) -> bool {
    field.is_empty()
        || leaf == field
        || leaf
            .strip_prefix(field)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn leaf_paths(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaf_paths(child, child_path, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                leaf_paths(child, format!("{path}[{i}]"), out);
            }
        }
        _ if path.is_empty() => {}
        _ => out.push(path),
    }
}

/// The reports as a table: one line per field, grouped by app.
pub fn table(reports: &[Report]) -> String {
    let width = reports
        .iter()
        .flat_map(|r| r.entries.iter().map(|e| e.field.len()))
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = String::new();
    for report in reports {
        let verdict = match report.verdict() {
            Verdict::Exact => "imported exactly",
            Verdict::WithRewrites => "imported with rewrites",
            Verdict::Refused => "refused",
        };
        out.push_str(&format!("{}: {verdict}\n", report.app));
        out.push_str(&format!(
            "  {:<width$}  {:<12}  DETAIL\n",
            "FIELD", "OUTCOME"
        ));
        for entry in &report.entries {
            out.push_str(&format!(
                "  {:<width$}  {:<12}  {}\n",
                entry.field,
                entry.outcome.as_str(),
                entry.detail
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_leaf_is_covered_by_an_entry_or_reported_dropped() {
        let mut report = Report::new("/a");
        report.exact("cpus", "x");
        report.exact("container.docker", "y");
        report.cover(&json!({
            "cpus": 1, "container": { "docker": { "image": "i", "x": [1] }, "volumes": [{ "a": 1 }] },
            "cpusExtra": 2, "empty": {}
        }));
        let fields: Vec<(&str, Outcome)> = report
            .entries
            .iter()
            .map(|e| (e.field.as_str(), e.outcome))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("cpus", Outcome::Exact),
                ("container.docker", Outcome::Exact),
                ("container.volumes[0].a", Outcome::Dropped),
                ("cpusExtra", Outcome::Dropped),
                ("empty", Outcome::Dropped),
            ]
        );
        assert_eq!(report.verdict(), Verdict::WithRewrites);
    }
}

//! The API writes each component made while a scenario ran, counted from the
//! API server's audit log (JSON lines, one event per request). On a busy
//! control plane the writes a system needs per instance set the pace it can
//! reach, so the report shows them beside the times.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::footprint::{ACCOUNT, NAMESPACE};

/// A point in the audit log: the time, and how far the log had been
/// written.
#[derive(Clone, Debug)]
pub struct Mark {
    at: String,
    offset: u64,
}

/// A timed phase of a scenario, from one mark to another.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: Mark,
    pub end: Mark,
}

pub fn audit_log(dir: &Path) -> PathBuf {
    dir.join("audit.log")
}

pub fn mark(log: &Path) -> Mark {
    Mark {
        at: k8s_openapi::jiff::Timestamp::now().to_string(),
        offset: std::fs::metadata(log).map_or(0, |m| m.len()),
    }
}

/// Write requests (create, update, patch, delete) in `window`, keyed by
/// component and verb (`kube-scheduler create pods/binding`). Lease renewals
/// are left out: they go on whatever runs. Read once every event of the
/// window is in the log (the API server flushes it within a second or so).
pub fn count(log: &Path, window: &Window) -> BTreeMap<String, usize> {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        // Events are written in batches: start a little before the mark and
        // let the timestamps decide.
        let from = window.start.offset.saturating_sub(1 << 20);
        if file.seek(SeekFrom::Start(from)).is_ok() {
            let _ = file.read_to_end(&mut bytes);
        }
    }
    // Lossy: the first line may be cut inside a character, and one
    // character that is not UTF-8 must not make the whole window empty.
    let text = String::from_utf8_lossy(&bytes);
    let mut writes = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue; // the first, cut line
        };
        let verb = event["verb"].as_str().unwrap_or("");
        if event["stage"] != "ResponseComplete"
            || !matches!(verb, "create" | "update" | "patch" | "delete")
            || event["objectRef"]["resource"] == "leases"
        {
            continue;
        }
        let at = event["requestReceivedTimestamp"].as_str().unwrap_or("");
        if at < window.start.at.as_str() || at >= window.end.at.as_str() {
            continue;
        }
        let resource = match event["objectRef"]["subresource"].as_str() {
            Some(sub) => format!(
                "{}/{sub}",
                event["objectRef"]["resource"].as_str().unwrap_or("?")
            ),
            None => event["objectRef"]["resource"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        };
        let key = format!("{} {verb} {resource}", component(&event));
        *writes.entry(key).or_insert(0) += 1;
    }
    writes
}

/// Who made a request: the operator's service account, a controller of
/// kube-controller-manager, kube-scheduler, or the user name as it is.
fn component(event: &serde_json::Value) -> String {
    let user = event["impersonatedUser"]["username"]
        .as_str()
        .or_else(|| event["user"]["username"].as_str())
        .unwrap_or("?");
    if user == format!("system:serviceaccount:{NAMESPACE}:{ACCOUNT}") {
        return "statefulapp-operator".into();
    }
    user.strip_prefix("system:serviceaccount:kube-system:")
        .or_else(|| user.strip_prefix("system:"))
        .unwrap_or(user)
        .to_string()
}

/// Prints where the writes of a phase went, per instance, and returns the
/// total per instance.
pub fn report(label: &str, writes: &BTreeMap<String, usize>, instances: usize) -> f64 {
    let n = instances.max(1) as f64;
    let total: usize = writes.values().sum();
    let mut parts: Vec<_> = writes.iter().collect();
    parts.sort_by(|a, b| b.1.cmp(a.1));
    let parts: Vec<String> = parts
        .iter()
        .filter(|(_, c)| **c as f64 / n >= 0.05)
        .map(|(k, c)| format!("{k} {:.2}", **c as f64 / n))
        .collect();
    eprintln!(
        "bench: {label}: {:.2} API writes per instance ({})",
        total as f64 / n,
        parts.join(", ")
    );
    total as f64 / n
}

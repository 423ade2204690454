//! Medians, ratios, the printed table and the JSON file.

use std::time::Duration;

use serde::Serialize;

use crate::footprint::Footprint;

/// Stands for a run that did not converge within the scenario timeout.
pub const TIMED_OUT: f64 = f64::INFINITY;

#[derive(Serialize)]
pub struct Row {
    pub scenario: String,
    pub statefulapp_seconds: Vec<f64>,
    pub statefulset_seconds: Vec<f64>,
    pub ceiling_seconds: Vec<f64>,
    /// API write requests per instance, per repeat (see `writes.rs`).
    pub statefulapp_writes: Vec<f64>,
    pub statefulset_writes: Vec<f64>,
    pub ceiling_writes: Vec<f64>,
}

impl Row {
    pub fn new(scenario: String) -> Row {
        Row {
            scenario,
            statefulapp_seconds: Vec::new(),
            statefulset_seconds: Vec::new(),
            ceiling_seconds: Vec::new(),
            statefulapp_writes: Vec::new(),
            statefulset_writes: Vec::new(),
            ceiling_writes: Vec::new(),
        }
    }

    /// One line on stderr as soon as a scenario is done.
    pub fn print_progress(&self) {
        eprintln!(
            "bench: {}: StatefulApp {:?} StatefulSet {:?} ceiling {:?} (seconds)",
            self.scenario, self.statefulapp_seconds, self.statefulset_seconds, self.ceiling_seconds
        );
    }

    /// Records one repeat; a run that timed out counts as `TIMED_OUT`, so
    /// the median shows it rather than hiding it.
    pub fn add(
        &mut self,
        ours: Option<Duration>,
        peer: Option<Option<Duration>>,
        ceiling: Option<Option<Duration>>,
    ) {
        let seconds = |d: Option<Duration>| d.map_or(TIMED_OUT, |d| d.as_secs_f64());
        self.statefulapp_seconds.push(seconds(ours));
        self.statefulset_seconds.extend(peer.map(seconds));
        self.ceiling_seconds.extend(ceiling.map(seconds));
    }

    /// Records the writes per instance of one repeat.
    pub fn add_writes(&mut self, ours: f64, peer: Option<f64>, ceiling: Option<f64>) {
        self.statefulapp_writes.push(ours);
        self.statefulset_writes.extend(peer);
        self.ceiling_writes.extend(ceiling);
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

#[derive(Serialize)]
pub struct Report {
    pub machine: String,
    pub nodes: usize,
    pub rows: Vec<Row>,
    pub footprint: Option<Footprint>,
}

impl Report {
    pub fn new(nodes: &[String]) -> Report {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        Report {
            machine: format!("{cpus} cores, {model}"),
            nodes: nodes.len(),
            rows: Vec::new(),
            footprint: None,
        }
    }

    pub fn print(&self) {
        let fmt = |v: Option<f64>| match v {
            None => "-".to_string(),
            Some(v) if v.is_infinite() => "timeout".to_string(),
            Some(v) => format!("{v:.2}s"),
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => {
                format!("{:.2}x", a / b)
            }
            _ => "-".to_string(),
        };
        println!(
            "\nmachine: {}; {} simulated nodes; medians",
            self.machine, self.nodes
        );
        println!(
            "| {:<24} | {:>11} | {:>11} | {:>9} | {:>19} | {:>17} |",
            "scenario",
            "StatefulApp",
            "StatefulSet",
            "ceiling",
            "StatefulSet/StatefulApp",
            "StatefulApp/ceiling"
        );
        println!(
            "|{:-<26}|{:->13}|{:->13}|{:->11}|{:->25}|{:->19}|",
            "", "", "", "", "", ""
        );
        for row in &self.rows {
            let (ours, peer, ceiling) = (
                median(&row.statefulapp_seconds),
                median(&row.statefulset_seconds),
                median(&row.ceiling_seconds),
            );
            println!(
                "| {:<24} | {:>11} | {:>11} | {:>9} | {:>23} | {:>17} |",
                row.scenario,
                fmt(ours),
                fmt(peer),
                fmt(ceiling),
                ratio(peer, ours),
                ratio(ours, ceiling)
            );
        }
        let writes = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        println!(
            "\nAPI write requests per instance (medians; a pod's deletion is one request, two writes to etcd)"
        );
        println!(
            "| {:<24} | {:>11} | {:>11} | {:>9} |",
            "scenario", "StatefulApp", "StatefulSet", "ceiling"
        );
        println!("|{:-<26}|{:->13}|{:->13}|{:->11}|", "", "", "", "");
        for row in self
            .rows
            .iter()
            .filter(|r| !r.statefulapp_writes.is_empty())
        {
            println!(
                "| {:<24} | {:>11} | {:>11} | {:>9} |",
                row.scenario,
                writes(median(&row.statefulapp_writes)),
                writes(median(&row.statefulset_writes)),
                writes(median(&row.ceiling_writes)),
            );
        }
        if let Some(f) = &self.footprint {
            println!(
                "\nfootprint, {} apps x {} instances (converged in {:.0}s): RSS {:.1} MiB ({:.1} heap and stacks, {:.1} executable; {:.1} before the apps; peak {:.1} MiB), idle CPU {:.3} cores, {} API requests and {} writes per idle minute {:?}",
                f.apps,
                f.instances,
                f.converge_seconds,
                f.rss_mib,
                f.rss_anon_mib,
                f.rss_file_mib,
                f.start_rss_mib,
                f.peak_rss_mib,
                f.cpu_cores_idle,
                f.requests_per_idle_minute,
                f.writes_per_idle_minute,
                f.requests_by_kind
            );
            let converged = format!(
                "converged: {} apps x {} instances in {:.0}s",
                f.apps, f.instances, f.converge_seconds
            );
            match (f.peer_run, f.statefulsets_converge_seconds) {
                (false, _) => println!("{converged}; StatefulSet peer not run"),
                (true, None) => println!(
                    "{converged}; {} StatefulSets x {} replicas timed out",
                    f.apps, f.instances
                ),
                (true, Some(peer)) => println!(
                    "{converged}; {} StatefulSets x {} replicas in {peer:.0}s: StatefulSet/StatefulApp {:.2}x",
                    f.apps,
                    f.instances,
                    peer / f.converge_seconds
                ),
            }
        }
    }

    pub fn write_json(&self, path: &std::path::Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create results dir");
        }
        let json = serde_json::to_string_pretty(self).expect("serialize report");
        std::fs::write(path, json).expect("write results");
        eprintln!("bench: results written to {}", path.display());
    }
}

//! Footprint in steady state: resident memory and CPU of the operator's
//! controller process, and the API requests it makes in an idle minute,
//! counted from the API server's audit log (the operator runs as its own
//! ServiceAccount identity so that its requests can be told apart).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use statefulapp_operator::api::StatefulApp;

use crate::scenarios::{clear, statefulset};
use crate::support::TestCluster;
use crate::support::fixtures::postgres;
use crate::support::operator::{
    Identity, Operator, install_crd_and_storage_class, operator_binary,
};

pub const NAMESPACE: &str = "default";
pub const ACCOUNT: &str = "statefulapp-bench";
const IDLE_WINDOW: Duration = Duration::from_secs(60);

#[derive(serde::Serialize, Clone, Debug)]
pub struct Footprint {
    pub apps: usize,
    pub instances: usize,
    pub converge_seconds: f64,
    /// Resident memory before the apps are created.
    pub start_rss_mib: f64,
    pub rss_mib: f64,
    /// Of `rss_mib`: heap and stacks (anonymous), and mapped files (the
    /// executable's own pages).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
    pub peak_rss_mib: f64,
    pub cpu_cores_idle: f64,
    pub requests_per_idle_minute: usize,
    pub writes_per_idle_minute: usize,
    /// By verb and resource (`patch events`, `get /version`), so that an
    /// idle write says what it touched.
    pub requests_by_kind: BTreeMap<String, usize>,
    /// The peer: as many Parallel StatefulSets of as many replicas (claims
    /// of the same StorageClass), created the same way on the same plane
    /// once the operator's apps were measured and removed with their pods,
    /// claims and volumes; seconds until every pod ran.
    pub statefulsets_converge_seconds: Option<f64>,
    /// Whether the peer ran (`--no-footprint-peer` skips it).
    pub peer_run: bool,
}

/// The operator, acting as ServiceAccount `default/statefulapp-bench`,
/// provisioning the StatefulSet peer's claims too.
pub async fn operator_with_own_identity(cluster: &TestCluster) -> Operator {
    install_crd_and_storage_class(cluster).await;
    let client = cluster.client().await;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": ACCOUNT },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
        "subjects": [{ "kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE }],
    }))
    .unwrap();
    let _ = Api::<ClusterRoleBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await;
    let kubeconfig = cluster.kubeconfig_as_service_account(NAMESPACE, ACCOUNT);
    let identity = Identity {
        controller_kubeconfig: kubeconfig.clone(),
        agent_kubeconfig: cluster.kubeconfig.clone(),
        leader_elect_namespace: None,
        capacity_namespace: None,
    };
    let operator = Operator::launch(cluster, operator_binary().as_ref(), identity);
    // The StatefulSet peer's claims are not a StatefulApp's.
    operator.restart_controller_with(&["--provision-any-claim"]);
    operator
}

pub async fn measure(
    cluster: &TestCluster,
    operator: &Operator,
    apps: usize,
    instances: usize,
) -> Footprint {
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "bench-footprint").await;
    let api: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let pid = operator.controller_pid().expect("controller running");
    let start = memory(pid);
    eprintln!("bench: footprint: creating {apps} apps x {instances} instances");
    let started = Instant::now();
    futures::stream::iter(0..apps)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut app = postgres(instances as i32);
                app["metadata"]["name"] = json!(format!("app-{i}"));
                app["spec"]["template"]["spec"]["containers"][0]["resources"] =
                    json!({ "requests": { "cpu": "1m", "memory": "1Mi" } });
                let app: StatefulApp = serde_json::from_value(app).unwrap();
                api.create(&PostParams::default(), &app).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let total = apps * instances;
    let mut progress = Progress::new("StatefulApp instances", total);
    loop {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        let running: i32 = list
            .iter()
            .filter_map(|a| a.status.as_ref())
            .map(|s| s.running)
            .sum();
        if running as usize == total {
            break;
        }
        progress.report(running as usize, started);
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "footprint apps not converged"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let converge = started.elapsed();
    eprintln!(
        "bench: footprint: {total} instances running after {:.0}s; settling",
        converge.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(30)).await;

    let cpu_before = cpu_ticks(pid);
    let window_start = chrono_now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let window_end = chrono_now();
    let cpu_after = cpu_ticks(pid);
    // The audit log is flushed in batches of at most a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = memory(pid);
    let by_kind = audit_requests(&cluster.dir.join("audit.log"), &window_start, &window_end);
    // The peer must not meet these 5,000 (or 20,000) objects on the plane:
    // kube-scheduler, the binder and the API server would work through them
    // too, and the peer would be slower for it.
    eprintln!("bench: footprint: removing the apps' pods, claims and volumes");
    clear(&client, &ns).await;
    let writes = by_kind
        .iter()
        .filter(|(kind, _)| {
            let verb = kind.split(' ').next().unwrap_or("");
            ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
        })
        .map(|(_, n)| n)
        .sum();
    Footprint {
        apps,
        instances,
        converge_seconds: converge.as_secs_f64(),
        start_rss_mib: start.rss,
        rss_mib: end.rss,
        rss_anon_mib: end.anon,
        rss_file_mib: end.file,
        peak_rss_mib: end.peak,
        cpu_cores_idle: (cpu_after - cpu_before) as f64
            / ticks_per_second()
            / IDLE_WINDOW.as_secs_f64(),
        requests_per_idle_minute: by_kind.values().sum(),
        writes_per_idle_minute: writes,
        requests_by_kind: by_kind,
        statefulsets_converge_seconds: None,
        peer_run: false,
    }
}

/// The same number of Parallel StatefulSets of `instances` replicas, each
/// pod with a claim of the operator's StorageClass: seconds until all run
/// (None past the hour).
pub async fn statefulsets_converge(
    cluster: &TestCluster,
    apps: usize,
    instances: usize,
) -> Option<f64> {
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "bench-footprint-sts").await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    eprintln!("bench: footprint: creating {apps} StatefulSets x {instances} replicas");
    let started = Instant::now();
    futures::stream::iter(0..apps)
        .map(|i| {
            let sets = sets.clone();
            async move {
                let name = format!("app-{i}");
                let set = statefulset(
                    &name,
                    instances,
                    json!({ "app": name, "bench": "footprint" }),
                    json!({ "cpu": "1m", "memory": "1Mi" }),
                );
                sets.create(&PostParams::default(), &set).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let total = apps * instances;
    let mut progress = Progress::new("StatefulSet pods", total);
    while started.elapsed() < Duration::from_secs(3600) {
        let list = pods
            .list(&ListParams::default().labels("bench=footprint"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let running = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == total {
            let seconds = started.elapsed().as_secs_f64();
            eprintln!("bench: footprint: {total} StatefulSet pods running after {seconds:.0}s");
            return Some(seconds);
        }
        progress.report(running, started);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    None
}

/// A line a minute while a large run converges, so that a run stopped
/// early still says how far each system got.
struct Progress {
    what: &'static str,
    total: usize,
    next: Duration,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        Self {
            what,
            total,
            next: Duration::from_secs(60),
        }
    }

    fn report(&mut self, running: usize, started: Instant) {
        let elapsed = started.elapsed();
        if elapsed >= self.next {
            eprintln!(
                "bench: footprint: {running} of {} {} running after {:.0}s",
                self.total,
                self.what,
                elapsed.as_secs_f64()
            );
            self.next += Duration::from_secs(60);
        }
    }
}

/// RFC 3339 time as the audit log writes it (UTC, micro-seconds).
fn chrono_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; after the ')' they are 12 and 13.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Resident memory of a process, MiB.
struct Memory {
    rss: f64,
    anon: f64,
    file: f64,
    peak: f64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |key: &str| {
        let kib = status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    };
    Memory {
        rss: mib("VmRSS:"),
        anon: mib("RssAnon:"),
        file: mib("RssFile:"),
        peak: mib("VmHWM:"),
    }
}

/// Requests of the bench's operator identity in [start, end), by verb and
/// resource (with subresource), or by path for a request that names none.
fn audit_requests(log: &std::path::Path, start: &str, end: &str) -> BTreeMap<String, usize> {
    let user = format!("system:serviceaccount:{NAMESPACE}:{ACCOUNT}");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut by_kind = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["impersonatedUser"]["username"] != user.as_str()
            || event["stage"] != "ResponseComplete"
        {
            continue;
        }
        let at = event["requestReceivedTimestamp"].as_str().unwrap_or("");
        if at >= start && at < end {
            *by_kind.entry(request_kind(&event)).or_insert(0) += 1;
        }
    }
    by_kind
}

/// `verb resource[/subresource]` of an audit event, or `verb path`.
fn request_kind(event: &serde_json::Value) -> String {
    let verb = event["verb"].as_str().unwrap_or("?");
    let object = &event["objectRef"];
    match (object["resource"].as_str(), object["subresource"].as_str()) {
        (Some(resource), Some(sub)) => format!("{verb} {resource}/{sub}"),
        (Some(resource), None) => format!("{verb} {resource}"),
        _ => format!("{verb} {}", event["requestURI"].as_str().unwrap_or("?")),
    }
}

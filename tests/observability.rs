//! Metrics and health endpoints of the controller reflect what it does, and
//! the chart's alerts and dashboard query only metrics it exports.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;
use support::chart::{CHART, RELEASE, RELEASE_NAMESPACE, run};
use support::cluster::tools_dir;
use support::fixtures::{create_app, postgres, set_instances, wait_for_status};
use support::http::{get, sample};
use support::operator::Operator;
use support::{TestCluster, wait_until};

#[tokio::test]
async fn metrics_report_reconciles_actions_and_instances_by_state() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "metrics").await;
    let port = operator.metrics_port;

    create_app(&client, &ns, postgres(2)).await;
    wait_for_status(&client, &ns, "postgres", operator, "two running", |s| {
        s.running == 2
    })
    .await;
    set_instances(&client, &ns, "postgres", 1).await;
    wait_for_status(&client, &ns, "postgres", operator, "one stopped", |s| {
        s.stopped == 1
    })
    .await;

    let app = [
        format!("namespace=\"{ns}\""),
        "app=\"postgres\"".to_string(),
    ];
    let exposition = wait_until(
        support::fixtures::WAIT,
        "metrics with the app's states",
        || async {
            let (status, body) = get(port, "/metrics").await?;
            let running = sample(
                &body,
                "statefulapp_instances",
                &[&app[0], &app[1], "state=\"Running\""],
            )?;
            let stopped = sample(
                &body,
                "statefulapp_instances",
                &[&app[0], &app[1], "state=\"Stopped\""],
            )?;
            (status == 200 && running == 1.0 && stopped == 1.0).then_some(body)
        },
    )
    .await;
    let reconciles = sample(
        &exposition,
        "statefulapp_reconciles_total",
        &["result=\"success\""],
    )
    .unwrap();
    assert!(reconciles >= 1.0, "{exposition}");
    for action in ["CreateClaim", "CreatePod", "DeletePod"] {
        let label = format!("action=\"{action}\"");
        let count = sample(&exposition, "statefulapp_actions_total", &[&label]).unwrap_or(0.0);
        assert!(count >= 1.0, "no {action} counted:\n{exposition}");
    }
    let provisioned = sample(&exposition, "statefulapp_volumes_provisioned_total", &[]).unwrap();
    assert!(provisioned >= 2.0, "{exposition}");
    assert!(exposition.contains("statefulapp_reconcile_duration_seconds_bucket"));

    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get(port, "/readyz").await.map(|r| r.0), Some(200));
}

/// A TCP relay to the API server that can be cut (every connection dropped,
/// new ones refused) and restored on the same port.
struct Relay {
    port: u16,
    upstream: std::net::SocketAddr,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        let port = support::process::free_ports(1)[0];
        let relay = Relay {
            port,
            upstream,
            task: std::sync::Mutex::new(None),
        };
        relay.restore().await;
        relay
    }

    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the relay");
        let upstream = self.upstream;
        let task = tokio::spawn(async move {
            // Dropped with the task: every connection goes when it is cut.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn cut(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// `/healthz` and `/readyz` fail, saying why, once a process (here a node
/// agent; the controller serves the same endpoints) has not reached the
/// API server for `--unhealthy-after`, and recover with it. (A leading
/// controller that cannot renew its lease exits instead.)
#[tokio::test]
async fn health_endpoints_fail_while_the_api_server_is_out_of_reach() {
    let cluster = TestCluster::shared();
    Operator::shared().await; // the CRD and the classes are installed
    let kubeconfig = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("the API server's address")
        .to_string();
    let relay = Relay::start(server.parse().unwrap()).await;
    let relayed = cluster.dir.join(format!("kubeconfig-relay-{}", relay.port));
    std::fs::write(
        &relayed,
        kubeconfig.replace(&server, &format!("127.0.0.1:{}", relay.port)),
    )
    .unwrap();
    let port = support::process::free_ports(1)[0];
    let base_dir = cluster.dir.join("disks").join("behind-relay");
    let mut agent = support::process::Process::start_with_env(
        "agent-behind-relay",
        std::path::Path::new(support::operator::operator_binary()),
        &[
            "agent".to_string(),
            "--node=behind-relay".to_string(),
            format!("--base-dir={}", base_dir.display()),
            format!("--metrics-address=127.0.0.1:{port}"),
            "--unhealthy-after=5s".to_string(),
        ],
        &[("KUBECONFIG", &relayed)],
        &cluster.dir.join("logs"),
    );
    let status_of = |path: &'static str| async move { get(port, path).await };
    wait_until(support::fixtures::WAIT, "healthy", || async {
        let ready = status_of("/readyz").await?;
        let alive = status_of("/healthz").await?;
        (ready.0 == 200 && alive.0 == 200).then_some(())
    })
    .await;

    relay.cut();
    let cut = std::time::Instant::now();
    let body = wait_until(std::time::Duration::from_secs(60), "unhealthy", || async {
        let ready = status_of("/readyz").await?;
        let alive = status_of("/healthz").await?;
        (ready.0 == 503 && alive.0 == 503).then_some(ready.1)
    })
    .await;
    assert!(
        cut.elapsed() >= std::time::Duration::from_secs(4),
        "not before --unhealthy-after"
    );
    assert!(body.contains("the API server has not answered"), "{body}");

    relay.restore().await;
    wait_until(
        std::time::Duration::from_secs(60),
        "healthy again",
        || async {
            let ready = status_of("/readyz").await?;
            (ready.0 == 200).then_some(())
        },
    )
    .await;
    agent.kill();
}

/// A PromQL expression the chart ships, and where.
struct Query {
    source: String,
    expr: String,
}

/// The chart rendered with its alerts and dashboard on.
fn rendered_with_monitoring() -> Vec<Value> {
    let yaml = run(Command::new(tools_dir().join("helm"))
        .args(["template", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .args(["--set", "metrics.grafanaDashboard.enabled=true"]));
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The spec of the one PrometheusRule the chart renders.
fn rule_spec(objects: &[Value]) -> &Value {
    let rules: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    &rules[0]["spec"]
}

/// Every PromQL expression of the chart's alerts (PrometheusRule) and
/// dashboard (the ConfigMap Grafana's sidecar loads: its panels' targets and
/// its variables' `label_values(...)` selectors), rendered with both on.
fn chart_queries() -> Vec<Query> {
    let objects = rendered_with_monitoring();
    let mut queries = Vec::new();
    for group in rule_spec(&objects)["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert name");
            queries.push(Query {
                source: format!("alert {name}"),
                expr: rule["expr"].as_str().expect("expr").to_string(),
            });
        }
    }
    let dashboards: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(dashboards.len(), 1, "one dashboard ConfigMap");
    let data = dashboards[0]["data"].as_object().expect("data");
    assert_eq!(data.len(), 1, "one dashboard");
    let (file, json) = data.iter().next().unwrap();
    let dashboard: Value = serde_json::from_str(json.as_str().unwrap())
        .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
    fn panels(list: &Value, out: &mut Vec<Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel.clone());
            panels(&panel["panels"], out); // a row's panels
        }
    }
    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    for panel in all.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or_default();
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            // Grafana fills in its interval variables before Prometheus
            // parses the query; other variables sit in label matchers.
            let expr = target["expr"].as_str().expect("a PromQL target");
            queries.push(Query {
                source: format!("panel {title:?}"),
                expr: expr.replace("$__rate_interval", "5m"),
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or_default();
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("a variable's query");
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector.trim())
            .unwrap_or_else(|| {
                panic!("variable {name}: {query:?} is not label_values(<selector>, <label>)")
            });
        queries.push(Query {
            source: format!("variable {name}"),
            expr: selector.to_string(),
        });
    }
    queries
}

/// The alert rules load as Prometheus loads a rules file: known fields,
/// durations, expressions, and the templates of their annotations.
#[test]
fn alert_rules_load_as_prometheus_loads_them() {
    let objects = rendered_with_monitoring();
    let spec = serde_yaml::to_string(rule_spec(&objects)).unwrap();
    let mut child = Command::new(tools_dir().join("promql-metrics"))
        .arg("rules")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run promql-metrics (built by testcluster/build.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let checked: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&output.stdout).expect("its JSON");
    assert_eq!(checked["errors"], Vec::<String>::new(), "{spec}");
    // The check finds what Prometheus would refuse.
    let broken = spec.replace("humanizePercentage", "humanizePercent");
    let mut child = Command::new(tools_dir().join("promql-metrics"))
        .arg("rules")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(broken.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let checked: BTreeMap<String, Vec<String>> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(checked["errors"].len(), 1, "{:?}", checked["errors"]);
}

/// What Prometheus' parser makes of an expression: the metrics it selects
/// and the labels it matches or groups each on.
#[derive(Debug, Deserialize)]
struct Parsed {
    expr: String,
    metrics: Vec<String>,
    labels: BTreeMap<String, Vec<String>>,
    error: Option<String>,
}

/// Labels Prometheus adds to every series it scrapes through the chart's
/// ServiceMonitor (the controller) and PodMonitor (the agents, with their
/// node); `honorLabels` keeps a metric's own `namespace`.
const CONTROLLER_TARGET_LABELS: [&str; 7] = [
    "instance",
    "job",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "service",
];
const AGENT_TARGET_LABELS: [&str; 7] = [
    "instance",
    "job",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "node",
];

/// The label names of each series name in an exposition's samples, plus
/// the scrape's `target` labels.
fn series_labels(exposition: &str, target: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let set = labels.entry(line[..name_end].to_string()).or_default();
        set.extend(target.iter().map(|l| l.to_string()));
        let Some(mut rest) = line[name_end..].strip_prefix('{') else {
            continue;
        };
        // `key="value",...}`, values with backslash escapes.
        while let Some((key, after)) = rest.split_once("=\"") {
            set.insert(key.trim_start_matches(',').to_string());
            let mut escaped = false;
            let close = after
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map(|(i, _)| i)
                .expect("a closed label value");
            rest = &after[close + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    labels
}

/// The metric names each expression selects, by Prometheus' own parser
/// (`testcluster/promql-metrics`).
fn metric_names(queries: &[Query]) -> Vec<Parsed> {
    let exprs: Vec<&str> = queries.iter().map(|q| q.expr.as_str()).collect();
    let mut child = Command::new(tools_dir().join("promql-metrics"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promql-metrics (built by testcluster/build.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&exprs).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promql-metrics failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Vec<Parsed> = serde_json::from_slice(&output.stdout).expect("its JSON");
    assert_eq!(parsed.len(), queries.len());
    parsed
}

/// The series names a text exposition offers Prometheus, by the families it
/// declares (`# TYPE`): a counter `x` as `x_total`, a histogram as
/// `x_bucket`, `x_sum` and `x_count`, a gauge as `x`. (The exporter lists
/// a family once it has a series: the operator starts at 0 the series of
/// failures its alerts read.)
fn series_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = declared.split_once(' ').expect("# TYPE <name> <type>");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// Every metric the chart's alerts and dashboard query is one the
/// controller or a node agent exports, by the names Prometheus stores: each
/// expression read by Prometheus' parser, each name looked up in the live
/// `/metrics` of the controller and of the agent holding an instance.
#[tokio::test]
async fn alerts_and_dashboard_query_only_metrics_the_operator_exports() {
    let queries = chart_queries();
    let alerts: BTreeSet<&str> = queries
        .iter()
        .filter_map(|q| q.source.strip_prefix("alert "))
        .collect();
    for wanted in [
        "StatefulAppInstanceUnreachable",
        "StatefulAppVolumeNearlyFull",
        "StatefulAppVolumeOverSize",
        "StatefulAppReservationPending",
        "StatefulAppProvisioningFailing",
        "StatefulAppReconcileErrors",
    ] {
        assert!(alerts.contains(wanted), "no alert {wanted}: {alerts:?}");
    }
    let parsed = metric_names(&queries);
    let errors: Vec<String> = queries
        .iter()
        .zip(&parsed)
        .filter_map(|(q, p)| Some(format!("{}: {}: {}", q.source, p.expr, p.error.as_ref()?)))
        .collect();
    assert!(errors.is_empty(), "not PromQL:\n{}", errors.join("\n"));

    // A live controller and the agent of a node holding an instance.
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "monitoring").await;
    create_app(&client, &ns, postgres(1)).await;
    let status = wait_for_status(&client, &ns, "postgres", operator, "one running", |s| {
        s.running == 1
    })
    .await;
    let node = status.instances[0]
        .node
        .clone()
        .expect("the instance's node");
    let agent_port = operator.agent_metrics_port(&node).expect("its agent");
    let namespace = format!("namespace=\"{ns}\"");
    // The agent measures its volumes every 30 s.
    let agent = wait_until(
        std::time::Duration::from_secs(90),
        "the agent's volume series",
        || async {
            let (status, body) = get(agent_port, "/metrics").await?;
            sample(&body, "statefulapp_agent_volume_size_bytes", &[&namespace])?;
            (status == 200).then_some(body)
        },
    )
    .await;
    let (status, controller) = get(operator.metrics_port, "/metrics")
        .await
        .expect("the controller's /metrics");
    assert_eq!(status, 200);
    let exported: BTreeSet<String> = series_names(&controller)
        .union(&series_names(&agent))
        .cloned()
        .collect();
    // Families are looked up by the names Prometheus stores, not as declared.
    assert!(
        exported.contains("statefulapp_reconciles_total"),
        "{controller}"
    );
    assert!(!exported.contains("statefulapp_reconciles"));
    assert!(exported.contains("statefulapp_reconcile_duration_seconds_bucket"));
    assert!(!exported.contains("statefulapp_reconcile_duration_seconds"));
    assert!(
        exported.contains("statefulapp_agent_volume_used_bytes"),
        "{agent}"
    );

    let mut missing: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut queried = BTreeSet::new();
    for (query, parsed) in queries.iter().zip(&parsed) {
        assert!(
            !parsed.metrics.is_empty(),
            "{}: {} selects no metric",
            query.source,
            query.expr
        );
        for name in &parsed.metrics {
            queried.insert(name.clone());
            if !exported.contains(name) {
                missing.entry(name.clone()).or_default().push(&query.source);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:#?}\nexported: {exported:#?}"
    );
    // Every label a query matches or groups a metric on is one its series
    // carry (or Prometheus adds when scraping through the chart's monitors).
    let mut labels = series_labels(&controller, &CONTROLLER_TARGET_LABELS);
    labels.extend(series_labels(&agent, &AGENT_TARGET_LABELS));
    let mut unknown = Vec::new();
    for (query, parsed) in queries.iter().zip(&parsed) {
        for (metric, used) in &parsed.labels {
            let Some(carried) = labels.get(metric) else {
                unknown.push(format!("{}: {metric} has no series to check", query.source));
                continue;
            };
            for label in used.iter().filter(|l| !carried.contains(*l)) {
                unknown.push(format!(
                    "{}: {metric} has no label {label} (it has {carried:?})",
                    query.source
                ));
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    // Both processes' metrics are used (the alerts cover volumes and apps).
    for needed in [
        "statefulapp_instances",
        "statefulapp_agent_volume_used_bytes",
    ] {
        assert!(queried.contains(needed), "nothing queries {needed}");
    }
}

//! The Helm chart: it lints, ships the generated CRD, grants only what the
//! code uses, locks its workloads down, installs on a real API server, and the
//! whole tutorial passes with the operator acting as the chart's
//! ServiceAccounts (missing RBAC would fail the tutorial; excess RBAC fails
//! the pinned rules below).

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_yaml::Value;
use support::TestCluster;
use support::chart::run;
use support::cluster::tools_dir;
use support::operator::{Identity, Operator, operator_binary};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/statefulapp-operator");
const RELEASE: &str = "statefulapp-operator";
const RELEASE_NAMESPACE: &str = "statefulapp-system";

fn helm() -> Command {
    Command::new(tools_dir().join("helm"))
}

/// The chart rendered with its default values, one document per object.
fn rendered() -> Vec<Value> {
    let yaml = run(helm().args(["template", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE]));
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn objects_of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn chart_passes_helm_lint() {
    let output = run(helm().args(["lint", "--strict", CHART]));
    assert!(output.contains("0 chart(s) failed"), "{output}");
}

#[test]
fn chart_ships_the_generated_crd() {
    let in_chart =
        std::fs::read_to_string(format!("{CHART}/files/statefulapp.io_statefulapps.yaml")).unwrap();
    let generated = statefulapp_operator::crdgen::crd_yaml().unwrap();
    assert!(
        in_chart == generated,
        "the chart's CRD is stale: copy crds/statefulapp.io_statefulapps.yaml into charts/statefulapp-operator/files/"
    );
}

/// The CRD is a template (upgraded with the release; `crds/` would be
/// installed once and never again), rendered as generated, and kept by
/// `helm uninstall`. `tests/chart_upgrade.rs` does both on an API server.
#[test]
fn the_crd_is_rendered_as_generated_and_kept_on_uninstall() {
    assert!(
        !std::path::Path::new(&format!("{CHART}/crds")).exists(),
        "a CRD in crds/ is never upgraded by Helm"
    );
    let objects = rendered();
    let crds = objects_of_kind(&objects, "CustomResourceDefinition");
    assert_eq!(crds.len(), 1);
    let mut crd = crds[0].clone();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "helm uninstall must not delete the CRD, and with it every StatefulApp"
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    crd.as_mapping_mut().unwrap().remove("metadata");
    let mut generated: Value =
        serde_yaml::from_str(&statefulapp_operator::crdgen::crd_yaml().unwrap()).unwrap();
    let name = generated["metadata"]["name"].clone();
    generated.as_mapping_mut().unwrap().remove("metadata");
    assert_eq!(crds[0]["metadata"]["name"], name);
    // Helm's toYaml writes `1.0` as `1`: the same JSON number.
    assert!(
        numbers_as_floats(&crd) == numbers_as_floats(&generated),
        "the rendered CRD differs from the generated one"
    );
}

/// `value` as JSON, every number a float.
fn numbers_as_floats(value: &Value) -> serde_json::Value {
    fn convert(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Number(n) => serde_json::json!(n.as_f64()),
            serde_json::Value::Array(items) => items.into_iter().map(convert).collect(),
            serde_json::Value::Object(map) => {
                map.into_iter().map(|(k, v)| (k, convert(v))).collect()
            }
            other => other,
        }
    }
    convert(serde_json::to_value(value).expect("YAML as JSON"))
}

#[test]
fn rbac_grants_exactly_what_the_code_uses() {
    let objects = rendered();
    let mut granted: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for role in objects_of_kind(&objects, "ClusterRole")
        .into_iter()
        .chain(objects_of_kind(&objects, "Role"))
    {
        let name = role["metadata"]["name"].as_str().unwrap().to_string();
        for rule in role["rules"].as_sequence().unwrap() {
            let (groups, resources, verbs) = (
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"]),
            );
            for field in [&groups, &resources, &verbs] {
                assert!(
                    !field.iter().any(|v| v == "*"),
                    "{name} grants a wildcard: {rule:?}"
                );
            }
            assert!(
                !resources.iter().any(|r| r == "secrets"),
                "{name} grants secrets"
            );
            for resource in resources {
                let key = format!("{}/{resource}", groups.join(","));
                granted
                    .entry(name.clone())
                    .or_default()
                    .insert(key, verbs.clone());
            }
        }
    }
    let expect = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(r, v)| (r.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    assert_eq!(
        granted["statefulapp-operator-controller"],
        expect(&[
            (
                "statefulapp.io/statefulapps",
                &["get", "list", "watch", "patch"]
            ),
            ("statefulapp.io/statefulapps/status", &["patch"]),
            ("/pods", &["list", "watch", "create", "delete"]),
            (
                "/persistentvolumeclaims",
                &["list", "watch", "create", "patch", "delete"]
            ),
            ("/persistentvolumeclaims/status", &["patch"]),
            (
                "/persistentvolumes",
                &["get", "list", "watch", "create", "patch", "delete"]
            ),
            ("/persistentvolumes/status", &["patch"]),
            ("/nodes", &["get", "list", "watch"]),
            ("/namespaces", &["list", "watch"]),
            ("storage.k8s.io/storageclasses", &["list", "watch"]),
            (
                "policy/poddisruptionbudgets",
                &["list", "watch", "create", "patch", "delete"]
            ),
            ("events.k8s.io/events", &["create", "patch"]),
        ])
    );
    assert_eq!(
        granted["statefulapp-operator-controller-leader-election"],
        expect(&[("coordination.k8s.io/leases", &["get", "create", "patch"])])
    );
    assert_eq!(
        granted["statefulapp-operator-controller-capacity"],
        expect(&[("storage.k8s.io/csistoragecapacities", &["get"])])
    );
    assert_eq!(
        granted["statefulapp-operator-agent"],
        expect(&[
            ("/persistentvolumes", &["list", "watch", "patch"]),
            ("events.k8s.io/events", &["create", "patch"]),
            ("/nodes", &["get"]),
        ])
    );
    assert_eq!(
        granted["statefulapp-operator-agent-capacity"],
        expect(&[("storage.k8s.io/csistoragecapacities", &["create", "patch"])])
    );
}

#[test]
fn workloads_run_locked_down() {
    let objects = rendered();
    let deployment = objects_of_kind(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        strings(&container["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    let args = strings(&container["args"]);
    assert!(args.contains(&"--leader-elect".to_string()));
    assert!(args.contains(&"--max-concurrent-reconciles=16".to_string()));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    let daemonset = objects_of_kind(&objects, "DaemonSet")[0];
    let agent = &daemonset["spec"]["template"]["spec"]["containers"][0];
    let context = &agent["securityContext"];
    assert_eq!(context["readOnlyRootFilesystem"], true);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&context["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&context["capabilities"]["add"]),
        ["DAC_OVERRIDE", "FOWNER"]
    );
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"],
        "/var/lib/statefulapp"
    );

    let class = objects_of_kind(&objects, "StorageClass")[0];
    assert_eq!(class["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(class["reclaimPolicy"], "Retain");
}

#[test]
fn size_enforcement_by_image_runs_the_agent_privileged_with_bidirectional_mounts() {
    let yaml = run(helm().args([
        "template",
        RELEASE,
        CHART,
        "--namespace",
        RELEASE_NAMESPACE,
        "--set",
        "agent.sizeEnforcement=image",
    ]));
    let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let daemonset = objects_of_kind(&objects, "DaemonSet")[0];
    let agent = &daemonset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(agent["securityContext"]["privileged"], true);
    assert_eq!(
        agent["volumeMounts"][0]["mountPropagation"],
        "Bidirectional"
    );
    let controller =
        &objects_of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert!(strings(&controller["args"]).contains(&"--size-enforcement=image".to_string()));
    let defaults = rendered();
    let agent =
        &objects_of_kind(&defaults, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        agent["volumeMounts"][0]["mountPropagation"],
        "HostToContainer"
    );
}

#[test]
fn values_are_checked_by_the_schema() {
    let output = helm()
        .args([
            "template",
            RELEASE,
            CHART,
            "--set",
            "agent.baseDir=relative/dir",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("baseDir"));
}

#[tokio::test]
async fn installs_and_runs_the_tutorial_under_its_service_accounts() {
    let cluster = TestCluster::shared();
    let kubeconfig = cluster.kubeconfig.display().to_string();
    run(helm().args([
        "install",
        RELEASE,
        CHART,
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--kubeconfig",
        &kubeconfig,
        "--wait",
        "--timeout",
        "3m",
    ]));

    let identity = Identity {
        controller_kubeconfig: cluster
            .kubeconfig_as_service_account(RELEASE_NAMESPACE, "statefulapp-operator-controller"),
        agent_kubeconfig: cluster
            .kubeconfig_as_service_account(RELEASE_NAMESPACE, "statefulapp-operator-agent"),
        leader_elect_namespace: Some(RELEASE_NAMESPACE.to_string()),
        capacity_namespace: Some(RELEASE_NAMESPACE.to_string()),
    };
    let operator = Operator::launch(cluster, operator_binary().as_ref(), identity);
    support::tutorial::walk(cluster, &operator).await;
}

/// Alerts, dashboard and the Prometheus Operator's monitors are off by
/// default (their CRDs may not exist); each flag turns on its own objects.
#[test]
fn monitoring_objects_are_off_by_default_and_on_when_asked() {
    let kinds = |objects: &[Value]| -> Vec<String> {
        objects
            .iter()
            .filter(|o| {
                ["PrometheusRule", "ServiceMonitor", "PodMonitor"]
                    .contains(&o["kind"].as_str().unwrap_or(""))
                    || o["metadata"]["labels"]["grafana_dashboard"].is_string()
            })
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(&rendered()), Vec::<String>::new());
    let on = |flag: &str| -> Vec<Value> {
        let yaml = run(helm()
            .args(["template", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE])
            .args(["--set", &format!("{flag}=true")]));
        serde_yaml::Deserializer::from_str(&yaml)
            .map(|doc| Value::deserialize(doc).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    };
    assert_eq!(
        kinds(&on("metrics.prometheusRule.enabled")),
        ["PrometheusRule"]
    );
    assert_eq!(
        kinds(&on("metrics.serviceMonitor.enabled")),
        ["PodMonitor", "ServiceMonitor"]
    );
    let dashboard = on("metrics.grafanaDashboard.enabled");
    assert_eq!(kinds(&dashboard), ["ConfigMap"]);
    let config_map = objects_of_kind(&dashboard, "ConfigMap")
        .into_iter()
        .find(|o| o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the sidecar's label");
    let json = config_map["data"]["statefulapp-operator.json"]
        .as_str()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert_eq!(parsed["uid"], "statefulapp-operator");
}

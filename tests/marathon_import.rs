//! The Marathon corpus (`tests/marathon/*.json`: realistic resident apps
//! and a group export) imported with `kubectl statefulapp import`, each
//! result checked against what it should be, and the objects applied to the
//! real control plane with the operator running.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::TestCluster;
use support::fixtures::wait_for_status_within;
use support::operator::Operator;
use support::wait_until;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-statefulapp");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/marathon");

/// One import of a corpus file and what must come of it.
struct Case {
    file: &'static str,
    flags: &'static [&'static str],
    /// Apps imported exactly, with rewrites, refused, skipped.
    counts: [usize; 4],
    /// Text every refusal (or the error) must contain.
    refusal: Option<&'static str>,
    /// Text the report must contain.
    reports: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        file: "postgres-tutorial.json",
        flags: &[],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &[
            "PGDATA=/mnt/mesos/sandbox/pgdata: a path relative to the sandbox, made absolute: inside volume pgdata",
        ],
    },
    Case {
        file: "postgres-hostpath.json",
        flags: &[],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &[
            "mounted at /mnt/mesos/sandbox/pgdata (in the sandbox, as on Mesos) and at /var/lib/postgresql/data",
        ],
    },
    Case {
        file: "redis-exact.json",
        flags: &[],
        counts: [1, 0, 0, 0],
        refusal: None,
        reports: &["required podAntiAffinity on kubernetes.io/hostname"],
    },
    Case {
        file: "mysql-portdefinitions.json",
        flags: &[],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &["containerPort 31000", "runAsUser 999"],
    },
    Case {
        file: "kafka-vip.json",
        flags: &[],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &["Service kafka-brokers, port 9092", "no value is copied"],
    },
    Case {
        file: "cassandra-zones.json",
        flags: &["--offline"],
        counts: [0, 0, 1, 0],
        refusal: Some("rewrite it as [\"@zone\", \"LIKE\", \"<value>|<value>|...\"]"),
        reports: &[],
    },
    Case {
        file: "cassandra-zones.json",
        flags: &[],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &[
            "topology.kubernetes.io/zone In [\"zone-a\", \"zone-b\"]: the values of the live nodes the regex matched",
        ],
    },
    Case {
        file: "elasticsearch-fetch.json",
        flags: &[],
        counts: [0, 0, 1, 0],
        refusal: Some("--fetch-image"),
        reports: &[],
    },
    Case {
        file: "elasticsearch-fetch.json",
        flags: &["--fetch-image", "busybox:1.36"],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &["init container fetch (busybox:1.36)"],
    },
    Case {
        file: "minio-profile.json",
        flags: &[],
        counts: [0, 0, 1, 0],
        refusal: Some("profileName"),
        reports: &[],
    },
    Case {
        file: "consul-user.json",
        flags: &[],
        counts: [0, 0, 1, 0],
        refusal: Some("--uid consul=<uid>"),
        reports: &[],
    },
    Case {
        file: "consul-user.json",
        flags: &["--uid", "consul=100"],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &[
            "topology.kubernetes.io/region In [\"eu-central-1\", \"eu-west-1\"]",
            "Service consul, port 8500",
        ],
    },
    Case {
        file: "platform-group.json",
        flags: &[],
        counts: [0, 2, 0, 1],
        refusal: None,
        reports: &["runtime state, not configuration"],
    },
    Case {
        file: "platform-group.json",
        flags: &["--deployments"],
        counts: [0, 3, 0, 0],
        refusal: None,
        reports: &["Deployment frontend"],
    },
    Case {
        file: "journal-hostpath.json",
        flags: &[],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &["and at /var/lib/journal"],
    },
    Case {
        file: "journal-tutorial.json",
        flags: &[],
        counts: [0, 1, 0, 0],
        refusal: None,
        reports: &["volume pgdata at /mnt/mesos/sandbox/pgdata"],
    },
];

fn plugin(kubeconfig: &str, namespace: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(PLUGIN)
        .args(["--kubeconfig", kubeconfig, "-n", namespace])
        .args(args)
        .output()
        .expect("run plugin");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Zones and regions on the simulated nodes, for the constraints to match.
async fn label_nodes(cluster: &TestCluster, client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let zones = ["zone-a", "zone-b", "other-1"];
    for (name, zone) in cluster.nodes.iter().zip(zones.iter().cycle()) {
        let patch = json!({ "metadata": { "labels": {
            "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": "eu-west-1",
        } } });
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("label node");
    }
}

#[tokio::test]
async fn the_corpus_imports_as_expected_and_applies_to_the_plane() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    label_nodes(cluster, &client).await;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let mut totals = [0usize; 4];
    let mut applied = 0;
    for case in CASES {
        let started = Instant::now();
        let ns = cluster.namespace(&client, "corpus").await;
        let file = format!("{CORPUS}/{}", case.file);
        let mapping = format!("/platform={ns}");
        let mut args = vec!["import", "-o", "json", &file, "--namespace-map", &mapping];
        args.extend(case.flags);
        let (ok, stdout, stderr) = plugin(&kubeconfig, &ns, &args);
        let what = format!("{} {:?}", case.file, case.flags);
        let result: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{what}: no JSON ({e}): {stdout}\n{stderr}"));
        let counts = &result["counts"];
        let got = [
            counts["exact"].as_u64().unwrap() as usize,
            counts["withRewrites"].as_u64().unwrap() as usize,
            counts["refused"].as_u64().unwrap() as usize,
            counts["skipped"].as_u64().unwrap() as usize,
        ];
        assert_eq!(
            got, case.counts,
            "{what}: exact, with rewrites, refused, skipped\n{stdout}"
        );
        for (total, n) in totals.iter_mut().zip(got) {
            *total += n;
        }
        let report = result["reports"].to_string();
        for text in case.reports {
            let text = serde_json::to_string(text).unwrap();
            assert!(
                report.contains(text.trim_matches('"')),
                "{what}: {text} not in\n{report}"
            );
        }
        assert_eq!(ok, case.counts[2] == 0, "{what}: exit status\n{stderr}");
        if let Some(text) = case.refusal {
            assert!(
                result["refused"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["reason"].as_str().unwrap().contains(text)),
                "{what}: {text:?} not in {} / {stderr}",
                result["refused"]
            );
            assert!(
                result["objects"].as_array().unwrap().is_empty(),
                "{what}: nothing printed for a refused app"
            );
            continue;
        }
        // Every field of every app has an entry (the report covers the input).
        let input: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let apps: Vec<&Value> = match input.get("groups") {
            Some(_) => all_apps(&input),
            None => vec![&input],
        };
        for app in apps {
            let id = app["id"].as_str().unwrap();
            let Some(app_report) = result["reports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["app"] == id)
            else {
                assert!(
                    result["skipped"].to_string().contains(id),
                    "{what}: {id} neither reported nor skipped"
                );
                continue;
            };
            let fields: Vec<&str> = app_report["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            let mut leaves = Vec::new();
            leaf_paths(app, String::new(), &mut leaves);
            for leaf in leaves {
                assert!(
                    fields.iter().any(|f| leaf == *f
                        || leaf.starts_with(&format!("{f}."))
                        || leaf.starts_with(&format!("{f}["))),
                    "{what}: {id}: {leaf} is not in the report"
                );
            }
        }

        // Apply what was imported, as a user would: kubectl apply.
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": result["objects"] });
        let path = cluster.dir.join(format!("{ns}.json"));
        std::fs::write(&path, list.to_string()).unwrap();
        let output = cluster
            .kubectl()
            .args([
                "apply",
                "--server-side",
                "--field-manager",
                "import-test",
                "-n",
                &ns,
                "-f",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{what}: kubectl apply: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for object in result["objects"].as_array().unwrap() {
            let name = object["metadata"]["name"].as_str().unwrap();
            let object_ns = object["metadata"]["namespace"].as_str().unwrap_or(&ns);
            match object["kind"].as_str().unwrap() {
                "StatefulApp" => {
                    let instances = object["spec"]["instances"].as_i64().unwrap() as usize;
                    // The operator takes it up: each instance gets its record.
                    wait_for_status_within(
                        Duration::from_secs(120),
                        &client,
                        object_ns,
                        name,
                        operator,
                        &format!("{what}: {name} with {instances} instances"),
                        |s| s.instances.len() == instances,
                    )
                    .await;
                    applied += 1;
                }
                "Service" => {
                    let services: Api<Service> = Api::namespaced(client.clone(), object_ns);
                    let service = services.get(name).await.expect("the Service");
                    let selector = service.spec.unwrap().selector.unwrap();
                    // It selects the pods of a workload of this import.
                    let selects = result["objects"].as_array().unwrap().iter().any(|o| {
                        let labels = &o["spec"]["template"]["metadata"]["labels"];
                        let pod_labels = match o["kind"].as_str() {
                            Some("StatefulApp") => {
                                json!({ "statefulapp.io/app": o["metadata"]["name"] })
                            }
                            _ => labels.clone(),
                        };
                        !selector.is_empty()
                            && selector.iter().all(|(k, v)| pod_labels[k] == json!(v))
                    });
                    assert!(
                        selects,
                        "{what}: Service {name} selects {selector:?}, no pods of this import"
                    );
                }
                "Deployment" => {
                    let deployments: Api<Deployment> = Api::namespaced(client.clone(), object_ns);
                    let replicas = object["spec"]["replicas"].as_i64().unwrap() as i32;
                    wait_until(
                        Duration::from_secs(120),
                        &format!("{what}: {name} available"),
                        || async {
                            let status = deployments.get(name).await.ok()?.status?;
                            (status.available_replicas == Some(replicas)).then_some(())
                        },
                    )
                    .await;
                }
                other => panic!("{what}: unexpected {other}"),
            }
        }
        eprintln!(
            "corpus: {what} imported and applied in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "corpus: {} exact, {} with rewrites, {} refused, {} skipped; {applied} StatefulApps applied",
        totals[0], totals[1], totals[2], totals[3]
    );
}

/// `--strict` fails on anything not mapped exactly and prints nothing; an
/// app that maps exactly passes.
#[test]
fn strict_mode_fails_on_anything_not_exact() {
    let run = |file: &str| {
        Command::new(PLUGIN)
            .args([
                "import",
                "--strict",
                "--offline",
                &format!("{CORPUS}/{file}"),
            ])
            .output()
            .unwrap()
    };
    let exact = run("redis-exact.json");
    assert!(
        exact.status.success(),
        "{}",
        String::from_utf8_lossy(&exact.stderr)
    );
    assert!(String::from_utf8_lossy(&exact.stdout).contains("kind: StatefulApp"));
    let rewritten = run("postgres-tutorial.json");
    let stderr = String::from_utf8_lossy(&rewritten.stderr);
    assert!(!rewritten.status.success());
    assert!(rewritten.stdout.is_empty());
    assert!(
        stderr.contains("--strict: 2 field(s) not mapped exactly"),
        "{stderr}"
    );
    assert!(
        stderr.contains("env.PGDATA"),
        "the table names the field: {stderr}"
    );
}

fn all_apps(group: &Value) -> Vec<&Value> {
    let mut apps: Vec<&Value> = group["apps"].as_array().into_iter().flatten().collect();
    for sub in group["groups"].as_array().into_iter().flatten() {
        apps.extend(all_apps(sub));
    }
    apps
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
        _ => out.push(path),
    }
}

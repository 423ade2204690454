//! `helm upgrade` upgrades the CRD. The previous chart version (taken from
//! git) is installed and an app created; the chart of this tree, with a
//! field its CRD copy gains for the test (a stand-in for a new version's new
//! fields), is installed over it: the app is untouched, the new field is
//! accepted and kept (not pruned), and `helm uninstall` leaves the CRD and
//! every app in place. From a version that shipped the CRD in `crds/`, a
//! plain upgrade is refused (the CRD is not the release's) and
//! `--take-ownership` does it. The CRD's behaviour is the API server's, so a
//! plane with simulated nodes is enough (the chart's pods only need to exist).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use statefulapp_operator::api::StatefulApp;
use support::chart::run;
use support::cluster::tools_dir;
use support::fixtures::postgres;
use support::{TestCluster, wait_until};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const CHART_IN_REPO: &str = "charts/statefulapp-operator";
const RELEASE: &str = "statefulapp-operator";
const RELEASE_NAMESPACE: &str = "statefulapp-system";
const CRD_NAME: &str = "statefulapps.statefulapp.io";
const CRD_IN_CHART: &str = "files/statefulapp.io_statefulapps.yaml";
/// The field the new chart's CRD has and the previous one lacks.
const NEW_FIELD: &str = "upgradeProbe";

fn git(args: &[&str]) -> String {
    run(Command::new("git").args(["-C", REPO]).args(args))
        .trim()
        .to_string()
}

fn chart_version(chart_yaml: &str) -> String {
    let chart: serde_yaml::Value = serde_yaml::from_str(chart_yaml).expect("Chart.yaml");
    chart["version"].as_str().expect("a version").to_string()
}

/// The commit of the previous chart version: HEAD while this tree's bump of
/// `version` is not committed, else the parent of the commit that last
/// changed the version line.
fn previous_chart_commit() -> (String, String) {
    let chart_yaml = format!("{CHART_IN_REPO}/Chart.yaml");
    let current =
        chart_version(&std::fs::read_to_string(Path::new(REPO).join(&chart_yaml)).unwrap());
    let at = |commit: &str| chart_version(&git(&["show", &format!("{commit}:{chart_yaml}")]));
    let commit = if at("HEAD") != current {
        git(&["rev-parse", "HEAD"])
    } else {
        let bump = git(&[
            "log",
            "-n",
            "1",
            "--format=%H",
            "-G",
            "^version:",
            "--",
            &chart_yaml,
        ]);
        git(&["rev-parse", &format!("{bump}^")])
    };
    let version = at(&commit);
    assert_ne!(version, current, "no earlier chart version in git");
    (commit, version)
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The chart of this tree, in `dir`, its CRD with `NEW_FIELD` in the spec.
fn new_chart(dir: &Path) -> PathBuf {
    let chart = dir.join("new");
    copy_dir(&Path::new(REPO).join(CHART_IN_REPO), &chart);
    let path = chart.join(CRD_IN_CHART);
    let mut crd: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for version in crd["spec"]["versions"].as_sequence_mut().unwrap() {
        let properties =
            &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        properties.as_mapping_mut().unwrap().insert(
            NEW_FIELD.into(),
            serde_yaml::from_str("{type: string, description: a field of the new chart version}")
                .unwrap(),
        );
    }
    std::fs::write(&path, serde_yaml::to_string(&crd).unwrap()).unwrap();
    chart
}

/// The chart of the previous version, from git, in `dir`.
fn previous_chart(dir: &Path, commit: &str) -> PathBuf {
    let archive = dir.join("previous.tar");
    git(&[
        "archive",
        "--format=tar",
        "-o",
        archive.to_str().unwrap(),
        commit,
        CHART_IN_REPO,
    ]);
    let into = dir.join("previous");
    std::fs::create_dir_all(&into).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&into));
    into.join(CHART_IN_REPO)
}

fn helm(cluster: &TestCluster) -> Command {
    let mut cmd = Command::new(tools_dir().join("helm"));
    cmd.arg("--kubeconfig").arg(&cluster.kubeconfig);
    cmd
}

/// Whether the served CRD's spec schema has `NEW_FIELD`.
fn has_new_field(crd: &CustomResourceDefinition) -> bool {
    let crd = serde_json::to_value(crd).unwrap();
    crd["spec"]["versions"].as_array().unwrap().iter().all(|v| {
        !v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][NEW_FIELD].is_null()
    })
}

fn spec_field(object: &Value) -> &Value {
    &object["spec"][NEW_FIELD]
}

#[tokio::test]
async fn helm_upgrade_upgrades_the_crd_and_uninstall_keeps_it() {
    let started = std::time::Instant::now();
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (commit, previous_version) = previous_chart_commit();
    let previous = previous_chart(dir.path(), &commit);
    let new = new_chart(dir.path());
    eprintln!(
        "upgrading chart {previous_version} (commit {}) to this tree's",
        &commit[..12]
    );

    run(helm(cluster)
        .args(["install", RELEASE])
        .arg(&previous)
        .args(["--namespace", RELEASE_NAMESPACE, "--create-namespace"])
        .args(["--wait", "--timeout", "3m"]));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_until(Duration::from_secs(30), "CRD established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get(CRD_NAME).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;

    // An app, with a status as the operator would have written it.
    let ns = cluster.namespace(&client, "upgrade").await;
    let resource = ApiResource::erase::<StatefulApp>(&());
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let create = |app: Value| {
        let apps = apps.clone();
        async move {
            let app: DynamicObject = serde_json::from_value(app).unwrap();
            let created = apps.create(&PostParams::default(), &app).await;
            serde_json::to_value(created.expect("create app")).unwrap()
        }
    };
    create(postgres(1)).await;
    let status = json!({ "status": {
        "observedGeneration": 1, "running": 1, "ready": 1, "stopped": 0,
        "selector": "statefulapp.io/app=postgres",
        "instances": [{
            "id": "postgres.2f1c7a52-58cb-4d5c-9c1e-6a0f3f0d1a10", "node": "kwok-node-0",
            "state": "Running", "ready": true, "startedAt": "2025-01-01T00:00:00Z",
            "volumes": [{
                "name": "pgdata", "persistenceId": "postgres#pgdata#0b7f4e2e-0000-5000-8000-000000000001",
                "persistentVolume": "sapp-0b7f4e2e-0000-5000-8000-000000000001",
                "claim": "postgres-2f1c7a52-58cb-4d5c-9c1e-6a0f3f0d1a10-pgdata", "size": "100Mi",
            }],
        }],
    }});
    apps.patch_status("postgres", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write status");
    let before = serde_json::to_value(apps.get("postgres").await.unwrap()).unwrap();
    assert_eq!(before["status"]["instances"][0]["state"], "Running");

    // The previous CRD does not know the new field: it is pruned.
    let mut probe = postgres(1);
    probe["metadata"]["name"] = json!("probe-before");
    probe["spec"][NEW_FIELD] = json!("dropped");
    let pruned = create(probe).await;
    assert!(
        spec_field(&pruned).is_null(),
        "the previous CRD already has {NEW_FIELD}: {pruned}"
    );

    let upgrade = || {
        let mut cmd = helm(cluster);
        cmd.args(["upgrade", RELEASE])
            .arg(&new)
            .args(["--namespace", RELEASE_NAMESPACE])
            .args(["--wait", "--timeout", "3m"]);
        cmd
    };
    if previous.join("crds").is_dir() {
        // A version that shipped the CRD in crds/ left it outside the
        // release: Helm refuses to take it over unasked, and changes nothing.
        let refused = upgrade().output().unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("invalid ownership metadata"),
            "{stderr}"
        );
        assert!(!has_new_field(&crds.get(CRD_NAME).await.unwrap()));
        // Taking it over, once, is the documented step from such a version.
        run(upgrade().arg("--take-ownership"));
    } else {
        run(&mut upgrade());
    }
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert!(has_new_field(&crd), "the CRD was not upgraded");
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    assert_eq!(
        annotations
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        Some(RELEASE),
        "the CRD belongs to the release now"
    );

    // The existing app is untouched: same object, same version, same status.
    // A StorageClass's provisioner cannot change: one of a former name is
    // kept by the upgrade, and switched by deleting it and upgrading again
    // (claims and volumes do not need it).
    let classes: Api<StorageClass> = Api::all(client.clone());
    let provisioner = || async {
        classes
            .get("statefulapp-local")
            .await
            .expect("the StorageClass")
            .provisioner
    };
    let before_switch = provisioner().await;
    if before_switch != "local.statefulapp.io" {
        assert_eq!(before_switch, "statefulapp.io/local");
        classes
            .delete("statefulapp-local", &Default::default())
            .await
            .expect("delete the StorageClass");
        wait_until(Duration::from_secs(30), "the StorageClass gone", || async {
            classes
                .get_opt("statefulapp-local")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        run(&mut upgrade());
        assert_eq!(provisioner().await, "local.statefulapp.io");
    }

    let mut after = serde_json::to_value(apps.get("postgres").await.unwrap()).unwrap();
    // Fields the new schema adds with a default read back defaulted (the
    // API server's structural defaulting); everything else is as it was.
    if before.pointer("/spec/reservation").is_none() {
        let spec = after["spec"].as_object_mut().unwrap();
        assert_eq!(
            spec.remove("reservation"),
            Some(json!({ "resources": "Hold" })),
            "the new reservation field reads back with its default"
        );
    }
    for path in [
        "/metadata/uid",
        "/metadata/resourceVersion",
        "/metadata/generation",
        "/spec",
        "/status",
    ] {
        assert_eq!(after.pointer(path), before.pointer(path), "{path} changed");
    }

    // The new field is accepted, on a new app and on the existing one, and kept.
    let mut probe = postgres(1);
    probe["metadata"]["name"] = json!("probe-after");
    probe["spec"][NEW_FIELD] = json!("kept");
    assert_eq!(spec_field(&create(probe).await), "kept");
    let patch = json!({ "spec": { NEW_FIELD: "kept" } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("set the new field");
    let updated = serde_json::to_value(apps.get("postgres").await.unwrap()).unwrap();
    assert_eq!(spec_field(&updated), "kept");
    assert_eq!(updated["status"], before["status"]);

    // helm uninstall removes the release's workloads, never the CRD: its
    // deletion would delete every StatefulApp.
    run(helm(cluster)
        .args(["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE])
        .args(["--wait", "--timeout", "3m"]));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the release's controller is gone"
    );
    let kept = crds.get(CRD_NAME).await.expect("the CRD is kept");
    assert!(kept.metadata.deletion_timestamp.is_none());
    let names: Vec<String> = apps
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|a| a.metadata.name)
        .collect();
    assert_eq!(names, ["postgres", "probe-after", "probe-before"]);
    let last = serde_json::to_value(apps.get("postgres").await.unwrap()).unwrap();
    assert_eq!(spec_field(&last), "kept");
    assert_eq!(last["status"], before["status"]);
    eprintln!(
        "chart upgrade and uninstall took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

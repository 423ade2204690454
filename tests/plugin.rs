//! The kubectl plugin walks the DC/OS tutorial's `dcos marathon` commands
//! against the real control plane with the operator running.

mod support;

use std::process::Command;

use serde_json::Value;
use support::TestCluster;
use support::fixtures::wait_for_status;
use support::operator::Operator;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-statefulapp");

struct Plugin {
    kubeconfig: String,
    namespace: String,
}

impl Plugin {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(PLUGIN)
            .args(["--kubeconfig", &self.kubeconfig, "-n", &self.namespace])
            .args(args)
            .output()
            .expect("run plugin");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (success, stdout, stderr) = self.run(args);
        assert!(success, "{args:?} failed: {stderr}");
        stdout
    }
}

/// The tutorial's app, as a Marathon JSON (imported by `app add`).
const POSTGRES_MARATHON: &str = r#"{
  "id": "/postgres", "cpus": 0.5, "mem": 256, "instances": 1,
  "container": { "type": "DOCKER", "docker": { "image": "postgres:9.5" },
    "volumes": [
      { "containerPath": "pgdata", "mode": "RW", "persistent": { "size": 100 } },
      { "containerPath": "/var/lib/postgresql/data", "hostPath": "pgdata", "mode": "RW" } ] },
  "upgradeStrategy": { "maximumOverCapacity": 0, "minimumHealthCapacity": 0 }
}"#;

#[tokio::test]
async fn the_tutorial_through_kubectl_statefulapp() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "plugin").await;
    let plugin = Plugin {
        kubeconfig: cluster.kubeconfig.display().to_string(),
        namespace: ns.clone(),
    };
    let file = cluster.dir.join(format!("{ns}-postgres.marathon.json"));
    std::fs::write(&file, POSTGRES_MARATHON).unwrap();

    // app add (a Marathon definition, imported)
    let added = plugin.ok(&["app", "add", file.to_str().unwrap()]);
    assert!(added.contains("app /postgres added"), "{added}");
    wait_for_status(&client, &ns, "postgres", operator, "running", |s| {
        s.running == 1 && s.ready == 1
    })
    .await;

    // task list / task show
    let list = plugin.ok(&["task", "list"]);
    let line = list.lines().nth(1).expect("one task");
    assert!(
        line.starts_with("/postgres") && line.contains("True") && line.contains("Running"),
        "{list}"
    );
    let id = line.split_whitespace().last().unwrap().to_string();
    let prefix = &id[..id.len() - 28]; // `postgres.xxxxxxxx`: a unique prefix
    let show: Value = serde_json::from_str(&plugin.ok(&["task", "show", prefix])).unwrap();
    assert_eq!(show["id"], id.as_str());
    assert_eq!(show["appId"], "/postgres");
    assert!(show["startedAt"].is_string());
    assert_eq!(
        show["localVolumes"][0]["containerPath"],
        "/var/lib/postgresql/data"
    );
    let persistence_id = show["localVolumes"][0]["persistenceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(persistence_id.starts_with("postgres#pgdata#"));

    // app stop: the task stays, without startedAt
    plugin.ok(&["app", "stop", "postgres"]);
    wait_for_status(&client, &ns, "postgres", operator, "stopped", |s| {
        s.stopped == 1
    })
    .await;
    let list = plugin.ok(&["task", "list", "postgres"]);
    assert!(list.contains("N/A") && list.contains(&id), "{list}");
    let show: Value = serde_json::from_str(&plugin.ok(&["task", "show", &id])).unwrap();
    assert!(show.get("startedAt").is_none());
    assert_eq!(
        show["localVolumes"][0]["persistenceId"],
        persistence_id.as_str()
    );

    // app start: same task, same persistenceId
    plugin.ok(&["app", "start", "postgres"]);
    wait_for_status(&client, &ns, "postgres", operator, "restarted", |s| {
        s.running == 1
    })
    .await;
    let show: Value = serde_json::from_str(&plugin.ok(&["task", "show", &id])).unwrap();
    assert_eq!(
        show["localVolumes"][0]["persistenceId"],
        persistence_id.as_str()
    );

    // app update instances=2, then instances=1
    plugin.ok(&["app", "update", "postgres", "instances=2"]);
    let status = wait_for_status(&client, &ns, "postgres", operator, "two", |s| {
        s.running == 2
    })
    .await;
    let second = status
        .instances
        .iter()
        .find(|i| i.id != id)
        .unwrap()
        .id
        .clone();
    plugin.ok(&["app", "update", "postgres", "instances=1"]);
    wait_for_status(&client, &ns, "postgres", operator, "one stopped", |s| {
        s.stopped == 1
    })
    .await;

    // task stop --wipe of the stopped second task: a prefix is not enough
    let prefix = &second[..second.len() - 28];
    let (ok, _, stderr) = plugin.run(&["task", "stop", prefix, "--wipe"]);
    assert!(
        !ok && stderr.contains("give the full instance id"),
        "{stderr}"
    );
    let (ok, _, stderr) = plugin.run(&["-A", "task", "stop", prefix, "--wipe", "--yes"]);
    assert!(
        !ok && stderr.contains("--all-namespaces needs the full instance id"),
        "{stderr}"
    );
    let status = plugin.ok(&["task", "list", "-o", "name"]);
    assert!(
        status.lines().any(|l| l == second),
        "nothing wiped: {status}"
    );
    let wiped = plugin.ok(&["task", "stop", &second, "--wipe"]);
    assert!(wiped.contains("will be wiped"), "{wiped}");
    wait_for_status(&client, &ns, "postgres", operator, "wiped", |s| {
        s.instances.len() == 1
    })
    .await;

    // kubectl's conventions: -o name, -o wide, -l, --as
    assert_eq!(
        plugin.ok(&["app", "list", "-o", "name"]),
        "statefulapp.statefulapp.io/postgres\n"
    );
    let wide = plugin.ok(&["task", "list", "-o", "wide"]);
    assert!(
        wide.contains("PERSISTENCE IDS") && wide.contains("postgres#pgdata#"),
        "{wide}"
    );
    assert_eq!(
        plugin.ok(&["app", "list", "-l", "team=none", "-o", "name"]),
        ""
    );
    let (ok, _, stderr) = plugin.run(&["app", "list", "--as", "nobody"]);
    assert!(
        !ok && stderr.contains("forbidden"),
        "impersonated: {stderr}"
    );

    // app list and -o json
    let apps = plugin.ok(&["app", "list"]);
    assert!(
        apps.lines().nth(1).unwrap().starts_with("/postgres"),
        "{apps}"
    );
    let json: Value = serde_json::from_str(&plugin.ok(&["task", "list", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);

    // clear errors, exit code 1, no panic
    let (success, _, stderr) = plugin.run(&["task", "show", "nothing-like-this"]);
    assert!(
        !success && stderr.starts_with("error: no instance matches"),
        "{stderr}"
    );
    let (success, _, stderr) = plugin.run(&["app", "update", "postgres", "cpus=2"]);
    assert!(
        !success && stderr.contains("only `instances=N`"),
        "{stderr}"
    );

    // app remove: data kept
    let removed = plugin.ok(&["app", "remove", "postgres"]);
    assert!(removed.contains("kept"), "{removed}");
}

#[test]
fn completion_scripts_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(PLUGIN)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(output.status.success());
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(
            script.contains("kubectl-statefulapp") && script.contains("task"),
            "{shell}"
        );
    }
}

#[test]
fn import_prints_a_statefulapp_and_a_report_of_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, POSTGRES_MARATHON).unwrap();
    let output = Command::new(PLUGIN)
        .args(["import", "--offline", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let yaml = String::from_utf8_lossy(&output.stdout);
    assert!(
        yaml.contains("kind: StatefulApp") && yaml.contains("mountPath: /var/lib/postgresql/data"),
        "{yaml}"
    );
    for field in [
        "container.volumes[0].containerPath",
        "cpus",
        "upgradeStrategy.maximumOverCapacity",
    ] {
        assert!(
            stderr.contains(field),
            "{field} not in the report:\n{stderr}"
        );
    }

    // An artifact to fetch, without an image to fetch it with: refused, nothing printed.
    let mut app: Value = serde_json::from_str(POSTGRES_MARATHON).unwrap();
    app["fetch"] = serde_json::json!([{ "uri": "https://example.com/x" }]);
    std::fs::write(&file, app.to_string()).unwrap();
    let output = Command::new(PLUGIN)
        .args(["import", "--offline", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("--fetch-image") && stderr.contains("1 app(s) refused: /postgres"),
        "{stderr}"
    );
}

/// `app add` applies server-side without force: the fields a GitOps
/// controller owns stay its own unless the user passes `--force-conflicts`.
#[tokio::test]
async fn app_add_does_not_take_fields_from_a_gitops_controller() {
    let cluster = TestCluster::shared();
    Operator::shared().await; // installs the CRD
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "owned").await;
    let plugin = Plugin {
        kubeconfig: cluster.kubeconfig.display().to_string(),
        namespace: ns.clone(),
    };
    let app = |instances: i32| {
        serde_json::json!({
            "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
            "metadata": { "name": "web", "namespace": ns },
            "spec": {
                "instances": instances,
                "template": { "spec": { "containers": [{ "name": "web", "image": "nginx:1" }] } },
                "volumes": [{ "name": "data", "size": "1Gi", "mountPath": "/data" }],
            },
        })
    };
    // Argo CD applies the app with its own field manager.
    let apps: kube::Api<statefulapp_operator::api::StatefulApp> =
        kube::Api::namespaced(client.clone(), &ns);
    apps.patch(
        "web",
        &kube::api::PatchParams::apply("argocd-controller"),
        &kube::api::Patch::Apply(app(0)),
    )
    .await
    .unwrap();
    let file = cluster.dir.join(format!("{ns}-web.json"));
    std::fs::write(&file, app(2).to_string()).unwrap();

    let (ok, _, stderr) = plugin.run(&["app", "add", file.to_str().unwrap()]);
    assert!(!ok, "a conflict must fail");
    assert!(
        stderr.contains("argocd-controller") && stderr.contains("--force-conflicts"),
        "{stderr}"
    );
    assert_eq!(
        apps.get("web").await.unwrap().spec.instances,
        0,
        "unchanged"
    );

    plugin.ok(&["app", "add", "--force-conflicts", file.to_str().unwrap()]);
    assert_eq!(apps.get("web").await.unwrap().spec.instances, 2);
}

/// `app remove --wipe` destroys the data, even of an app added a moment
/// before (the controller may not have seen it yet): the plugin waits until
/// the controller has taken charge of the app before deleting it.
#[tokio::test]
async fn app_remove_wipe_destroys_the_data_even_right_after_add() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "rmwipe").await;
    let plugin = Plugin {
        kubeconfig: cluster.kubeconfig.display().to_string(),
        namespace: ns.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postgres.json");
    std::fs::write(&file, POSTGRES_MARATHON).unwrap();
    plugin.ok(&["app", "add", file.to_str().unwrap()]);
    let status = wait_for_status(&client, &ns, "postgres", operator, "running", |s| {
        s.running == 1
    })
    .await;
    let volume = &status.instances[0].volumes[0];
    let node = status.instances[0].node.clone().unwrap();
    let data = operator.data_dir(&node, &ns, &volume.persistence_id);
    support::fixtures::wait_for_dir(&data).await;

    // Added again and removed with --wipe at once, before the controller
    // can have reconciled it.
    plugin.ok(&["app", "remove", "postgres"]);
    support::wait_until(std::time::Duration::from_secs(60), "app gone", || async {
        let apps: kube::Api<statefulapp_operator::api::StatefulApp> =
            kube::Api::namespaced(client.clone(), &ns);
        apps.get_opt("postgres").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(data.is_dir(), "a plain remove keeps the data");
    plugin.ok(&["app", "add", file.to_str().unwrap()]);
    let removed = plugin.ok(&["app", "remove", "postgres", "--wipe"]);
    assert!(removed.contains("destroyed"), "{removed}");
    support::wait_until(std::time::Duration::from_secs(60), "data wiped", || async {
        (!data.exists()).then_some(())
    })
    .await;
}

/// `--wait` follows the app as `kubectl rollout status` follows a
/// Deployment: it returns once the change is done, and fails with what is
/// in flight when time runs out.
#[tokio::test]
async fn wait_follows_the_app_until_done_and_fails_when_stuck() {
    let cluster = TestCluster::shared();
    Operator::shared().await; // the operator runs
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "pwait").await;
    let plugin = Plugin {
        kubeconfig: cluster.kubeconfig.display().to_string(),
        namespace: ns.clone(),
    };
    let apps: kube::Api<statefulapp_operator::api::StatefulApp> =
        kube::Api::namespaced(client.clone(), &ns);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postgres.json");
    std::fs::write(&file, POSTGRES_MARATHON).unwrap();

    let (ok, _, stderr) = plugin.run(&["app", "add", file.to_str().unwrap(), "--wait"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("app /postgres is ready: 1 of 1"),
        "{stderr}"
    );
    let status = apps.get("postgres").await.unwrap().status.unwrap();
    assert_eq!(
        (status.running, status.ready),
        (1, 1),
        "done when it returns"
    );

    let (ok, _, stderr) = plugin.run(&["app", "update", "postgres", "instances=3", "--wait"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("waiting for app /postgres"),
        "progress shown: {stderr}"
    );
    let status = apps.get("postgres").await.unwrap().status.unwrap();
    assert_eq!((status.running, status.ready), (3, 3));

    let (ok, _, stderr) = plugin.run(&["app", "stop", "postgres", "--wait", "--timeout", "2m"]);
    assert!(ok, "{stderr}");
    let status = apps.get("postgres").await.unwrap().status.unwrap();
    assert_eq!(status.stopped, 3);
    assert!(
        status.instances.iter().all(|i| i.reservation.is_some()),
        "stopped means its resources are held: {status:?}"
    );

    // An app whose pods fit no node: --wait says what it waits for, and fails.
    let mut stuck = support::fixtures::postgres(1);
    stuck["metadata"]["name"] = serde_json::json!("stuck");
    stuck["spec"]["template"]["spec"]["nodeSelector"] = serde_json::json!({ "no-such": "node" });
    let stuck_file = dir.path().join("stuck.json");
    std::fs::write(&stuck_file, stuck.to_string()).unwrap();
    let started = std::time::Instant::now();
    let (ok, _, stderr) = plugin.run(&[
        "app",
        "add",
        stuck_file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "5s",
    ]);
    assert!(!ok, "a stuck app fails the wait");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        stderr.contains("timed out after 5s") && stderr.contains("waiting for a node"),
        "{stderr}"
    );

    // Once the scheduler has found no node for it for the operator's
    // patience, the app is Stalled: --wait fails at once, with the
    // instance and the scheduler's reason, long before its timeout.
    let started = std::time::Instant::now();
    let (ok, _, stderr) = plugin.run(&[
        "app",
        "update",
        "stuck",
        "instances=1",
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert!(!ok, "a stalled app fails the wait: {stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(90),
        "not a timeout"
    );
    assert!(
        stderr.contains("is stalled: Unschedulable")
            && stderr.contains("stuck.")
            && stderr.contains("node affinity/selector"),
        "{stderr}"
    );
}

/// `-o jsonpath=` and `-o custom-columns=` print what kubectl prints for
/// the same template on the same apps (`app list` lists the StatefulApp
/// objects, as `kubectl get sapp` does).
#[tokio::test]
async fn jsonpath_and_custom_columns_print_what_kubectl_prints() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "pjsonpath").await;
    let plugin = Plugin {
        kubeconfig: cluster.kubeconfig.display().to_string(),
        namespace: ns.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postgres.json");
    std::fs::write(&file, POSTGRES_MARATHON).unwrap();
    plugin.ok(&["app", "add", file.to_str().unwrap()]);
    plugin.ok(&["app", "update", "postgres", "instances=2"]);
    wait_for_status(&client, &ns, "postgres", operator, "two running", |s| {
        s.running == 2 && s.ready == 2
    })
    .await;
    let kubectl = |args: &[&str]| -> String {
        let output = cluster
            .kubectl()
            .args(["get", "statefulapps", "-n", &ns])
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    for template in [
        "{.items[*].metadata.name}",
        r#"{range .items[*]}{.metadata.name}{"\t"}{.spec.instances}{"\n"}{end}"#,
        "{.items[0].status.instances[*].id}",
        "{.items[0].status.instances[-1:].node}",
        r#"{.items[?(@.metadata.name=="postgres")].spec.volumes[0].size}"#,
        "{..persistenceId}",
        "{.items[0].status.conditions[?(@.type==\"Ready\")].status}",
        "{.items[0].metadata.labels.no-such-label}",
    ] {
        let option = format!("jsonpath={template}");
        assert_eq!(
            plugin.ok(&["app", "list", "-o", &option]),
            kubectl(&["-o", &option]),
            "{template}"
        );
    }

    assert_eq!(
        plugin.ok(&["app", "list", "-o", "jsonpath={.items[*].metadata.name}"]),
        "postgres",
        "as kubectl: no newline of its own"
    );

    // Columns: kubectl pads with three spaces, the plugin with two.
    let words = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let columns = "custom-columns=NAME:.metadata.name,INSTANCES:.spec.instances,NODES:.status.instances[*].node,NONE:.metadata.labels.none";
    let ours = plugin.ok(&["app", "list", "-o", columns]);
    assert_eq!(words(&ours), words(&kubectl(&["-o", columns])), "{ours}");
    assert!(ours.starts_with("NAME"), "{ours}");

    // Instance documents: one row each.
    let ids = plugin.ok(&["task", "list", "-o", "jsonpath={.items[*].id}"]);
    assert_eq!(ids.split(' ').count(), 2, "{ids}");
    let rows = plugin.ok(&["task", "list", "-o", "custom-columns=ID:.id,HOST:.host"]);
    assert_eq!(rows.lines().count(), 3, "{rows}");
    for id in ids.split(' ') {
        assert!(rows.contains(id), "{rows}");
    }

    let (ok, _, stderr) = plugin.run(&["app", "list", "-o", "jsonpath={.items["]);
    assert!(!ok);
    assert!(stderr.contains("invalid jsonpath template"), "{stderr}");
}

//! The DC/OS tutorial's app shape (`PGDATA=pgdata`, a relative
//! `containerPath`), imported with `kubectl statefulapp import` and run on
//! real nodes: what the container writes at its relative path lands in its
//! volume on the node's disk, and stays there through stop and start.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use statefulapp_operator::api::{InstanceState, StatefulAppStatus};
use support::TestCluster;
use support::chart::ChartRelease;
use support::fixtures::{in_state, set_instances, wait_for_status_within};
use support::wait::wait_until;
use tokio::sync::OnceCell;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-statefulapp");
const APP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/marathon/journal-tutorial.json"
);
const TRICK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/marathon/journal-hostpath.json"
);
const WAIT: Duration = Duration::from_secs(120);

async fn release() -> &'static ChartRelease {
    static RELEASE: OnceCell<ChartRelease> = OnceCell::const_new();
    RELEASE
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| ChartRelease::install(TestCluster::shared_real(), &[]))
                .await
                .expect("install the chart")
        })
        .await
}

#[tokio::test]
async fn the_tutorial_app_keeps_what_it_writes_at_its_relative_path() {
    let started = Instant::now();
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "import").await;
    let marathon = std::fs::read_to_string(APP).unwrap();
    let image = &cluster.images.as_ref().unwrap().testapp.reference;
    assert!(
        marathon.contains(image.as_str()),
        "the app runs the nodes' test image {image}"
    );

    // import, then apply what it printed.
    let output = Command::new(PLUGIN)
        .args(["import", "--offline", "-n", &ns, APP])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = cluster.dir.join(format!("{ns}-journal.yaml"));
    std::fs::write(&yaml, &output.stdout).unwrap();
    let applied = cluster
        .kubectl()
        .args(["apply", "-f"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let settle = |what: &'static str, accept: fn(&StatefulAppStatus) -> bool| {
        let (client, ns) = (client.clone(), ns.clone());
        async move { wait_for_status_within(WAIT, &client, &ns, "journal", release, what, accept).await }
    };
    // Ready means its COMMAND health check (`test -s pgdata/journal`, run
    // in the working directory) passed.
    let status = settle("running and ready", |s| s.running == 1 && s.ready == 1).await;
    let instance = in_state(&status, InstanceState::Running)[0].clone();
    let data = cluster.data_dir_on_node(&ns, &instance);
    let journal = data.join("journal");
    let lines = |n: usize| {
        let journal = journal.clone();
        async move {
            wait_until(
                WAIT,
                &format!("{n} line(s) in {}", journal.display()),
                || async {
                    let text = std::fs::read_to_string(&journal).ok()?;
                    (text.lines().count() == n).then_some(text)
                },
            )
            .await
        }
    };
    lines(1).await;
    assert_eq!(
        std::fs::read_to_string(data.join("pgdata-was")).unwrap(),
        "/mnt/mesos/sandbox/pgdata\n",
        "PGDATA named the volume"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("task-id")).unwrap(),
        format!("{}\n", instance.id),
        "MESOS_TASK_ID is the instance id"
    );
    let pod = format!("journal-{}", instance.id.split_once('.').unwrap().1);
    let inside = cluster
        .kubectl()
        .args([
            "exec",
            "-n",
            &ns,
            &pod,
            "--",
            "sh",
            "-c",
            "pwd; cat pgdata/journal",
        ])
        .output()
        .unwrap();
    let inside = String::from_utf8_lossy(&inside.stdout).into_owned();
    assert_eq!(
        inside,
        format!(
            "/mnt/mesos/sandbox\n{}",
            std::fs::read_to_string(&journal).unwrap()
        ),
        "the container's relative path is the file on the node's disk"
    );

    // app stop, app start: the same instance on the same node finds its file.
    set_instances(&client, &ns, "journal", 0).await;
    settle("stopped", |s| s.running == 0 && s.stopped == 1).await;
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        1
    );
    set_instances(&client, &ns, "journal", 1).await;
    let status = settle("started again", |s| s.running == 1 && s.ready == 1).await;
    let again = in_state(&status, InstanceState::Running)[0];
    assert_eq!((&again.id, &again.node), (&instance.id, &instance.node));
    lines(2).await;
    eprintln!(
        "marathon real node: imported, ran, stopped and started with its data in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The hostPath trick (a host volume naming the persistent volume's relative
/// path): Mesos showed the volume at both paths, and so does the pod.
#[tokio::test]
async fn the_host_path_trick_shows_one_volume_at_both_paths() {
    let cluster = TestCluster::shared_real();
    let release = release().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "trick").await;
    let output = Command::new(PLUGIN)
        .args(["import", "--offline", "-n", &ns, TRICK])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = cluster.dir.join(format!("{ns}-trick.yaml"));
    std::fs::write(&yaml, &output.stdout).unwrap();
    let applied = cluster
        .kubectl()
        .args(["apply", "-f"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // Written at the absolute path, read (by the health check too) at the
    // sandbox path.
    let status =
        wait_for_status_within(WAIT, &client, &ns, "journal-trick", release, "ready", |s| {
            s.running == 1 && s.ready == 1
        })
        .await;
    let instance = in_state(&status, InstanceState::Running)[0].clone();
    let on_disk = cluster.data_dir_on_node(&ns, &instance).join("journal");
    let written = wait_until(WAIT, "the journal on the node's disk", || async {
        std::fs::read_to_string(&on_disk)
            .ok()
            .filter(|t| t.lines().count() == 1)
    })
    .await;
    let pod = format!("journal-trick-{}", instance.id.split_once('.').unwrap().1);
    let inside = cluster
        .kubectl()
        .args(["exec", "-n", &ns, &pod, "--", "sh", "-c"])
        .arg("cat /var/lib/journal/journal pgdata/journal /mnt/mesos/sandbox/pgdata/journal")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&inside.stdout), written.repeat(3));
}

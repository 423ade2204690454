//! Children of the test support die with the test binary, even on a panic.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::process::Process;

const PIDFILE_ENV: &str = "STATEFULAPP_TEARDOWN_PIDFILE";

/// Run only by `children_die_when_the_test_binary_panics`, in a child copy
/// of this binary: starts a long sleep, forgets it (no Drop kill), panics.
#[test]
#[ignore = "helper run in a subprocess"]
fn helper_spawns_a_child_then_panics() {
    let pidfile = std::env::var(PIDFILE_ENV).expect("pidfile env");
    let dir = Path::new(&pidfile).parent().unwrap();
    let child = Process::start("sleep", Path::new("/bin/sleep"), &["600".into()], dir);
    std::fs::write(&pidfile, child.pid().to_string()).unwrap();
    std::mem::forget(child);
    panic!("deliberate panic with a live child");
}

fn is_alive(pid: u32) -> bool {
    // A zombie has exited; only a running or sleeping process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn children_die_when_the_test_binary_panics() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_spawns_a_child_then_panics",
            "--ignored",
            "--nocapture",
        ])
        .env(PIDFILE_ENV, &pidfile)
        .output()
        .unwrap();
    assert!(!status.status.success(), "the helper must fail");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "child {pid} outlived the test binary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const REAL_NODE_ENV: &str = "STATEFULAPP_TEARDOWN_REAL_NODES";

/// Run only by `real_nodes_leave_nothing_behind_when_the_test_binary_is_killed`,
/// in a child copy of this binary: a plane with real nodes and a running
/// container, then SIGKILL of itself (no unwinding, no destructor runs).
#[tokio::test]
#[ignore = "helper run in a subprocess"]
async fn helper_runs_a_container_on_a_real_node_then_is_killed() {
    let ready_file = std::env::var(REAL_NODE_ENV).expect("ready file env");
    let cluster = support::TestCluster::shared_real();
    let client = cluster.client().await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), "default");
    let image = &cluster.images.as_ref().unwrap().testapp.reference;
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "doomed" },
        "spec": { "containers": [{
            "name": "c", "image": image, "imagePullPolicy": "Never",
            "command": ["sleep", "3600"],
        }]},
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    support::wait_until(Duration::from_secs(60), "container running", || async {
        let pod = pods.get("doomed").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    std::fs::write(&ready_file, cluster.dir.display().to_string()).unwrap();
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// Every process (kubelet, containerd, shims, containers), cgroup, mount and
/// network device of the real nodes goes when the test binary dies, even by
/// SIGKILL: the janitor tears down what no parent-death signal reaches.
#[test]
fn real_nodes_leave_nothing_behind_when_the_test_binary_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_runs_a_container_on_a_real_node_then_is_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(REAL_NODE_ENV, &ready)
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let plane_dir = std::fs::read_to_string(&ready).expect("the helper got a container running");
    let tag = format!("statefulapp-{pid}");
    let bridge = format!("sapp{pid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if cgroups.contains(&format!("/{tag}/")) {
                left.push(format!("process {:?}", entry.file_name()));
            }
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            if hierarchy.path().join(&tag).exists() {
                left.push(format!("cgroup {}", hierarchy.path().join(&tag).display()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        left.extend(
            mounts
                .lines()
                .filter(|l| l.contains(plane_dir.trim()))
                .map(|l| format!("mount {l}")),
        );
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        left.extend(
            String::from_utf8_lossy(&links.stdout)
                .lines()
                .filter(|l| l.contains(&bridge))
                .map(|l| format!("link {l}")),
        );
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind by the killed test binary:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

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

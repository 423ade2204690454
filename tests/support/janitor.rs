//! Teardown that survives the test binary.
//!
//! Real nodes leave things a dying process cannot take with it: container
//! shims are daemons (no parent-death signal reaches them), cgroups and the
//! host's bridge outlive every process. The janitor is a small shell process
//! in its own session that waits for the test binary to go (its stdin pipe
//! closes however the binary ends: normal exit, panic, SIGKILL) and then runs
//! the teardown steps registered so far, newest first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Shell functions the registered steps call.
const PRELUDE: &str = r#"#!/bin/sh
# Written by the test binary; run by its janitor once the binary is gone.
# kill_cgroup PATH: SIGKILL every process under PATH in every hierarchy
# (again until none is left: a process may fork meanwhile), then remove it.
kill_cgroup() {
  for _ in $(seq 100); do
    pids=$(find /sys/fs/cgroup/*/"$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [ -z "$pids" ] && break
    kill -9 $pids 2>/dev/null
    sleep 0.1
  done
  for hierarchy in /sys/fs/cgroup/*/; do
    [ -d "$hierarchy$1" ] && find "$hierarchy$1" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  true
}
del_link() { ip link del "$1" 2>/dev/null || true; }
"#;

struct Janitor {
    script: PathBuf,
    steps: Vec<String>,
    /// Held until the process ends: its closing is the janitor's signal.
    _pipe: ChildStdin,
}

fn janitor() -> &'static Mutex<Janitor> {
    static JANITOR: OnceLock<Mutex<Janitor>> = OnceLock::new();
    JANITOR.get_or_init(|| {
        let dir = std::env::temp_dir().join("statefulapp-janitor");
        std::fs::create_dir_all(&dir).expect("janitor dir");
        let script = dir.join(format!("{}.sh", std::process::id()));
        std::fs::write(&script, PRELUDE).expect("write teardown script");
        let log = std::fs::File::create(dir.join(format!("{}.log", std::process::id())))
            .expect("janitor log");
        let mut child = Command::new("sh")
            .arg("-c")
            // Wait for EOF, run the steps, then remove the script itself.
            .arg(r#"cat >/dev/null; sh "$1"; rm -f "$1""#)
            .arg("janitor")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("janitor log"))
            .stderr(log)
            // Its own process group: a Ctrl-C to the tests must not reach it.
            .process_group(0)
            .spawn()
            .expect("start the janitor");
        let pipe = child.stdin.take().expect("janitor stdin");
        // Dropping the handle neither kills nor waits for it.
        drop(child);
        Mutex::new(Janitor {
            script,
            steps: Vec::new(),
            _pipe: pipe,
        })
    })
}

use std::os::unix::process::CommandExt;

/// Registers a teardown step (a line of shell, using `kill_cgroup` or
/// `del_link`), run after the test binary ends, in reverse order of
/// registration.
pub fn on_exit(step: String) {
    let mut janitor = janitor().lock().unwrap();
    janitor.steps.push(step);
    let mut text = PRELUDE.to_string();
    for step in janitor.steps.iter().rev() {
        text.push_str(step);
        text.push('\n');
    }
    let tmp = janitor.script.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).expect("write teardown script");
    file.write_all(text.as_bytes())
        .expect("write teardown script");
    std::fs::rename(&tmp, &janitor.script).expect("replace teardown script");
}

/// The process id a name or path was made unique with, if that process is
/// gone: what an earlier, killed janitor left can be swept.
pub fn owner_is_gone(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        })
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

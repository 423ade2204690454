//! Child processes that can never outlive the test binary.
//!
//! Every child is spawned from one long-lived thread with `PR_SET_PDEATHSIG`
//! (the signal fires when the *spawning thread* ends, so per-test threads would
//! kill shared processes too early). When the test binary exits or panics,
//! the kernel sends SIGKILL to every child, so no stray processes remain.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testcluster-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so this loop never ends.
            })
            .expect("spawn the process spawner thread");
        tx
    })
}

/// A running child whose output goes to a log file. Killed on drop.
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    /// How it was started, so that it can be started again.
    pub program: PathBuf,
    pub args: Vec<String>,
    child: Child,
}

impl Process {
    pub fn start(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Process {
        Process::start_with_env(name, program, args, &[], log_dir)
    }

    pub fn start_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        log_dir: &Path,
    ) -> Process {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())));
        Process::start_command(name, cmd, log_dir)
    }

    /// Starts a prepared command (program, arguments, environment), its
    /// output to `<log_dir>/<name>.log`.
    pub fn start_command(name: &str, mut cmd: Command, log_dir: &Path) -> Process {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let program = PathBuf::from(cmd.get_program());
        let args = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner().send((cmd, tx)).expect("spawner thread is alive");
        let child = rx
            .recv()
            .expect("spawner replies")
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Process {
            name: name.to_string(),
            log,
            program,
            args,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and with which status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the process log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last {} lines of {} ---\n{}",
            all.len() - start,
            self.log.display(),
            all[start..].join("\n")
        )
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` distinct free TCP ports on loopback. All are held until every one is
/// picked, so they differ; they are released before the caller binds them.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

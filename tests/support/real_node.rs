//! A real Kubernetes node on this machine: its own containerd and kubelet
//! (built from the same `k8s.io/kubernetes` module as the plane), in a
//! network namespace of its own on the test bridge and a mount namespace of
//! its own, where the host's node paths are the node's own directories:
//!
//! | inside the node        | on the host            |
//! |------------------------|------------------------|
//! | `/var/lib/statefulapp` | `<dir>/disk` (its data disk, the agent's base dir) |
//! | `/var/lib/kubelet`     | `<dir>/kubelet`        |
//! | `/var/lib/containerd`, `/run/containerd` | `<dir>/containerd`, `<dir>/run` |
//! | `/etc/cni/net.d`, `/var/lib/cni`, `/run/netns` | `<dir>/cni-conf`, `<dir>/cni-state`, `<dir>/netns` |
//! | `/var/log/pods`, `/var/log/containers` | `<dir>/log/...` |
//!
//! Every process of the node (containerd, its shims, the containers, the
//! kubelet, the namespace holder) lives under the cgroup
//! `/statefulapp-<pid>/<node>`: a reboot or the janitor kills them all.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::Client;

use super::cluster::node_is_ready;
use super::janitor;
use super::network::{TestNetwork, run};
use super::process::Process;
use super::wait::wait_until;

/// Node paths bind-mounted from the node's own directory (see the table).
const NODE_PATHS: &[(&str, &str)] = &[
    ("/var/lib/statefulapp", "disk"),
    ("/var/lib/kubelet", "kubelet"),
    ("/var/lib/containerd", "containerd"),
    ("/run/containerd", "run"),
    ("/run/netns", "netns"),
    ("/etc/cni/net.d", "cni-conf"),
    ("/var/lib/cni", "cni-state"),
    ("/var/log/pods", "log/pods"),
    ("/var/log/containers", "log/containers"),
];

/// Where the agent's base dir is when the data disk did not mount: an
/// empty directory of the node's root filesystem.
const DATA_DISK: &str = "/var/lib/statefulapp";
const NO_DISK: &str = "unmounted";

/// The paths a reboot empties (tmpfs on a real machine).
const VOLATILE: &[&str] = &["run", "netns"];

/// What a node needs to know about the plane it joins.
#[derive(Clone)]
pub struct JoinSpec {
    /// The API server on the test bridge.
    pub api_server: SocketAddr,
    /// Its CA (PEM), for the node's kubeconfig.
    pub ca_cert: PathBuf,
    pub bin_dir: PathBuf,
    pub logs: PathBuf,
    /// Image archives imported into the node's containerd on first boot.
    pub images: Vec<PathBuf>,
}

pub struct RealNode {
    pub name: String,
    pub index: usize,
    pub address: Ipv4Addr,
    /// The node's own directory on the host.
    pub dir: PathBuf,
    cgroup: String,
    join: JoinSpec,
    processes: Mutex<NodeProcesses>,
    /// Whether the next boot mounts the data disk.
    mount_disk_at_boot: AtomicBool,
}

#[derive(Default)]
struct NodeProcesses {
    holder: Option<Process>,
    containerd: Option<Process>,
    kubelet: Option<Process>,
}

impl RealNode {
    /// Creates node `index` (directories, client certificate, cgroups) and
    /// boots it; returns once the node is Ready.
    pub async fn start(
        client: &Client,
        network: &TestNetwork,
        name: &str,
        index: usize,
        dir: PathBuf,
        credentials: (String, String),
        join: JoinSpec,
    ) -> RealNode {
        let cgroup = format!("{}/{name}", cgroup_root());
        let node = RealNode {
            name: name.to_string(),
            index,
            address: network.node_address(index),
            dir,
            cgroup,
            join,
            processes: Mutex::new(NodeProcesses::default()),
            mount_disk_at_boot: AtomicBool::new(true),
        };
        node.write_files(credentials);
        node.boot(network, true);
        node.wait_ready(client).await;
        node
    }

    /// Where the node's data disk (the agent's base dir) is on the host.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk")
    }

    /// SIGKILLs the kubelet (containers keep running, as on a real node).
    pub fn stop_kubelet(&self) {
        if let Some(mut kubelet) = self.processes.lock().unwrap().kubelet.take() {
            kubelet.kill();
        }
    }

    pub fn start_kubelet(&self) {
        let process = self.spawn_in_node(
            "kubelet",
            &self.join.bin_dir.join("kubelet"),
            &[
                format!("--config={}", self.dir.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", self.dir.join("kubeconfig").display()),
                format!("--cert-dir={}", self.dir.join("pki").display()),
                format!("--hostname-override={}", self.name),
                format!("--node-ip={}", self.address),
            ],
        );
        self.processes.lock().unwrap().kubelet = Some(process);
    }

    /// A power cut and boot: every process of the node dies (kubelet,
    /// containerd, shims, containers), its namespaces and what was mounted
    /// in them go, `/run` is emptied; then the node boots again with the same
    /// disks and address. Returns once the node is Ready again.
    pub async fn reboot(&self, client: &Client, network: &TestNetwork) {
        {
            let mut processes = self.processes.lock().unwrap();
            kill_cgroup(&self.cgroup);
            *processes = NodeProcesses::default();
        }
        for dir in VOLATILE {
            let path = self.dir.join(dir);
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("recreate volatile dir");
        }
        self.boot(network, false);
        self.wait_ready(client).await;
    }

    /// [`Self::reboot`], but the data disk does not mount: the base dir is
    /// an empty directory until [`Self::mount_data_disk`].
    pub async fn reboot_without_data_disk(&self, client: &Client, network: &TestNetwork) {
        self.mount_disk_at_boot.store(false, Ordering::SeqCst);
        self.reboot(client, network).await;
        self.mount_disk_at_boot.store(true, Ordering::SeqCst);
    }

    /// Mounts the data disk at the base dir of the running node (late, as
    /// an administrator would after a failed boot mount).
    pub fn mount_data_disk(&self) {
        let disk = self.disk();
        self.shell(&format!("mount --bind {} {DATA_DISK}", disk.display()));
    }

    /// `ctr` against this node's containerd.
    pub fn ctr(&self, args: &[&str]) -> String {
        let socket = self.dir.join("run/containerd.sock");
        let mut all = vec!["--address", socket.to_str().unwrap(), "-n", "k8s.io"];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    /// Runs `sh -c script` in the node's network and mount namespaces.
    pub fn shell(&self, script: &str) -> String {
        let pid = self.holder_pid().to_string();
        run("nsenter", &["-t", &pid, "-n", "-m", "sh", "-c", script])
    }

    fn holder_pid(&self) -> u32 {
        self.processes
            .lock()
            .unwrap()
            .holder
            .as_ref()
            .expect("node is up")
            .pid()
    }

    fn boot(&self, network: &TestNetwork, first: bool) {
        let started = Instant::now();
        create_cgroup(&format!("{}/holder", self.cgroup));
        create_cgroup(&format!("{}/system", self.cgroup));
        // A process whose only job is to hold the node's namespaces.
        let holder = Process::start_command(
            &format!("{}-holder", self.name),
            self.in_cgroup(
                "holder",
                &[
                    "unshare",
                    "--net",
                    "--mount",
                    "--propagation",
                    "slave",
                    "sleep",
                    "infinity",
                ],
            ),
            &self.join.logs,
        );
        let pid = holder.pid();
        self.processes.lock().unwrap().holder = Some(holder);
        wait_for_new_namespaces(pid);
        network.attach(pid, self.index);
        self.shell(&self.setup_script());

        let containerd = self.spawn_in_node(
            "containerd",
            Path::new("containerd"),
            &[format!(
                "--config={}",
                self.dir.join("containerd.toml").display()
            )],
        );
        self.processes.lock().unwrap().containerd = Some(containerd);
        let socket = self.dir.join("run/containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "containerd of {} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if first {
            for image in &self.join.images {
                self.ctr(&["images", "import", image.to_str().unwrap()]);
            }
        }
        self.start_kubelet();
        eprintln!(
            "testcluster: node {} booted in {:.2}s",
            self.name,
            started.elapsed().as_secs_f64()
        );
    }

    async fn wait_ready(&self, client: &Client) {
        wait_until(Duration::from_secs(90), "real node Ready", || async {
            node_is_ready(client, &self.name).await.then_some(())
        })
        .await;
    }

    /// Network and mounts of the node, run inside its namespaces.
    fn setup_script(&self) -> String {
        let api = self.join.api_server;
        let mut script = format!(
            "set -e
sysctl -qw net.ipv4.ip_forward=1
# The kubernetes Service (no kube-proxy here) is the API server on the bridge.
iptables -t nat -A PREROUTING -d 10.0.0.1/32 -p tcp --dport 443 -j DNAT --to-destination {api}
iptables -t nat -A OUTPUT -d 10.0.0.1/32 -p tcp --dport 443 -j DNAT --to-destination {api}
# Pods reach the bridge as the node (the host has no route to pod addresses).
iptables -t nat -A POSTROUTING -s {pods} -d {bridge}/24 -j MASQUERADE
mount --make-rshared /
",
            pods = self.pod_cidr(),
            bridge = api.ip(),
        );
        let disk = self.mount_disk_at_boot.load(Ordering::SeqCst);
        for (inside, own) in NODE_PATHS {
            let own = if *inside == DATA_DISK && !disk {
                NO_DISK
            } else {
                own
            };
            script.push_str(&format!(
                "mount --bind {} {inside}\n",
                self.dir.join(own).display()
            ));
        }
        script
    }

    fn pod_cidr(&self) -> String {
        format!("198.19.{}.0/24", self.index)
    }

    /// Config files, directories and the kubelet's credentials.
    fn write_files(&self, (cert, key): (String, String)) {
        for (inside, own) in NODE_PATHS {
            std::fs::create_dir_all(inside).expect("mount point on the host");
            std::fs::create_dir_all(self.dir.join(own)).expect("node dir");
        }
        std::fs::create_dir_all(self.dir.join("pki")).expect("pki dir");
        std::fs::create_dir_all(self.dir.join(NO_DISK)).expect("empty base dir");
        let write = |name: &str, text: String| {
            std::fs::write(self.dir.join(name), text).expect("write node file");
        };
        write("node.crt", cert);
        write("node.key", key);
        write(
            "kubeconfig",
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: testcluster
  cluster: {{server: 'https://{api}', certificate-authority: {ca}}}
users:
- name: node
  user: {{client-certificate: {dir}/node.crt, client-key: {dir}/node.key}}
contexts:
- name: node
  context: {{cluster: testcluster, user: node}}
current-context: node
",
                api = self.join.api_server,
                ca = self.join.ca_cert.display(),
                dir = self.dir.display(),
            ),
        );
        write(
            "cni-conf/10-bridge.conflist",
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": "statefulapp-test",
                "plugins": [{
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.pod_cidr() }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                    },
                }],
            })
            .to_string(),
        );
        write("containerd.toml", self.containerd_config());
        write("kubelet.yaml", self.kubelet_config());
    }

    fn containerd_config(&self) -> String {
        format!(
            r#"# containerd 1.6 for one test node; paths are the node's own (see NODE_PATHS).
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{opt}"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10"
    disable_apparmor = true
    # root here lacks CAP_SYS_RESOURCE: runc may only raise oom_score_adj
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
"#,
            opt = self.dir.join("opt").display()
        )
    }

    fn kubelet_config(&self) -> String {
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 hierarchies and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# Test plane only: the API server is the kubelet's only client.
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
address: 0.0.0.0
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
serializeImagePulls: false
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1%}}
# No cluster DNS and no host resolver: nothing resolves names off this machine.
resolvConf: ''
localStorageCapacityIsolation: true
",
            cgroup = self.cgroup
        )
    }

    /// A command that joins `<node cgroup>/<group>` in every hierarchy and
    /// then execs `argv`.
    fn in_cgroup(&self, group: &str, argv: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                r#"for f in /sys/fs/cgroup/*/{}/{group}/cgroup.procs; do echo $$ > "$f"; done; exec "$@""#,
                self.cgroup
            ))
            .arg("sh")
            .args(argv);
        cmd
    }

    /// Starts `program` inside the node's namespaces, in its `system` cgroup.
    fn spawn_in_node(&self, what: &str, program: &Path, args: &[String]) -> Process {
        let pid = self.holder_pid().to_string();
        let program = program.display().to_string();
        let mut argv = vec!["nsenter", "-t", &pid, "-n", "-m", "--", &program];
        argv.extend(args.iter().map(String::as_str));
        Process::start_command(
            &format!("{}-{what}", self.name),
            self.in_cgroup("system", &argv),
            &self.join.logs,
        )
    }
}

/// The cgroup all real nodes of this test binary live under; the janitor
/// removes it. Those of test binaries that are gone are removed first.
fn cgroup_root() -> &'static str {
    static ROOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        const PREFIX: &str = "statefulapp-";
        for hierarchy in hierarchies() {
            for entry in std::fs::read_dir(&hierarchy)
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if janitor::owner_is_gone(&name, PREFIX) {
                    kill_cgroup(&name);
                }
            }
        }
        let root = format!("{PREFIX}{}", std::process::id());
        janitor::on_exit(format!("kill_cgroup {root}"));
        root
    })
}

/// Waits until `pid` runs in namespaces of its own (unshare has run).
fn wait_for_new_namespaces(pid: u32) {
    let own = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"));
        let mounts = std::fs::read_link(format!("/proc/{pid}/ns/mnt"));
        let own_mnt = std::fs::read_link("/proc/self/ns/mnt").expect("own mntns");
        if matches!((&theirs, &mounts), (Ok(n), Ok(m)) if *n != own && *m != own_mnt) {
            return;
        }
        assert!(Instant::now() < deadline, "node namespaces not created");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup hierarchies")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Creates `path` in every hierarchy; a v1 cpuset takes its parent's CPUs
/// and memory nodes (an empty cpuset admits no process).
fn create_cgroup(path: &str) {
    for hierarchy in hierarchies() {
        let mut current = hierarchy.clone();
        for part in path.split('/') {
            let parent = current.clone();
            current.push(part);
            let _ = std::fs::create_dir(&current);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let mine = current.join(file);
                let empty = std::fs::read_to_string(&mine)
                    .map(|v| v.trim().is_empty())
                    .unwrap_or(false);
                if empty {
                    let value = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    let _ = std::fs::write(&mine, value.trim());
                }
            }
        }
    }
}

/// SIGKILLs every process under `path` (until none is left) and removes it.
pub fn kill_cgroup(path: &str) {
    for _ in 0..100 {
        let mut pids = Vec::new();
        for hierarchy in hierarchies() {
            collect_pids(&hierarchy.join(path), &mut pids);
        }
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill has no memory effects; a gone pid is ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for hierarchy in hierarchies() {
        remove_tree(&hierarchy.join(path));
    }
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                collect_pids(&entry.path(), pids);
            }
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

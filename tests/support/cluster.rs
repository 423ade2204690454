//! A real Kubernetes control plane on loopback, shared by all tests of one
//! test binary: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
//! kwok (simulated nodes) and, for the binaries that ask for them, real nodes
//! (kubelet + containerd, see `real_node`). Each test works in its own
//! namespace.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use statefulapp_operator::api::InstanceStatus;

use super::certs;
use super::images::{self, Images};
use super::network::TestNetwork;
use super::process::{Process, free_ports};
use super::real_node::{JoinSpec, RealNode};
use super::wait::wait_until;

/// Annotation kwok uses to pick the nodes it simulates.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// Controller-manager's grace before an unheard node turns NotReady.
pub const NODE_MONITOR_GRACE: Duration = Duration::from_secs(20);

/// Number of simulated nodes the shared plane starts with, unless
/// `STATEFULAPP_TESTCLUSTER_NODES` says otherwise (benchmarks use 50).
const DEFAULT_NODES: usize = 3;

/// Number of real nodes of a plane that has them, unless
/// `STATEFULAPP_REAL_NODES` says otherwise.
const DEFAULT_REAL_NODES: usize = 2;

/// What a plane is made of.
#[derive(Clone, Copy)]
pub struct Layout {
    pub kwok_nodes: usize,
    pub real_nodes: usize,
}

/// With `STATEFULAPP_TESTCLUSTER_AUDIT=1` the API server writes an audit log
/// (JSON lines, metadata level) to `<dir>/audit.log`, used to count requests.
const AUDIT_ENV: &str = "STATEFULAPP_TESTCLUSTER_AUDIT";

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

pub struct TestCluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    /// The simulated (kwok) nodes.
    pub nodes: Vec<String>,
    /// The real nodes (kubelet + containerd), if the plane has any.
    pub real_nodes: Vec<RealNode>,
    /// Their network, with the API server on its bridge.
    pub network: Option<TestNetwork>,
    /// Images every real node has (built here, imported, never pulled).
    pub images: Option<Images>,
    /// Wall time from the first process start to all nodes Ready.
    pub startup: Duration,
    processes: Mutex<Vec<Process>>,
}

/// kwok plays 4 pod stages at a time by default: at hundreds of pods
/// started at once, marking them Running took longer than the controllers
/// under test took to create and place them, so kwok, not the controllers,
/// set the pace of a benchmark round. Simulated kubelets should not be the
/// bottleneck.
const KWOK_CONFIG: &str = "\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  podPlayStageParallelism: 32
";

impl TestCluster {
    /// The control plane of this test binary, started on first use.
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();
        Self::shared_with(
            &SHARED,
            Layout {
                kwok_nodes: node_count(),
                real_nodes: 0,
            },
        )
    }

    /// The control plane of this test binary with real nodes (and no kwok
    /// node, so that every pod runs for real), started on first use.
    pub fn shared_real() -> &'static TestCluster {
        static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();
        Self::shared_with(
            &SHARED,
            Layout {
                kwok_nodes: 0,
                real_nodes: real_node_count(),
            },
        )
    }

    fn shared_with(
        slot: &'static OnceLock<Result<TestCluster, String>>,
        layout: Layout,
    ) -> &'static TestCluster {
        let result = slot.get_or_init(|| {
            // Start-up is async but callers are inside a runtime: use a thread.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(TestCluster::start(layout))
            })
            .join()
            .unwrap_or_else(|_| Err("control plane start-up panicked".to_string()))
        });
        match result {
            Ok(cluster) => cluster,
            Err(message) => panic!("test control plane did not start:\n{message}"),
        }
    }

    async fn start(layout: Layout) -> Result<TestCluster, String> {
        let bin_dir = std::panic::catch_unwind(tools_dir)
            .map_err(|_| "building the control plane failed".to_string())?;
        let dir = test_dir();
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        // Images first: building one is slow the first time, and the plane
        // should not sit idle meanwhile.
        let images = (layout.real_nodes > 0)
            .then(|| std::panic::catch_unwind(images::build))
            .transpose()
            .map_err(|_| "building the images failed".to_string())?;
        // Real nodes reach the API server on their bridge; otherwise it
        // listens on loopback only.
        let network = (layout.real_nodes > 0).then(TestNetwork::create);
        let address = network
            .as_ref()
            .map(|n| std::net::IpAddr::V4(n.host_address()))
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let certs = certs::generate(&dir, &[address]);
        let started = Instant::now();

        let ports = free_ports(4);
        let (etcd_client, etcd_peer, apiserver, kwok) = (ports[0], ports[1], ports[2], ports[3]);
        let kubeconfig = write_kubeconfig(&dir, &certs, address, apiserver);

        let mut cluster = TestCluster {
            dir: dir.clone(),
            kubeconfig,
            bin_dir,
            nodes: Vec::new(),
            real_nodes: Vec::new(),
            network,
            images,
            startup: Duration::ZERO,
            processes: Mutex::new(Vec::new()),
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        cluster.spawn(
            "etcd",
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--quota-backend-bytes=8589934592".into(),
                "--log-level=warn".into(),
            ],
        );
        cluster.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--advertise-address={address}"),
                format!("--bind-address={address}"),
                // Real nodes are reached at the address they registered.
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--secure-port={apiserver}"),
                format!("--tls-cert-file={}", certs.serving_cert.display()),
                format!("--tls-private-key-file={}", certs.serving_key.display()),
                format!("--client-ca-file={}", certs.ca_cert.display()),
                format!(
                    "--service-account-key-file={}",
                    certs.service_account_pub.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    certs.service_account_key.display()
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                // Room for benchmarks that create thousands of objects at once.
                "--max-requests-inflight=2000".into(),
                "--max-mutating-requests-inflight=1000".into(),
            ]
            .into_iter()
            .chain(audit_args(&dir))
            .collect::<Vec<String>>(),
        );
        let client = cluster.client().await;
        cluster
            .wait_for("kube-apiserver", Duration::from_secs(90), || {
                let client = client.clone();
                async move {
                    let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                    client.request_text(req).await.ok().filter(|t| t == "ok")
                }
            })
            .await?;

        let kubeconfig = cluster.kubeconfig.display().to_string();
        cluster.spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={kubeconfig}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--use-service-account-credentials=false".into(),
                format!("--root-ca-file={}", certs.ca_cert.display()),
                format!(
                    "--service-account-private-key-file={}",
                    certs.service_account_key.display()
                ),
                "--node-monitor-period=2s".into(),
                format!(
                    "--node-monitor-grace-period={}s",
                    NODE_MONITOR_GRACE.as_secs()
                ),
                "--kube-api-qps=500".into(),
                "--kube-api-burst=1000".into(),
            ],
        );
        cluster.spawn(
            "kube-scheduler",
            &[
                format!("--kubeconfig={kubeconfig}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--kube-api-qps=500".into(),
                "--kube-api-burst=1000".into(),
            ],
        );
        cluster.spawn(
            "kwok",
            &cluster.kwok_args(
                kwok,
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
            ),
        );

        // The service-account controller creating `default` proves the
        // controller-manager runs; pods cannot be admitted before it anyway.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        cluster
            .wait_for("kube-controller-manager", Duration::from_secs(60), || {
                let accounts = accounts.clone();
                async move { accounts.get_opt("default").await.ok().flatten() }
            })
            .await?;

        for i in 0..layout.kwok_nodes {
            let name = format!("kwok-node-{i}");
            add_node(&client, &name, NodeCapacity::default())
                .await
                .map_err(|e| format!("create node {name}: {e}"))?;
            cluster.nodes.push(name);
        }
        for name in cluster.nodes.clone() {
            cluster
                .wait_for("kwok", Duration::from_secs(60), || {
                    let client = client.clone();
                    let name = name.clone();
                    async move { node_is_ready(&client, &name).await.then_some(()) }
                })
                .await?;
        }
        cluster
            .start_real_nodes(&client, layout.real_nodes, &certs, apiserver)
            .await;
        cluster.startup = started.elapsed();
        eprintln!(
            "testcluster: control plane with {} kwok and {} real nodes ready in {:.1}s ({})",
            layout.kwok_nodes,
            layout.real_nodes,
            cluster.startup.as_secs_f64(),
            dir.display()
        );
        Ok(cluster)
    }

    async fn start_real_nodes(
        &mut self,
        client: &Client,
        count: usize,
        certs: &certs::Certs,
        apiserver_port: u16,
    ) {
        let Some(network) = &self.network else {
            return;
        };
        let join = JoinSpec {
            api_server: std::net::SocketAddr::from((network.host_address(), apiserver_port)),
            ca_cert: certs.ca_cert.clone(),
            bin_dir: self.bin_dir.clone(),
            logs: self.dir.join("logs"),
            images: self
                .images
                .as_ref()
                .map(|i| i.archives())
                .unwrap_or_default(),
        };
        for index in 0..count {
            let name = format!("real-node-{index}");
            let credentials = certs.issue_client(&format!("system:node:{name}"), "system:nodes");
            let dir = self.dir.join("nodes").join(&name);
            let node = RealNode::start(
                client,
                network,
                &name,
                index,
                dir,
                credentials,
                join.clone(),
            )
            .await;
            self.real_nodes.push(node);
        }
    }

    fn kwok_args(&self, port: u16, selection: String) -> Vec<String> {
        let config = self.dir.join("kwok.yaml");
        if !config.exists() {
            std::fs::write(&config, KWOK_CONFIG).expect("write kwok config");
        }
        vec![
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--manage-all-nodes=false".into(),
            selection,
            "--cidr=10.244.0.0/16".into(),
            "--node-ip=10.0.0.2".into(),
            "--node-lease-duration-seconds=8".into(),
            format!("--server-address=127.0.0.1:{port}"),
        ]
    }

    /// Registers a node simulated by a kwok process of its own, returned to
    /// the caller: killing it is a node loss (heartbeats stop, and after
    /// [`NODE_MONITOR_GRACE`] the node lifecycle controller marks it
    /// NotReady); dropping it does the same.
    pub async fn add_detachable_node(&self, client: &Client, name: &str) -> Process {
        let mut node = node_object(name, NodeCapacity::default());
        node.metadata.annotations = None;
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create detachable node");
        let args = self.kwok_args(free_ports(1)[0], format!("--manage-single-node={name}"));
        let kubelet = Process::start(
            &format!("kwok-{name}"),
            &self.bin_dir.join("kwok"),
            &args,
            &self.dir.join("logs"),
        );
        // Ready, and the node lifecycle controller has lifted the not-ready
        // taint it put on the new node (until then the scheduler skips it).
        wait_until(
            Duration::from_secs(60),
            "detachable node Ready and untainted",
            || async {
                let node = Api::<Node>::all(client.clone())
                    .get_opt(name)
                    .await
                    .ok()??;
                let tainted = node
                    .spec
                    .and_then(|spec| spec.taints)
                    .unwrap_or_default()
                    .iter()
                    .any(|t| t.key.starts_with("node.kubernetes.io/"));
                (node_is_ready(client, name).await && !tainted).then_some(())
            },
        )
        .await;
        kubelet
    }

    /// SIGKILLs a control-plane process (`etcd`, `kube-apiserver`, ...) and
    /// starts it again with the same flags, data and ports; waits until the
    /// API server answers again.
    pub async fn restart(&self, name: &str, down_for: Duration) {
        let (program, args) = {
            let mut processes = self.processes.lock().unwrap();
            let index = processes
                .iter()
                .position(|p| p.name == name)
                .unwrap_or_else(|| panic!("no process {name}"));
            let mut old = processes.remove(index);
            old.kill();
            (old.program.clone(), old.args.clone())
        };
        tokio::time::sleep(down_for).await;
        let log_dir = self
            .dir
            .join("logs")
            .join(format!("restart-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let process = Process::start(name, &program, &args, &log_dir);
        self.processes.lock().unwrap().push(process);
        let client = self.client().await;
        self.wait_for("kube-apiserver", Duration::from_secs(90), || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                client.request_text(req).await.ok().filter(|t| t == "ok")
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{name} did not come back: {e}"));
    }

    fn spawn(&self, name: &str, args: &[String]) {
        let program = self.bin_dir.join(name);
        let process = Process::start(name, &program, args, &self.dir.join("logs"));
        self.processes.lock().unwrap().push(process);
    }

    /// Waits for `probe` to return `Some`; on timeout, or if any control-plane
    /// process died, fails with the log tail of `component` (and of the dead).
    async fn wait_for<T, F, Fut>(
        &self,
        component: &str,
        timeout: Duration,
        probe: F,
    ) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let mut probe = probe;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe().await {
                return Ok(value);
            }
            self.check_alive(component, deadline, timeout)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails with a log tail if a process died, or if `deadline` passed.
    fn check_alive(
        &self,
        component: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut processes = self.processes.lock().unwrap();
        for process in processes.iter_mut() {
            if let Some(status) = process.exited() {
                return Err(format!(
                    "{} exited with {status} while waiting for {component}\n{}",
                    process.name,
                    process.log_tail(40)
                ));
            }
        }
        if Instant::now() > deadline {
            let tail = processes
                .iter()
                .find(|p| p.name == component)
                .map(|p| p.log_tail(40))
                .unwrap_or_default();
            return Err(format!(
                "{component} not ready after {}s\n{tail}",
                timeout.as_secs()
            ));
        }
        Ok(())
    }

    /// A fresh client for the calling test's runtime (kube clients are bound
    /// to the runtime that created them, and each test has its own).
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig to config");
        Client::try_from(config).expect("kube client")
    }

    /// Creates a namespace `<prefix>-<random>` and waits until pods can be
    /// admitted in it (its `default` ServiceAccount exists).
    pub async fn namespace(&self, client: &Client, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        self.create_namespace(client, &name).await;
        name
    }

    /// Creates namespace `name` and waits until pods can be admitted in it.
    pub async fn create_namespace(&self, client: &Client, name: &str) {
        let name = name.to_string();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_until(Duration::from_secs(30), "default service account", || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.ok().flatten() }
        })
        .await;
    }

    /// A kubeconfig acting as ServiceAccount `namespace/name` (admin
    /// credentials with impersonation), so that a process run with it has
    /// exactly that account's RBAC permissions.
    pub fn kubeconfig_as_service_account(&self, namespace: &str, name: &str) -> PathBuf {
        let mut kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        for named in &mut kubeconfig.auth_infos {
            let auth = named.auth_info.get_or_insert_default();
            auth.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]);
        }
        let path = self.dir.join(format!("kubeconfig-{namespace}-{name}"));
        let yaml = serde_yaml::to_string(&kubeconfig).expect("serialize kubeconfig");
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    /// The real node an instance was placed on.
    pub fn real_node_of(&self, instance: &InstanceStatus) -> &RealNode {
        let name = instance.node.as_deref().expect("placed");
        self.real_nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("{name} is not a real node"))
    }

    /// Where an instance's first volume lives on its real node's disk.
    pub fn data_dir_on_node(&self, ns: &str, instance: &InstanceStatus) -> PathBuf {
        self.real_node_of(instance)
            .disk()
            .join(ns)
            .join(&instance.volumes[0].persistence_id)
    }

    /// `kubectl` against this plane.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }
}

fn real_node_count() -> usize {
    std::env::var("STATEFULAPP_REAL_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_REAL_NODES)
}

fn node_count() -> usize {
    std::env::var("STATEFULAPP_TESTCLUSTER_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_NODES)
}

fn audit_args(dir: &Path) -> Vec<String> {
    if std::env::var(AUDIT_ENV).as_deref() != Ok("1") {
        return Vec::new();
    }
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY).expect("write audit policy");
    vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", dir.join("audit.log").display()),
        "--audit-log-format=json".into(),
        // One file for the whole run: the bench counts each phase's
        // requests by offset (rotation is at 100 MB unless a size is given;
        // 0 is not "never").
        "--audit-log-maxsize=100000".into(),
        "--audit-log-mode=batch".into(),
        "--audit-log-batch-max-wait=1s".into(),
    ]
}

/// Size of a simulated node.
pub struct NodeCapacity {
    pub cpu: &'static str,
    pub memory: &'static str,
    pub pods: &'static str,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        NodeCapacity {
            cpu: "32",
            memory: "256Gi",
            pods: "500",
        }
    }
}

/// Registers a node that the shared kwok simulates (Ready, runs every pod bound to it).
pub async fn add_node(client: &Client, name: &str, capacity: NodeCapacity) -> kube::Result<Node> {
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node_object(name, capacity))
        .await
}

fn node_object(name: &str, capacity: NodeCapacity) -> Node {
    let resources = json!({
        "cpu": capacity.cpu, "memory": capacity.memory, "pods": capacity.pods,
    });
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": { KWOK_NODE_ANNOTATION: "fake" },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "kwok",
            },
        },
        "status": { "allocatable": resources, "capacity": resources },
    }))
    .expect("node json")
}

pub async fn node_is_ready(client: &Client, name: &str) -> bool {
    let Ok(Some(node)) = Api::<Node>::all(client.clone()).get_opt(name).await else {
        return false;
    };
    node.status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Directory of the control-plane binaries, kubectl and helm (built or
/// found on first use), without starting anything.
pub fn tools_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(build_binaries) {
        Ok(dir) => dir.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// Runs `testcluster/build.sh` (a no-op once cached) and returns its bin dir.
fn build_binaries() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("STATEFULAPP_TESTCLUSTER_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testcluster/build.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed: {}", script.display(), output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(dir))
}

/// A directory for this plane under the system temp dir. Directories left by
/// earlier test binaries whose process is gone are removed first.
fn test_dir() -> PathBuf {
    let root = std::env::temp_dir().join("statefulapp-testcluster");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test cluster dir");
    dir
}

fn write_kubeconfig(
    dir: &Path,
    certs: &certs::Certs,
    address: std::net::IpAddr,
    port: u16,
) -> PathBuf {
    let cert = dir.join("admin.crt");
    let key = dir.join("admin.key");
    std::fs::write(&cert, &certs.admin_cert_pem).expect("write admin cert");
    std::fs::write(&key, &certs.admin_key_pem).expect("write admin key");
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testcluster
  cluster:
    server: https://{address}:{port}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: testcluster
  context:
    cluster: testcluster
    user: admin
current-context: testcluster
",
        ca = certs.ca_cert.display(),
        cert = cert.display(),
        key = key.display(),
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");
    path
}

//! The operator under test, as real processes against the test control plane:
//! the controller (with the provisioner) and one node agent per simulated
//! node, each agent with its own base dir standing for that node's disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::TestCluster;
use super::process::{Process, free_ports};
use super::wait::wait_until;

pub const STORAGE_CLASS: &str = "statefulapp-local";
/// The PriorityClass of reservation pods (the operator's default).
pub const RESERVATION_PRIORITY_CLASS: &str = "statefulapp-reservation";
pub const PROVISIONER: &str = "local.statefulapp.io";
/// How long the controller lets the scheduler find no node for an
/// instance before it calls the app Stalled (shorter than its default, so
/// that tests of it do not wait a minute).
pub const UNSCHEDULABLE_AFTER: Duration = Duration::from_secs(20);
const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/statefulapp.io_statefulapps.yaml"
);

/// The operator binary cargo built for this test (or example) run, of the
/// same profile (a release benchmark measures a release operator), unless
/// `STATEFULAPP_OPERATOR_BINARY` names another (e.g. a profiling wrapper).
pub fn operator_binary() -> &'static str {
    static OVERRIDE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let chosen = OVERRIDE.get_or_init(|| std::env::var("STATEFULAPP_OPERATOR_BINARY").ok());
    if let Some(binary) = chosen {
        return binary;
    }
    let profile_binary = if cfg!(debug_assertions) {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/debug/statefulapp-operator"
        )
    } else {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/statefulapp-operator"
        )
    };
    option_env!("CARGO_BIN_EXE_statefulapp-operator").unwrap_or(profile_binary)
}

pub struct Operator {
    pub controller: Mutex<Option<Process>>,
    pub agents: Mutex<BTreeMap<String, Process>>,
    /// Holds one dir per node: that node's agent base dir (its "disk").
    pub disks: PathBuf,
    /// Port of the controller's /metrics, /healthz and /readyz.
    pub metrics_port: u16,
    /// Port of each node agent's /metrics, by node.
    agent_metrics_ports: Mutex<BTreeMap<String, u16>>,
    binary: PathBuf,
    logs: PathBuf,
    identity: Identity,
    /// Flags the controller gets besides the usual ones.
    controller_flags: Mutex<Vec<String>>,
}

/// Who the operator's processes act as.
#[derive(Clone)]
pub struct Identity {
    pub controller_kubeconfig: PathBuf,
    pub agent_kubeconfig: PathBuf,
    /// With a namespace, the controller runs with leader election there.
    pub leader_elect_namespace: Option<String>,
    /// With a namespace, agents publish their node's disk capacity there
    /// and the provisioner checks it (the chart's CSIDriver makes
    /// kube-scheduler read it).
    pub capacity_namespace: Option<String>,
}

impl Operator {
    /// The operator of this test binary, started on first use.
    pub async fn shared() -> &'static Operator {
        static OPERATOR: tokio::sync::OnceCell<Operator> = tokio::sync::OnceCell::const_new();
        OPERATOR
            .get_or_init(|| Operator::start(TestCluster::shared(), operator_binary().as_ref()))
            .await
    }

    /// Installs the CRD and StorageClass, then starts the controller and an
    /// agent per node of `cluster`, all with admin credentials.
    pub async fn start(cluster: &TestCluster, binary: &Path) -> Operator {
        install_crd_and_storage_class(cluster).await;
        let identity = Identity {
            controller_kubeconfig: cluster.kubeconfig.clone(),
            agent_kubeconfig: cluster.kubeconfig.clone(),
            leader_elect_namespace: None,
            capacity_namespace: None,
        };
        Operator::launch(cluster, binary, identity)
    }

    /// Starts the controller and agents as `identity` (say, the Helm chart's
    /// ServiceAccounts), on a cluster where the CRD is installed already.
    pub fn launch(cluster: &TestCluster, binary: &Path, identity: Identity) -> Operator {
        let operator = Operator {
            controller: Mutex::new(None),
            agents: Mutex::new(BTreeMap::new()),
            disks: cluster.dir.join("disks"),
            metrics_port: free_ports(1)[0],
            agent_metrics_ports: Mutex::new(BTreeMap::new()),
            binary: binary.to_path_buf(),
            logs: cluster.dir.join("logs"),
            identity,
            controller_flags: Mutex::new(Vec::new()),
        };
        operator.restart_controller();
        for node in &cluster.nodes {
            operator.restart_agent(node);
        }
        operator
    }

    /// (Re)starts the controller process (SIGKILL of the previous one).
    pub fn restart_controller(&self) {
        let mut args = vec![
            "controller".to_string(),
            format!("--storage-class={STORAGE_CLASS}"),
            format!("--provisioner-name={PROVISIONER}"),
            "--volume-base-dir=/var/lib/statefulapp".to_string(),
            format!("--metrics-address=127.0.0.1:{}", self.metrics_port),
            format!("--unschedulable-after={}s", UNSCHEDULABLE_AFTER.as_secs()),
        ];
        if let Some(ns) = &self.identity.leader_elect_namespace {
            args.push("--leader-elect".into());
            args.push(format!("--leader-elect-namespace={ns}"));
        }
        if let Some(ns) = &self.identity.capacity_namespace {
            args.push(format!("--capacity-namespace={ns}"));
        }
        args.extend(self.controller_flags.lock().unwrap().iter().cloned());
        let mut slot = self.controller.lock().unwrap();
        if let Some(mut previous) = slot.take() {
            previous.kill();
        }
        *slot = Some(Process::start_with_env(
            "operator-controller",
            &self.binary,
            &args,
            &[("KUBECONFIG", &self.identity.controller_kubeconfig)],
            &self.logs,
        ));
    }

    /// Restarts the controller with `flags` added to its usual ones, now
    /// and on every later restart.
    pub fn restart_controller_with(&self, flags: &[&str]) {
        *self.controller_flags.lock().unwrap() = flags.iter().map(|f| f.to_string()).collect();
        self.restart_controller();
    }

    /// Starts an extra controller replica with leader election, serving
    /// metrics on `metrics_port`. The caller owns (and kills) it.
    pub fn start_elected_controller(
        &self,
        name: &str,
        metrics_port: u16,
        lease_seconds: u64,
    ) -> Process {
        let args = vec![
            "controller".to_string(),
            format!("--storage-class={STORAGE_CLASS}"),
            format!("--provisioner-name={PROVISIONER}"),
            format!("--metrics-address=127.0.0.1:{metrics_port}"),
            "--leader-elect".to_string(),
            "--leader-elect-namespace=default".to_string(),
            format!("--leader-elect-duration={lease_seconds}"),
        ];
        Process::start_with_env(
            name,
            &self.binary,
            &args,
            &[("KUBECONFIG", &self.identity.controller_kubeconfig)],
            &self.logs,
        )
    }

    /// Kills the controller (SIGKILL) and leaves it stopped.
    pub fn stop_controller(&self) {
        if let Some(mut controller) = self.controller.lock().unwrap().take() {
            controller.kill();
        }
    }

    /// (Re)starts the node agent of `node`.
    pub fn restart_agent(&self, node: &str) {
        let disk = self.disks.join(node);
        let port = free_ports(1)[0];
        let mut args = vec![
            "agent".to_string(),
            format!("--node={node}"),
            format!("--base-dir={}", disk.display()),
            format!("--metrics-address=127.0.0.1:{port}"),
        ];
        if let Some(ns) = &self.identity.capacity_namespace {
            args.push(format!("--storage-class={STORAGE_CLASS}"));
            args.push(format!("--capacity-namespace={ns}"));
        }
        let kubeconfig = on_node(&self.identity.agent_kubeconfig, node);
        let process = Process::start_with_env(
            &format!("agent-{node}"),
            &self.binary,
            &args,
            &[("KUBECONFIG", &kubeconfig)],
            &self.logs,
        );
        let previous = self
            .agents
            .lock()
            .unwrap()
            .insert(node.to_string(), process);
        drop(previous); // a replaced agent is killed on drop
        self.agent_metrics_ports
            .lock()
            .unwrap()
            .insert(node.to_string(), port);
    }

    /// Port of the /metrics of `node`'s agent (as last started).
    pub fn agent_metrics_port(&self, node: &str) -> Option<u16> {
        self.agent_metrics_ports.lock().unwrap().get(node).copied()
    }

    /// Where `node`'s agent keeps the data of `persistence_id` in `namespace`.
    pub fn data_dir(&self, node: &str, namespace: &str, persistence_id: &str) -> PathBuf {
        self.disks.join(node).join(namespace).join(persistence_id)
    }

    /// Process id of the running controller.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.lock().unwrap().as_ref().map(Process::pid)
    }

    pub fn controller_log_tail(&self) -> String {
        let controller = self.controller.lock().unwrap();
        controller
            .as_ref()
            .map(|p| p.log_tail(60))
            .unwrap_or_default()
    }
}

/// A kubeconfig that impersonates a ServiceAccount acts, for an agent, as
/// that account's token bound to the agent's pod on `node` would: with the
/// node's name in the user's extra info, which the chart's admission policy
/// checks. Other kubeconfigs are used as they are.
fn on_node(kubeconfig: &Path, node: &str) -> PathBuf {
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let mut impersonating = false;
    for named in &mut config.auth_infos {
        if let Some(auth) = &mut named.auth_info
            && auth.impersonate.is_some()
        {
            impersonating = true;
            auth.impersonate_user_extra = Some(
                [(
                    "authentication.kubernetes.io/node-name".to_string(),
                    vec![node.to_string()],
                )]
                .into(),
            );
        }
    }
    if !impersonating {
        return kubeconfig.to_path_buf();
    }
    let path = PathBuf::from(format!("{}-{node}", kubeconfig.display()));
    let yaml = serde_yaml::to_string(&config).expect("serialize kubeconfig");
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

/// Installs the CRD (as users do, with `kubectl apply`) and the StorageClass.
pub async fn install_crd_and_storage_class(cluster: &TestCluster) {
    let client = cluster.client().await;
    let output = cluster
        .kubectl()
        .args(["apply", "-f", CRD_FILE])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_until(Duration::from_secs(30), "CRD established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("statefulapps.statefulapp.io").await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": STORAGE_CLASS },
        "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
        "allowVolumeExpansion": true,
    }))
    .unwrap();
    let classes: Api<StorageClass> = Api::all(client.clone());
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create StorageClass: {e}"),
    }
    install_reservation_priority_class(&client).await;
}

/// The PriorityClass of reservation pods, as the chart makes it.
pub async fn install_reservation_priority_class(client: &kube::Client) {
    let class: PriorityClass = serde_json::from_value(json!({
        "metadata": { "name": RESERVATION_PRIORITY_CLASS },
        "value": 1_000_000_000,
        "preemptionPolicy": "PreemptLowerPriority",
    }))
    .unwrap();
    let classes: Api<PriorityClass> = Api::all(client.clone());
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create PriorityClass: {e}"),
    }
}

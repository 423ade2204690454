//! The Helm chart installed as users install it, on a plane with real nodes:
//! the controller Deployment and the agent DaemonSet run as real pods from
//! the image built here, under the chart's ServiceAccounts and security
//! contexts.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::TestCluster;
use super::fixtures::OperatorLogs;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/statefulapp-operator");
pub const RELEASE: &str = "statefulapp-operator";
pub const RELEASE_NAMESPACE: &str = "statefulapp-system";

/// Runs a command (helm, kubectl) that must succeed; returns its stdout,
/// or panics with the command and all it printed.
pub fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An installed release; its logs come from the controller pods.
pub struct ChartRelease {
    kubeconfig: String,
    bin_dir: std::path::PathBuf,
    /// How long `helm install --wait` took.
    pub install_time: std::time::Duration,
}

impl ChartRelease {
    /// `helm install --wait` with the operator image every real node has
    /// (`pullPolicy: Never`: there is no registry), plus `extra` `--set`s.
    pub fn install(cluster: &TestCluster, extra: &[&str]) -> ChartRelease {
        let images = cluster.images.as_ref().expect("a plane with real nodes");
        let (repository, tag) = images.operator_repository_and_tag();
        let kubeconfig = cluster.kubeconfig.display().to_string();
        let started = Instant::now();
        let mut helm = Command::new(cluster.bin_dir.join("helm"));
        helm.args(["install", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE])
            .args(["--create-namespace", "--wait", "--timeout", "3m"])
            .args(["--kubeconfig", &kubeconfig])
            .args(["--set", &format!("image.repository={repository}")])
            .args(["--set", &format!("image.tag={tag}")])
            .args(["--set", "image.pullPolicy=Never"]);
        for value in extra {
            helm.args(["--set", value]);
        }
        let release = ChartRelease {
            kubeconfig,
            bin_dir: cluster.bin_dir.clone(),
            install_time: std::time::Duration::ZERO,
        };
        let output = helm.output().expect("run helm");
        assert!(
            output.status.success(),
            "helm install failed:\n{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            release.describe_pods(),
        );
        ChartRelease {
            install_time: started.elapsed(),
            ..release
        }
    }

    /// `kubectl` against the plane.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs `script` in a pod's (first) container; returns (success,
    /// stdout and stderr).
    pub fn exec(&self, ns: &str, pod: &str, script: &str) -> (bool, String) {
        let output = self
            .kubectl()
            .args(["exec", "-n", ns, pod, "--", "sh", "-c", script])
            .output()
            .expect("run kubectl exec");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// The release's pods and their recent events, for failure messages.
    pub fn describe_pods(&self) -> String {
        let output = self
            .kubectl()
            .args(["describe", "pods", "-n", RELEASE_NAMESPACE])
            .output()
            .expect("run kubectl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn kubeconfig(&self) -> &Path {
        Path::new(&self.kubeconfig)
    }
}

impl OperatorLogs for ChartRelease {
    fn log_tail(&self) -> String {
        let output = self
            .kubectl()
            .args(["logs", "-n", RELEASE_NAMESPACE, "--prefix", "--tail=40"])
            .args(["-l", "app.kubernetes.io/component=controller"])
            .output()
            .expect("run kubectl logs");
        format!(
            "--- controller pods' logs ---\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

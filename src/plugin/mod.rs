//! `kubectl statefulapp`: the `dcos marathon` workflow of the DC/OS tutorial,
//! on StatefulApps. Commands only read apps and write what a user would:
//! `spec.instances`, the wipe annotations, a pod deletion, an apply.

pub mod cli;
mod commands;
pub mod jsonpath;
pub mod output;
pub mod resolve;
mod wait;

pub use cli::Cli;
pub use commands::run;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid StatefulApp or Marathon app: {message}")]
    Parse { path: String, message: String },
    #[error("Kubernetes configuration: {0}")]
    Config(String),
    #[error(
        "{0}\nanother manager (a GitOps controller?) owns these fields; change them there, or pass --force-conflicts to take them over"
    )]
    Conflict(String),
    #[error("{0}")]
    ControllerAbsent(String),
    #[error("{0}")]
    Stalled(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Import(String),
    #[error("{0}")]
    Api(#[from] kube::Error),
}

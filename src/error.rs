//! The crate's error type: typed inside, with context added at the edges.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("building an object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid StatefulApp: {0}")]
    Invalid(String),
    /// An object of the name the operator needs is someone else's.
    #[error("{0}")]
    Conflict(String),
    #[error("node agent: {0}")]
    Agent(String),
    /// A reconcile's task ended without an answer (it panicked, or the
    /// runtime is shutting down).
    #[error("reconcile task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("I/O on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

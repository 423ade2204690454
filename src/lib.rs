//! statefulapp-operator: Marathon-style stateful services on Kubernetes.
//!
//! - [`api`]: the `StatefulApp` custom resource.
//! - [`names`]: deterministic object names, ids, labels and annotations.
//! - [`controller`]: reconciles StatefulApps (observe -> plan -> apply).
//! - [`provisioner`]: creates node-local persistent volumes for claims.
//! - [`agent`]: the node agent owning the data directories of its node.
//! - [`capacity`]: node disk capacity published for kube-scheduler.
//! - [`hostname`]: the label value that selects a node.
//! - [`quantity`]: Kubernetes quantities as bytes.
//! - [`plugin`]: the `kubectl statefulapp` plugin.
//! - [`marathon`]: import of Marathon app definitions.
//! - [`crdgen`]: the CRD document printed from the Rust types.
//! - [`finalizer`]: safe finalizer updates.
//! - [`watch`]: watch streams for kube-runtime's controllers.
//! - [`worker`]: reconciles on the runtime's worker threads.
//! - [`metrics`], [`http`]: Prometheus metrics and the health endpoints.

pub mod agent;
pub mod api;
pub mod api_client;
pub mod capacity;
pub mod controller;
pub mod crdgen;
mod error;
pub mod finalizer;
pub mod hostname;
pub mod http;
pub mod marathon;
pub mod metrics;
pub mod names;
mod partial;
pub mod plugin;
pub mod provisioner;
pub mod quantity;
pub mod watch;
pub mod worker;

pub use error::{Error, Result};

//! statefulapp-operator: Marathon-style stateful services on Kubernetes.
//!
//! - [`api`]: the `StatefulApp` custom resource.
//! - [`crdgen`]: the CRD document printed from the Rust types.

pub mod api;
pub mod crdgen;

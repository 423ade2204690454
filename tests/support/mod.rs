//! Test support: a real control plane (etcd, kube-apiserver, controller-manager,
//! scheduler, kwok) built from source and started on loopback, shared by the
//! tests of one test binary. See `cluster::TestCluster::shared`.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub mod certs;
pub mod chart;
pub mod cluster;
pub mod fault_proxy;
pub mod fixtures;
pub mod http;
pub mod images;
pub mod janitor;
pub mod network;
pub mod operator;
pub mod process;
pub mod real_node;
pub mod tutorial;
pub mod wait;

pub use cluster::TestCluster;
pub use wait::wait_until;

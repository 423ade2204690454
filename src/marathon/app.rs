//! The parts of a Marathon app definition (JSON) the importer understands.
//! Everything else lands in `extra` maps, so it can be reported, never
//! dropped silently.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct MarathonApp {
    pub id: String,
    pub instances: Option<i32>,
    pub cmd: Option<String>,
    pub args: Option<Vec<String>>,
    pub cpus: Option<f64>,
    pub mem: Option<f64>,
    pub disk: Option<f64>,
    pub gpus: Option<f64>,
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub container: Option<Container>,
    #[serde(default)]
    pub port_definitions: Vec<PortMapping>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub readiness_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub constraints: Vec<Vec<Value>>,
    pub upgrade_strategy: Option<UpgradeStrategy>,
    pub kill_selection: Option<String>,
    pub residency: Option<Residency>,
    pub task_kill_grace_period_seconds: Option<i64>,
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub docker: Option<Docker>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    pub image: Option<String>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub container_path: Option<String>,
    pub host_path: Option<String>,
    pub mode: Option<String>,
    pub persistent: Option<Persistent>,
    pub external: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Persistent {
    pub size: Option<f64>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: Option<i32>,
    pub port: Option<i32>,
    pub host_port: Option<i32>,
    pub service_port: Option<i32>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub protocol: Option<String>,
    pub path: Option<String>,
    pub port_index: Option<usize>,
    pub port: Option<i32>,
    pub command: Option<Value>,
    pub grace_period_seconds: Option<i32>,
    pub interval_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub max_consecutive_failures: Option<i32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    pub minimum_health_capacity: Option<f64>,
    pub maximum_over_capacity: Option<f64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Residency {
    pub task_lost_behavior: Option<String>,
    pub relaunch_escalation_timeout_seconds: Option<i64>,
}

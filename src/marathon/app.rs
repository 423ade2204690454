//! The parts of a Marathon app definition (JSON) the importer reads. Fields
//! not named here are still reported: the report covers every field of the
//! input (see `report::Report::cover`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

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
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(default)]
    pub constraints: Vec<Vec<Value>>,
    pub upgrade_strategy: Option<UpgradeStrategy>,
    pub kill_selection: Option<String>,
    pub residency: Option<Residency>,
    pub unreachable_strategy: Option<Value>,
    pub task_kill_grace_period_seconds: Option<i64>,
    pub user: Option<String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    pub fetch: Vec<Fetch>,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default)]
    pub networks: Vec<Network>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub docker: Option<Docker>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    pub image: Option<String>,
    pub network: Option<String>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    pub privileged: Option<bool>,
    pub force_pull_image: Option<bool>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub container_path: Option<String>,
    pub host_path: Option<String>,
    pub mode: Option<String>,
    pub persistent: Option<Persistent>,
    pub external: Option<Value>,
    pub secret: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Persistent {
    pub size: Option<f64>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub max_size: Option<f64>,
    pub profile_name: Option<String>,
    #[serde(default)]
    pub constraints: Vec<Vec<Value>>,
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
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
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
    pub delay_seconds: Option<i32>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    pub protocol: Option<String>,
    pub path: Option<String>,
    pub port_name: Option<String>,
    pub interval_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub http_status_codes_for_ready: Option<Vec<i32>>,
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

#[derive(Deserialize, Debug, Default)]
pub struct Secret {
    pub source: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    pub uri: Option<String>,
    pub extract: Option<bool>,
    pub executable: Option<bool>,
    pub dest_path: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Network {
    pub mode: Option<String>,
    pub name: Option<String>,
}

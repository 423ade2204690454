//! The status stays small: the status the controller writes for the
//! largest app the CRD allows, with the longest names it allows and every
//! instance in trouble at once, serializes well under etcd's object limit
//! (1.5 MiB for the whole object, spec and metadata included).

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use uuid::Uuid;

use super::model::{AppView, InstanceView, Observed, PodView, ReservationView, VolumeView};
use super::plan::Plan;
use super::simulation::World;
use super::status::{StatusInput, compute_status};
use crate::api::{MAX_APP_VOLUMES, MAX_INSTANCES, MAX_VOLUMES, StatefulApp};
use crate::names::{InstanceId, PersistenceId, volume_name};

/// What the status may take: two thirds of etcd's limit, the rest left
/// to the spec (its pod template) and metadata.
const BOUND: usize = 1024 * 1024;

/// The longest names the CRD lets through.
const APP: &str = "a234567890123456789012345678901234567890"; // 40
const SIZE: &str = "1099511627776.00000000000000000"; // 32
fn node(i: usize) -> String {
    format!("{i:0>253}") // a DNS subdomain of the longest length
}
fn volume(v: usize) -> String {
    format!("v{v:0>31}") // 32
}

/// The largest app with `volumes` volumes: as many instances as the CRD
/// allows, half of them running past their size, half stopped with a
/// reservation pending, all on lost nodes, every volume's data missing.
fn largest(volumes: usize) -> (Observed, Vec<(String, String)>) {
    let instances = (MAX_INSTANCES as usize).min(MAX_APP_VOLUMES as usize / volumes);
    let names: Vec<String> = (0..volumes).map(volume).collect();
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let reserved_resources = BTreeMap::from(
        ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]
            .map(|r| (r.to_string(), "1000000000000m".to_string())),
    );
    // The simulation's app, made the largest the CRD allows.
    let mut observed = World::new(0).observed;
    observed.app = AppView {
        name: APP.into(),
        desired: instances,
        volumes: names.clone(),
        volume_sizes: names.iter().map(|n| (n.clone(), 1 << 50)).collect(),
        template_hash: "t".into(),
        reservation_hash: "r".into(),
        reserved_resources,
        ..observed.app
    };
    observed.namespace_uid = None;
    observed.now = now;
    for n in 0..instances {
        let uuid = Uuid::from_u128(n as u128 + 1);
        let id = InstanceId::new(APP, uuid);
        let node = node(n);
        observed.known_nodes.insert(node.clone());
        let running = n % 2 == 0;
        let volumes = names
            .iter()
            .map(|v| {
                let view = VolumeView {
                    name: volume_name(&PersistenceId::of(&id, v)),
                    node: Some(node.clone()),
                    data_missing: Some(format!("/var/lib/statefulapp/ns/{id} missing on {node}")),
                    used: Some(1023 * 1024 * 1024 * 1024),
                    ..VolumeView::default()
                };
                (v.clone(), view)
            })
            .collect();
        let pod_name = format!("{APP}-{}", uuid.hyphenated());
        observed.instances.insert(
            uuid,
            InstanceView {
                uuid,
                created: Some(now),
                node: Some(node.clone()),
                claims: BTreeMap::new(),
                volumes,
                pod: running.then(|| PodView {
                    name: pod_name.clone(),
                    template_hash: "t".into(),
                    node: Some(node.clone()),
                    running: true,
                    started_at: Some(now),
                    ..PodView::default()
                }),
                reservation: (!running).then(|| ReservationView {
                    name: format!("{pod_name}-reserved"),
                    hash: "r".into(),
                    ..ReservationView::default()
                }),
            },
        );
    }
    let sizes = names
        .iter()
        .map(|v| (v.clone(), SIZE.to_string()))
        .collect();
    (observed, sizes)
}

fn status_bytes(volumes: usize) -> usize {
    let (observed, sizes) = largest(volumes);
    let plan = Plan {
        to_run: observed.instances.keys().copied().collect(),
        ..Plan::default()
    };
    let errors: Vec<String> = (0..100).map(|i| format!("bad wipe request {i}")).collect();
    let mut status = compute_status(&StatusInput {
        observed: &observed,
        plan: &plan,
        generation: Some(i64::MAX),
        sizes: &sizes,
        input_errors: &errors,
        previous: &[],
        unschedulable_after: std::time::Duration::from_secs(60),
    });
    // The reconciler keeps the last 100 wiped ids.
    status.wiped_instances = (0..100)
        .map(|i| InstanceId::new(APP, Uuid::from_u128(u128::MAX - i)).to_string())
        .collect();
    assert_eq!(
        status.instances.len() * volumes,
        status
            .instances
            .iter()
            .map(|i| i.volumes.len())
            .sum::<usize>()
    );
    serde_json::to_vec(&serde_json::json!({ "status": status }))
        .unwrap()
        .len()
}

#[test]
fn the_largest_allowed_app_has_a_small_status() {
    for volumes in [1, 2, 4, 8, MAX_VOLUMES] {
        let bytes = status_bytes(volumes);
        eprintln!("{volumes} volumes: status of {bytes} bytes");
        assert!(
            bytes < BOUND,
            "with {volumes} volumes per instance the status takes {bytes} bytes, over {BOUND}"
        );
    }
}

#[test]
fn the_crd_enforces_the_limits_the_status_is_measured_at() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(StatefulApp::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["instances"]["maximum"], f64::from(MAX_INSTANCES));
    assert_eq!(spec["volumes"]["maxItems"], MAX_VOLUMES);
    let rules = schema["x-kubernetes-validations"].to_string();
    let product = format!("self.spec.instances * size(self.spec.volumes) <= {MAX_APP_VOLUMES}");
    assert!(rules.contains(&product), "no rule {product:?} in {rules}");
}

//! Reservations: while an instance is stopped, a pod of the pause image
//! holds the instance pod's resource requests on its node, so that no other
//! workload takes them and the instance can always be relaunched there
//! (Marathon's dynamically reserved resources).
//!
//! The reservation pod is scheduled by kube-scheduler (pinned to the node by
//! required node affinity) with a PriorityClass that ordinary pods cannot
//! preempt, while it can preempt them: capacity lost to another pod in the
//! instant between the instance's pod going and its reservation coming is
//! won back. A restart deletes the reservation and, once it is gone, binds
//! the instance's pod straight to the node (no scheduling round).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, PodSpec, ResourceRequirements, SecurityContext, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;
use sha2::{Digest, Sha256};

/// What reservation pods are made of: the chart's PriorityClass and the
/// pause image.
#[derive(Clone, Debug)]
pub struct ReservationConfig {
    pub priority_class: String,
    pub image: String,
}

impl Default for ReservationConfig {
    fn default() -> Self {
        ReservationConfig {
            priority_class: "statefulapp-reservation".into(),
            image: "registry.k8s.io/pause:3.10".into(),
        }
    }
}

/// The resources a pod of `spec` takes on its node, as kube-scheduler and
/// the kubelet count them: the containers' requests summed (a request
/// defaults to its limit), restartable init containers (sidecars) added,
/// and the largest regular init container if that is more. Quantities that
/// do not parse are left out (the API server refuses them in a pod anyway).
pub fn pod_requests(spec: &PodSpec) -> BTreeMap<String, Quantity> {
    let mut sum: BTreeMap<String, ParsedQuantity> = BTreeMap::new();
    for container in &spec.containers {
        add(&mut sum, &container_requests(container));
    }
    let mut sidecars: BTreeMap<String, ParsedQuantity> = BTreeMap::new();
    let mut init_peak: BTreeMap<String, ParsedQuantity> = BTreeMap::new();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init);
        if init.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &requests);
        } else {
            let mut during = sidecars.clone();
            add(&mut during, &requests);
            max_into(&mut init_peak, &during);
        }
    }
    add(&mut sum, &sidecars);
    max_into(&mut sum, &init_peak);
    sum.into_iter()
        .filter(|(_, q)| *q > ParsedQuantity::default())
        .map(|(name, q)| (name, Quantity(q.to_string())))
        .collect()
}

fn container_requests(container: &Container) -> BTreeMap<String, ParsedQuantity> {
    let resources = container.resources.as_ref();
    let mut requests: BTreeMap<String, ParsedQuantity> = BTreeMap::new();
    let limits = resources.and_then(|r| r.limits.as_ref());
    let explicit = resources.and_then(|r| r.requests.as_ref());
    for (name, quantity) in limits.into_iter().flatten() {
        if let Ok(q) = ParsedQuantity::try_from(quantity) {
            requests.insert(name.clone(), q);
        }
    }
    for (name, quantity) in explicit.into_iter().flatten() {
        if let Ok(q) = ParsedQuantity::try_from(quantity) {
            requests.insert(name.clone(), q);
        }
    }
    requests
}

fn add(into: &mut BTreeMap<String, ParsedQuantity>, more: &BTreeMap<String, ParsedQuantity>) {
    for (name, q) in more {
        let total = match into.remove(name) {
            Some(have) => have + q.clone(),
            None => q.clone(),
        };
        into.insert(name.clone(), total);
    }
}

fn max_into(into: &mut BTreeMap<String, ParsedQuantity>, other: &BTreeMap<String, ParsedQuantity>) {
    for (name, q) in other {
        if into.get(name).is_none_or(|have| have < q) {
            into.insert(name.clone(), q.clone());
        }
    }
}

/// The reservation pod's spec for an app's template on `node`: the pause
/// image with the template's requests, its tolerations and runtime class
/// (so that pod overhead counts the same), locked down.
pub fn reservation_spec(template: &PodSpec, node: &str, config: &ReservationConfig) -> PodSpec {
    let requests = pod_requests(template);
    // Extended resources and huge pages must have limits equal to requests.
    let limits: BTreeMap<String, Quantity> = requests
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage"))
        .map(|(name, q)| (name.clone(), q.clone()))
        .collect();
    let affinity = serde_json::json!({
        "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{ "matchFields": [
                { "key": "metadata.name", "operator": "In", "values": [node] }
            ]}]
        }}
    });
    PodSpec {
        containers: vec![Container {
            name: "reserved".into(),
            image: Some(config.image.clone()),
            resources: Some(ResourceRequirements {
                requests: (!requests.is_empty()).then_some(requests),
                limits: (!limits.is_empty()).then_some(limits),
                ..Default::default()
            }),
            security_context: Some(locked_down()),
            ..Default::default()
        }],
        affinity: serde_json::from_value(affinity).ok(),
        tolerations: template.tolerations.clone(),
        runtime_class_name: template.runtime_class_name.clone(),
        priority_class_name: Some(config.priority_class.clone()),
        termination_grace_period_seconds: Some(0),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..Default::default()
    }
}

fn locked_down() -> SecurityContext {
    serde_json::from_value(serde_json::json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": 65535,
        "runAsGroup": 65535,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    }))
    .expect("a valid security context")
}

/// Hash of what a reservation of `template` holds: a reservation of
/// another hash is replaced (the template's requests changed).
pub fn reservation_hash(template: &PodSpec, config: &ReservationConfig) -> String {
    let spec = reservation_spec(template, "", config);
    let input = serde_json::to_vec(&spec).expect("serializable");
    hex::encode(&Sha256::digest(&input)[..8])
}

/// A node's placement facts, as the node cache keeps them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePlacement {
    pub unschedulable: bool,
    /// Its `NoSchedule` and `NoExecute` taints.
    pub taints: Vec<Taint>,
}

/// Whether an instance pod of `template` may be bound straight to a node
/// with `placement` (the node is Ready): not cordoned, every taint that
/// keeps pods off tolerated, and no node selection in the template that
/// only kube-scheduler evaluates.
pub fn may_bind_directly(template: &PodSpec, placement: &NodePlacement) -> bool {
    let selects_nodes = template
        .node_selector
        .as_ref()
        .is_some_and(|s| !s.is_empty())
        || template
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .is_some_and(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .is_some()
            });
    let tolerations = template.tolerations.as_deref().unwrap_or_default();
    !placement.unschedulable
        && !selects_nodes
        && placement
            .taints
            .iter()
            .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Kubernetes' toleration matching (`v1.Toleration.ToleratesTaint`).
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    match toleration.key.as_deref() {
        None | Some("") => {
            // An empty key matches every key, with `Exists` only.
            toleration.operator.as_deref() == Some("Exists")
        }
        Some(key) if key != taint.key => false,
        Some(_) => match toleration.operator.as_deref() {
            Some("Exists") => true,
            _ => {
                toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    fn parsed(map: &BTreeMap<String, Quantity>, name: &str) -> ParsedQuantity {
        ParsedQuantity::try_from(map.get(name).unwrap_or_else(|| panic!("no {name}"))).unwrap()
    }

    #[test]
    fn requests_sum_containers_and_default_to_limits() {
        let requests = pod_requests(&spec(json!({ "containers": [
            { "name": "a", "resources": { "requests": { "cpu": "500m", "memory": "256Mi" } } },
            { "name": "b", "resources": { "limits": { "cpu": "1", "memory": "1Gi", "example.com/gpu": "1" } } },
            { "name": "c" },
        ]})));
        assert_eq!(
            parsed(&requests, "cpu"),
            ParsedQuantity::try_from("1500m").unwrap()
        );
        assert_eq!(
            parsed(&requests, "memory"),
            ParsedQuantity::try_from("1280Mi").unwrap()
        );
        assert_eq!(
            parsed(&requests, "example.com/gpu"),
            ParsedQuantity::try_from("1").unwrap()
        );
    }

    #[test]
    fn init_containers_count_as_kube_scheduler_counts_them() {
        let requests = pod_requests(&spec(json!({
            "initContainers": [
                { "name": "sidecar", "restartPolicy": "Always",
                  "resources": { "requests": { "cpu": "100m" } } },
                { "name": "migrate", "resources": { "requests": { "cpu": "2", "memory": "64Mi" } } },
            ],
            "containers": [{ "name": "a", "resources": { "requests": { "cpu": "1", "memory": "128Mi" } } }],
        })));
        // The migration runs beside the sidecar: 2.1 CPU at its peak, more
        // than the 1.1 of the app with its sidecar.
        assert_eq!(
            parsed(&requests, "cpu"),
            ParsedQuantity::try_from("2100m").unwrap()
        );
        assert_eq!(
            parsed(&requests, "memory"),
            ParsedQuantity::try_from("128Mi").unwrap()
        );
    }

    #[test]
    fn a_template_without_requests_reserves_nothing_but_a_pod_slot() {
        let requests = pod_requests(&spec(json!({ "containers": [{ "name": "a" }] })));
        assert!(requests.is_empty());
        let pod = reservation_spec(
            &spec(json!({ "containers": [{ "name": "a" }] })),
            "n1",
            &ReservationConfig::default(),
        );
        assert!(
            pod.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .requests
                .is_none()
        );
    }

    #[test]
    fn the_reservation_pod_is_pinned_held_and_locked_down() {
        let template = spec(json!({
            "containers": [{ "name": "a", "image": "postgres",
                "resources": { "requests": { "cpu": "1", "memory": "1Gi", "example.com/gpu": "2" } } }],
            "tolerations": [{ "key": "dedicated", "operator": "Exists" }],
            "runtimeClassName": "kata",
        }));
        let pod = reservation_spec(&template, "node-7", &ReservationConfig::default());
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.k8s.io/pause:3.10")
        );
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(
            resources.requests.as_ref().unwrap().get("cpu"),
            Some(&q("1"))
        );
        let limits = resources.limits.as_ref().unwrap();
        assert_eq!(limits.get("example.com/gpu"), Some(&q("2")));
        assert!(limits.get("cpu").is_none(), "cpu is not capped");
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("statefulapp-reservation")
        );
        assert_eq!(pod.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(pod.tolerations, template.tolerations);
        let terms = serde_json::to_value(&pod.affinity).unwrap();
        assert_eq!(
            terms["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchFields"][0]["values"],
            json!(["node-7"])
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert!(
            pod.volumes.is_none(),
            "a reservation never mounts the instance's volumes"
        );
    }

    #[test]
    fn the_hash_follows_requests_not_the_image_of_the_app() {
        let config = ReservationConfig::default();
        let a = spec(json!({ "containers": [{ "name": "a", "image": "v1",
            "resources": { "requests": { "cpu": "1" } } }] }));
        let b = spec(json!({ "containers": [{ "name": "a", "image": "v2",
            "resources": { "requests": { "cpu": "1" } } }] }));
        let c = spec(json!({ "containers": [{ "name": "a", "image": "v2",
            "resources": { "requests": { "cpu": "2" } } }] }));
        assert_eq!(reservation_hash(&a, &config), reservation_hash(&b, &config));
        assert_ne!(reservation_hash(&b, &config), reservation_hash(&c, &config));
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn direct_binding_respects_cordons_taints_and_node_selection() {
        let plain = spec(json!({ "containers": [{ "name": "a" }] }));
        let ok = NodePlacement::default();
        assert!(may_bind_directly(&plain, &ok));
        let cordoned = NodePlacement {
            unschedulable: true,
            ..Default::default()
        };
        assert!(!may_bind_directly(&plain, &cordoned));
        let tainted = NodePlacement {
            taints: vec![taint("dedicated", Some("db"), "NoSchedule")],
            ..Default::default()
        };
        assert!(!may_bind_directly(&plain, &tainted));
        let tolerant = spec(json!({ "containers": [{ "name": "a" }],
            "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule" }] }));
        assert!(may_bind_directly(&tolerant, &tainted));
        let wrong_value = spec(json!({ "containers": [{ "name": "a" }],
            "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "web" }] }));
        assert!(!may_bind_directly(&wrong_value, &tainted));
        let everything = spec(json!({ "containers": [{ "name": "a" }],
            "tolerations": [{ "operator": "Exists" }] }));
        assert!(may_bind_directly(&everything, &tainted));
        let selective = spec(json!({ "containers": [{ "name": "a" }],
            "nodeSelector": { "disk": "ssd" } }));
        assert!(!may_bind_directly(&selective, &ok));
    }
}

//! Marathon app -> StatefulApp, field by field. Every field is mapped,
//! reported as a warning (kept in spirit, or irrelevant on Kubernetes), or
//! refused with an error (it cannot be honoured).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::app::{HealthCheck, MarathonApp, PortMapping, Volume};
use super::constraints::placement;
use super::{ImportError, Imported};
use crate::api::StatefulApp;
use crate::names::is_dns_label;

/// Where Marathon mounts relative container paths: the task sandbox.
const SANDBOX: &str = "/mnt/mesos/sandbox";

pub fn convert(mut app: MarathonApp, namespace: Option<&str>) -> Result<Imported, ImportError> {
    let mut warnings = Vec::new();
    let (name, group) = app_name(&app.id)?;
    for (key, _) in &app.extra {
        warnings.push(ignored_field(key));
    }

    let container = app.container.take().unwrap_or_default();
    // `type` (DOCKER or MESOS): either containerizer ran the image; so does Kubernetes.
    for key in container.extra.keys().filter(|k| *k != "type") {
        warnings.push(ignored_field(&format!("container.{key}")));
    }
    let docker = container.docker.unwrap_or_default();
    for key in docker.extra.keys() {
        warnings.push(ignored_field(&format!("container.docker.{key}")));
    }
    let image = docker.image.clone().ok_or_else(|| {
        ImportError::Unsupported(
            "the app has no container image (container.docker.image): Kubernetes runs images, add one".into(),
        )
    })?;

    let volumes = volumes(&container.volumes, &mut warnings)?;
    let mut main = json!({ "name": name, "image": image });
    if let Some(cmd) = &app.cmd {
        main["command"] = json!(["/bin/sh", "-c", cmd]);
    }
    if let Some(args) = &app.args {
        main["args"] = json!(args);
    }
    main["resources"] = resources(&app, &mut warnings);
    let env = env(&app.env)?;
    if !env.is_empty() {
        main["env"] = json!(env);
    }
    let mappings: Vec<&PortMapping> = container
        .port_mappings
        .iter()
        .chain(&docker.port_mappings)
        .chain(&app.port_definitions)
        .collect();
    let ports = ports(&mappings, &mut warnings);
    if !ports.is_empty() {
        main["ports"] = json!(ports);
    }
    let container_ports: Vec<i32> = ports
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .map(|p| p as i32)
        .collect();
    for (i, check) in app
        .health_checks
        .iter()
        .chain(&app.readiness_checks)
        .enumerate()
    {
        for key in check.extra.keys() {
            warnings.push(ignored_field(&format!("check {i} {key}")));
        }
    }
    if let Some(check) = app.health_checks.first() {
        if app.health_checks.len() > 1 {
            warnings.push("healthChecks: only the first becomes the liveness probe".into());
        }
        main["livenessProbe"] = probe(check, &container_ports, "healthChecks[0]")?;
    }
    if let Some(check) = app.readiness_checks.first() {
        main["readinessProbe"] = probe(check, &container_ports, "readinessChecks[0]")?;
    }

    let mut pod_spec = json!({ "containers": [main] });
    if let Some(grace) = app.task_kill_grace_period_seconds {
        pod_spec["terminationGracePeriodSeconds"] = json!(grace);
    }
    if let Some(user) = &app.user {
        match user.parse::<i64>() {
            Ok(uid) => pod_spec["securityContext"] = json!({ "runAsUser": uid }),
            Err(_) => warnings.push(format!(
                "user {user:?}: Kubernetes runs containers as numeric uids; set securityContext.runAsUser"
            )),
        }
    }
    warnings.extend(placement(&name, &app.constraints)?.apply(&mut pod_spec));

    let (labels, label_warnings) = sanitize_labels(&app.labels);
    warnings.extend(label_warnings);
    let mut spec = json!({
        "instances": app.instances.unwrap_or(1),
        "template": { "metadata": { "labels": labels }, "spec": pod_spec },
        "volumes": volumes,
    });
    if let Some(upgrade) = &app.upgrade_strategy {
        if let Some(capacity) = upgrade.minimum_health_capacity {
            spec["upgradeStrategy"] = json!({ "minimumHealthCapacity": capacity });
        }
        if upgrade.maximum_over_capacity.is_some_and(|c| c > 0.0) {
            warnings.push(
                "upgradeStrategy.maximumOverCapacity: always 0 for stateful apps (an instance owns its volumes)".into(),
            );
        }
    }
    if let Some(selection) = &app.kill_selection {
        spec["killSelection"] = match selection.as_str() {
            "YOUNGEST_FIRST" => json!("YoungestFirst"),
            "OLDEST_FIRST" => json!("OldestFirst"),
            other => return Err(ImportError::Unsupported(format!("killSelection {other:?}"))),
        };
    }
    if let Some(residency) = &app.residency {
        spec["nodeLossPolicy"] = match residency.task_lost_behavior.as_deref() {
            None | Some("WAIT_FOREVER") => json!({ "action": "Wait" }),
            Some("RELAUNCH_AFTER_TIMEOUT") => json!({
                "action": "Replace",
                "afterSeconds": residency.relaunch_escalation_timeout_seconds.unwrap_or(3600),
            }),
            Some(other) => {
                return Err(ImportError::Unsupported(format!(
                    "residency.taskLostBehavior {other:?}"
                )));
            }
        };
    }

    let mut annotations =
        BTreeMap::from([("statefulapp.io/marathon-id".to_string(), app.id.clone())]);
    if let Some(group) = &group {
        annotations.insert("statefulapp.io/marathon-group".into(), group.clone());
    }
    let mut metadata = json!({ "name": name, "labels": labels, "annotations": annotations });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    let document = json!({
        "apiVersion": "statefulapp.io/v1alpha1",
        "kind": "StatefulApp",
        "metadata": metadata,
        "spec": spec,
    });
    let app: StatefulApp =
        serde_json::from_value(document).map_err(|e| ImportError::Unsupported(e.to_string()))?;
    Ok(Imported { app, warnings })
}

fn ignored_field(key: &str) -> String {
    let why = match key.split('.').next_back().unwrap_or(key) {
        "fetch" | "uris" => "download artifacts in an init container or bake them into the image",
        "dependencies" => "Kubernetes has no start-order dependencies between apps",
        "backoffSeconds" | "backoffFactor" | "maxLaunchDelaySeconds" => {
            "the kubelet applies its own restart back-off"
        }
        "acceptedResourceRoles" | "role" => {
            "Mesos roles do not exist on Kubernetes; use nodeSelector or taints"
        }
        "networks" | "ipAddress" => "pods get cluster networking; use a Service to expose ports",
        "secrets" => "use Kubernetes Secrets (env valueFrom or volumes) in the template",
        "unreachableStrategy" => "use nodeLossPolicy",
        "version" | "versionInfo" | "tasks" | "deployments" | "tasksRunning" | "tasksStaged"
        | "tasksHealthy" | "tasksUnhealthy" | "lastTaskFailure" => {
            "runtime state, not configuration"
        }
        "privileged" | "parameters" | "forcePullImage" => {
            "set it in the pod template's securityContext or imagePullPolicy"
        }
        _ => "no StatefulApp equivalent",
    };
    format!("{key}: not imported ({why})")
}

/// `/group/sub/postgres` -> (`postgres`, Some(`group/sub`)).
fn app_name(id: &str) -> Result<(String, Option<String>), ImportError> {
    let parts: Vec<&str> = id.split('/').filter(|p| !p.is_empty()).collect();
    let Some((last, groups)) = parts.split_last() else {
        return Err(ImportError::InvalidId(id.to_string()));
    };
    let name = last.to_ascii_lowercase();
    let valid = is_dns_label(&name)
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        return Err(ImportError::InvalidId(id.to_string()));
    }
    let group = (!groups.is_empty()).then(|| groups.join("/"));
    Ok((name, group))
}

fn volumes(volumes: &[Volume], warnings: &mut Vec<String>) -> Result<Vec<Value>, ImportError> {
    let persistent: Vec<&Volume> = volumes.iter().filter(|v| v.persistent.is_some()).collect();
    if persistent.is_empty() {
        return Err(ImportError::NoPersistentVolume);
    }
    let mut out = Vec::new();
    for volume in &persistent {
        let container_path = volume.container_path.clone().unwrap_or_default();
        let persistent = volume.persistent.as_ref().expect("filtered");
        let name = volume_name(&container_path)?;
        // The documented trick: a hostPath volume naming this persistent
        // volume's relative path mounts it at an absolute path.
        let trick = volumes.iter().find(|v| {
            v.persistent.is_none() && v.host_path.as_deref() == Some(container_path.as_str())
        });
        let mount_path = match trick.and_then(|v| v.container_path.clone()) {
            Some(absolute) => absolute,
            None if container_path.starts_with('/') => container_path.clone(),
            None => format!("{SANDBOX}/{container_path}"),
        };
        let size = persistent.size.ok_or_else(|| {
            ImportError::Unsupported(format!("persistent volume {container_path:?} has no size"))
        })?;
        if persistent.kind.as_deref().is_some_and(|k| k != "root") {
            warnings.push(format!(
                "volume {container_path:?}: persistent type {:?} becomes a directory on the node (type root)",
                persistent.kind.as_deref().unwrap_or("")
            ));
        }
        for key in persistent.extra.keys() {
            warnings.push(ignored_field(&format!(
                "volume {container_path:?} persistent.{key}"
            )));
        }
        for key in volume.extra.keys() {
            warnings.push(ignored_field(&format!("volume {container_path:?} {key}")));
        }
        if volume.mode.as_deref() == Some("RO") {
            warnings.push(format!(
                "volume {container_path:?}: mode RO is not kept; persistent volumes are mounted read-write"
            ));
        }
        out.push(json!({ "name": name, "size": format!("{}Mi", size.ceil() as i64), "mountPath": mount_path }));
    }
    for volume in volumes.iter().filter(|v| v.persistent.is_none()) {
        let path = volume.container_path.clone().unwrap_or_default();
        if volume.external.is_some() {
            return Err(ImportError::Unsupported(format!(
                "external volume {path:?}: use a PersistentVolumeClaim of a network StorageClass in the template"
            )));
        }
        let is_trick = volume.host_path.as_deref().is_some_and(|h| {
            persistent
                .iter()
                .any(|p| p.container_path.as_deref() == Some(h))
        });
        if !is_trick {
            return Err(ImportError::Unsupported(format!(
                "host volume {path:?} -> {:?}: node paths are not portable; use a persistent volume",
                volume.host_path.as_deref().unwrap_or("")
            )));
        }
    }
    Ok(out)
}

/// `pgdata` -> `pgdata`, `data/db` -> `data-db`.
fn volume_name(container_path: &str) -> Result<String, ImportError> {
    let mut name: String = container_path
        .trim_matches('/')
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').to_string();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "v-");
    }
    name.truncate(32);
    let name = name.trim_end_matches('-').to_string();
    if !is_dns_label(&name) {
        return Err(ImportError::Unsupported(format!(
            "cannot name a volume after containerPath {container_path:?}"
        )));
    }
    Ok(name)
}

fn resources(app: &MarathonApp, warnings: &mut Vec<String>) -> Value {
    let mut requests = serde_json::Map::new();
    if let Some(cpus) = app.cpus {
        requests.insert(
            "cpu".into(),
            json!(format!("{}m", (cpus * 1000.0).round() as i64)),
        );
    }
    let mut limits = serde_json::Map::new();
    if let Some(mem) = app.mem {
        let memory = json!(format!("{}Mi", mem.ceil() as i64));
        requests.insert("memory".into(), memory.clone());
        // Marathon enforces mem as a hard limit.
        limits.insert("memory".into(), memory);
    }
    if let Some(gpus) = app.gpus.filter(|g| *g > 0.0) {
        let gpus = json!(gpus.ceil() as i64);
        requests.insert("nvidia.com/gpu".into(), gpus.clone());
        limits.insert("nvidia.com/gpu".into(), gpus);
    }
    if app.disk.is_some_and(|d| d > 0.0) {
        warnings.push("disk: sandbox disk is ephemeral storage on Kubernetes; persistent data belongs in volumes".into());
    }
    json!({ "requests": requests, "limits": limits })
}

fn env(env: &BTreeMap<String, Value>) -> Result<Vec<Value>, ImportError> {
    env.iter()
        .map(|(name, value)| match value {
            Value::String(s) => Ok(json!({ "name": name, "value": s })),
            Value::Object(o) if o.contains_key("secret") => Err(ImportError::Unsupported(format!(
                "env {name}: Marathon secrets do not carry over; create a Kubernetes Secret and use valueFrom.secretKeyRef"
            ))),
            other => Ok(json!({ "name": name, "value": other.to_string() })),
        })
        .collect()
}

fn ports(mappings: &[&PortMapping], warnings: &mut Vec<String>) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, mapping) in mappings.iter().enumerate() {
        let Some(port) = mapping.container_port.or(mapping.port).filter(|p| *p > 0) else {
            continue;
        };
        let mut entry = json!({ "containerPort": port });
        let protocol = mapping
            .protocol
            .as_deref()
            .unwrap_or("tcp")
            .to_ascii_uppercase();
        entry["protocol"] = json!(if protocol.contains("UDP") {
            "UDP"
        } else {
            "TCP"
        });
        if let Some(name) = mapping
            .name
            .as_ref()
            .filter(|n| is_dns_label(n) && n.len() <= 15)
        {
            entry["name"] = json!(name);
        }
        for key in mapping.extra.keys() {
            warnings.push(ignored_field(&format!("port {i} {key}")));
        }
        if mapping.host_port.is_some_and(|p| p != 0) {
            warnings.push(format!(
                "port {i}: hostPort is not set; use a Service to reach the port"
            ));
        }
        if mapping.service_port.is_some_and(|p| p != 0) {
            warnings.push(format!(
                "port {i}: servicePort {} becomes a Service you create",
                mapping.service_port.unwrap_or(0)
            ));
        }
        out.push(entry);
    }
    out
}

fn probe(check: &HealthCheck, ports: &[i32], field: &str) -> Result<Value, ImportError> {
    let port = check
        .port
        .or_else(|| ports.get(check.port_index.unwrap_or(0)).copied())
        .unwrap_or(0);
    let protocol = check.protocol.as_deref().unwrap_or("HTTP");
    let mut probe = match protocol {
        "HTTP" | "MESOS_HTTP" | "HTTPS" | "MESOS_HTTPS" => {
            let scheme = if protocol.ends_with("HTTPS") {
                "HTTPS"
            } else {
                "HTTP"
            };
            json!({ "httpGet": { "path": check.path.clone().unwrap_or_else(|| "/".into()), "port": port, "scheme": scheme } })
        }
        "TCP" | "MESOS_TCP" => json!({ "tcpSocket": { "port": port } }),
        "COMMAND" => {
            let command = check
                .command
                .as_ref()
                .and_then(|c| c.get("value").and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| {
                    ImportError::Unsupported(format!(
                        "{field}: COMMAND check without command.value"
                    ))
                })?;
            json!({ "exec": { "command": ["/bin/sh", "-c", command] } })
        }
        other => {
            return Err(ImportError::Unsupported(format!(
                "{field}: protocol {other:?}"
            )));
        }
    };
    if probe.get("exec").is_none() && port == 0 {
        return Err(ImportError::Unsupported(format!(
            "{field}: no port to probe"
        )));
    }
    if let Some(v) = check.grace_period_seconds {
        probe["initialDelaySeconds"] = json!(v);
    }
    if let Some(v) = check.interval_seconds {
        probe["periodSeconds"] = json!(v);
    }
    if let Some(v) = check.timeout_seconds {
        probe["timeoutSeconds"] = json!(v);
    }
    if let Some(v) = check.max_consecutive_failures.filter(|v| *v > 0) {
        probe["failureThreshold"] = json!(v);
    }
    Ok(probe)
}

/// Keeps labels valid on Kubernetes; says which ones changed.
fn sanitize_labels(labels: &BTreeMap<String, String>) -> (BTreeMap<String, String>, Vec<String>) {
    let clean = |s: &str| -> String {
        let mapped: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(63)
            .collect();
        mapped
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    };
    let mut out = BTreeMap::new();
    let mut warnings = Vec::new();
    for (key, value) in labels {
        let (k, v) = (clean(key), clean(value));
        if k.is_empty() {
            warnings.push(format!(
                "label {key:?}: not a valid Kubernetes label key, dropped"
            ));
            continue;
        }
        if &k != key || &v != value {
            warnings.push(format!("label {key:?}={value:?} became {k:?}={v:?}"));
        }
        out.insert(k, v);
    }
    (out, warnings)
}

//! Marathon app -> StatefulApp (and the Services its ports ask for), field
//! by field. Each field gets a report entry: mapped exactly, rewritten to
//! keep its meaning, approximated, dropped, or refused.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::app::MarathonApp;
use super::constraints::placement;
use super::ports::{
    container_ports, env_suffix, health_probe, port_env, ports, readiness_probe, services,
};
use super::report::Report;
use super::sandbox::{SANDBOX, fetch_script, sandbox_path, secret_name, secret_ref, volumes};
use super::{ImportError, Imported, Options, Workload};
use crate::api::StatefulApp;
use crate::names::is_dns_label;

/// Fields that are runtime state in `GET /v2/apps` output, not configuration.
const RUNTIME: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "deployments",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "lastTaskFailure",
    "readinessCheckResults",
    "taskStats",
];

pub fn convert(
    input: &Value,
    options: &Options,
    namespace: Option<&str>,
) -> Result<Imported, ImportError> {
    let app: MarathonApp = serde_json::from_value(input.clone())?;
    let mut report = Report::new(&app.id);
    let (name, group) = app_name(&app.id)?;
    let resident = app
        .container
        .as_ref()
        .is_some_and(|c| c.volumes.iter().any(|v| v.persistent.is_some()));
    if !resident && !options.deployments {
        return Err(ImportError::NotResident(app.id.clone()));
    }
    let kind = if resident {
        "StatefulApp"
    } else {
        "Deployment"
    };
    let detail = match &group {
        Some(g) => format!("{kind} {name} (group {g} in annotation statefulapp.io/marathon-group)"),
        None => format!("{kind} {name}"),
    };
    if app.id.trim_end_matches('/').rsplit('/').next() == Some(name.as_str()) {
        report.exact("id", detail);
    } else {
        report.rewritten("id", format!("{detail}: Kubernetes names are lowercase"));
    }
    for key in RUNTIME {
        if input.get(key).is_some() {
            report.ignored(*key, "runtime state, not configuration");
        }
    }

    let no_container = super::app::Container::default();
    let container = app.container.as_ref().unwrap_or(&no_container);
    let docker = container.docker.as_ref();
    match container.kind.as_deref() {
        Some(kind @ ("DOCKER" | "MESOS")) => report.exact(
            "container.type",
            format!("{kind}: a container of the pod, run as Mesos ran it: workingDir and MESOS_SANDBOX {SANDBOX}"),
        ),
        Some(other) => report.refused("container.type", format!("unknown containerizer {other:?}")),
        None => {}
    }
    let image = docker.and_then(|d| d.image.clone());
    match &image {
        Some(image) => report.exact("container.docker.image", format!("image {image}")),
        None => report.refused(
            "container",
            "the app has no container image (container.docker.image): Kubernetes runs images; add one",
        ),
    }

    let mut main =
        json!({ "name": name, "image": image.unwrap_or_default(), "workingDir": SANDBOX });
    let mut pod_spec = json!({});
    let mut pod_volumes: Vec<Value> = Vec::new();

    // Volumes: the persistent ones, where Marathon mounted them.
    let mounts = volumes(&container.volumes, &app.secrets, &mut report);
    let mut volume_mounts = mounts.extra_mounts.clone();
    pod_volumes.extend(mounts.pod_volumes.clone());

    // Command.
    match (&app.cmd, &app.args) {
        (Some(_), Some(_)) => {
            report.refused("args", "both cmd and args: Marathon refuses this too")
        }
        (Some(cmd), None) => {
            main["command"] = json!(["/bin/sh", "-c", literal(cmd)]);
            report.exact(
                "cmd",
                format!("command [/bin/sh, -c, cmd], run in {SANDBOX} as on Mesos"),
            );
        }
        (None, Some(args)) => {
            main["args"] = json!(args.iter().map(|a| literal(a)).collect::<Vec<_>>());
            report.exact("args", "args (the image's entrypoint runs them)");
        }
        (None, None) => {}
    }

    main["resources"] = resources(&app, &mut report);

    // Ports, their environment, their Services.
    let ports = ports(&app, &mut report);
    if !ports.is_empty() {
        main["ports"] = json!(container_ports(&ports));
    }
    // A Deployment's pods are not a StatefulApp's: their Services select
    // them by another label.
    let selector_key = if resident {
        "statefulapp.io/app"
    } else {
        DEPLOYMENT_SELECTOR
    };
    let services = services(&name, namespace, &ports, selector_key);
    if let Some(network) = docker.and_then(|d| d.network.as_deref()) {
        report.rewritten(
            "container.docker.network",
            format!("{network}: the pod's own network namespace and IP; ports are container ports"),
        );
    }
    for (i, network) in app.networks.iter().enumerate() {
        let mode = network.mode.as_deref().unwrap_or("host");
        report.rewritten(
            format!("networks[{i}]"),
            format!(
                "{mode}{}: the pod network (one IP per pod)",
                network
                    .name
                    .as_deref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default()
            ),
        );
    }

    main["env"] = json!(environment(
        &name,
        resident,
        &app,
        container,
        &ports,
        &mounts.relative,
        &mut report
    ));

    checks(&app, &ports, &mut main, &mut report);

    // Pod-level settings.
    if let Some(grace) = app.task_kill_grace_period_seconds {
        pod_spec["terminationGracePeriodSeconds"] = json!(grace);
        report.exact(
            "taskKillGracePeriodSeconds",
            format!("terminationGracePeriodSeconds {grace}"),
        );
    }
    if let Some(user) = &app.user {
        let uid = match user.as_str() {
            "root" => Some(0),
            "nobody" => Some(65534),
            other => other
                .parse::<i64>()
                .ok()
                .or_else(|| options.users.get(other).copied()),
        };
        match uid {
            Some(uid) => {
                pod_spec["securityContext"] = json!({ "runAsUser": uid, "fsGroup": uid });
                report.rewritten(
                    "user",
                    format!(
                        "{user}: runAsUser {uid}, fsGroup {uid} (the volumes are writable by it)"
                    ),
                );
            }
            None => report.refused(
                "user",
                format!(
                    "{user:?}: Kubernetes runs containers as numeric uids; pass --uid {user}=<uid>"
                ),
            ),
        }
    }
    if let Some(docker) = docker {
        if docker.privileged == Some(true) {
            main["securityContext"] = json!({ "privileged": true });
        }
        if let Some(privileged) = docker.privileged {
            report.exact(
                "container.docker.privileged",
                format!("securityContext.privileged {privileged}"),
            );
        }
        if let Some(force) = docker.force_pull_image {
            let policy = if force { "Always" } else { "IfNotPresent" };
            main["imagePullPolicy"] = json!(policy);
            report.exact(
                "container.docker.forcePullImage",
                format!("imagePullPolicy {policy}"),
            );
        }
    }
    let placement = placement(
        &name,
        &app.constraints,
        options.nodes.as_deref(),
        &mut report,
    );
    apply_placement(placement, &mut pod_spec);
    match app.accepted_resource_roles.as_deref() {
        Some([]) | None => {}
        Some(roles) if roles.iter().all(|r| r == "*") => {
            report.exact("acceptedResourceRoles", "* : any node")
        }
        Some(roles) => report.dropped(
            "acceptedResourceRoles",
            format!("{roles:?}: Mesos roles do not exist on Kubernetes; label or taint those nodes and add a nodeSelector or toleration"),
        ),
    }

    // Artifacts: downloaded into the sandbox before the app starts.
    let mut fetches: Vec<(String, bool, bool, Option<String>)> = app
        .fetch
        .iter()
        .map(|f| {
            (
                f.uri.clone().unwrap_or_default(),
                f.extract.unwrap_or(true),
                f.executable.unwrap_or(false),
                f.dest_path.clone(),
            )
        })
        .collect();
    fetches.extend(app.uris.iter().map(|u| (u.clone(), true, false, None)));
    if !fetches.is_empty() {
        let field = if app.fetch.is_empty() {
            "uris"
        } else {
            "fetch"
        };
        match &options.fetch_image {
            Some(fetch_image) => {
                let script = fetch_script(&fetches);
                pod_volumes.push(json!({ "name": "mesos-sandbox", "emptyDir": {} }));
                volume_mounts.push(json!({ "name": "mesos-sandbox", "mountPath": SANDBOX }));
                pod_spec["initContainers"] = json!([{
                    "name": "fetch", "image": fetch_image,
                    "command": ["/bin/sh", "-c", literal(&script)],
                    "workingDir": SANDBOX,
                    "volumeMounts": [{ "name": "mesos-sandbox", "mountPath": SANDBOX }],
                }]);
                report.rewritten(
                    field,
                    format!("init container fetch ({fetch_image}) downloads into the sandbox (an emptyDir at {SANDBOX}), extracting archives and marking executables as the Mesos fetcher did; nothing is cached"),
                );
            }
            None => report.refused(
                field,
                "artifacts to download into the sandbox: bake them into the image, or pass --fetch-image IMAGE (with sh, wget, tar and unzip) to download them in an init container",
            ),
        }
    }

    if !volume_mounts.is_empty() {
        main["volumeMounts"] = json!(volume_mounts);
    }
    if !pod_volumes.is_empty() {
        pod_spec["volumes"] = json!(pod_volumes);
    }
    pod_spec["containers"] = json!([main]);

    // Labels, annotations, the app's lifecycle.
    let (labels, label_notes) = sanitize_labels(&app.labels);
    for (key, outcome) in label_notes {
        match outcome {
            Ok(detail) => report.exact(format!("labels.{key}"), detail),
            Err(detail) => report.rewritten(format!("labels.{key}"), detail),
        }
    }
    let mut spec = json!({
        "instances": app.instances.unwrap_or(1),
        "template": { "metadata": { "labels": labels }, "spec": pod_spec },
        "volumes": mounts.volumes,
    });
    if let Some(n) = app.instances {
        report.exact("instances", format!("instances {n}"));
    }
    if !resident {
        return deployment(DeploymentParts {
            input,
            app: &app,
            name: &name,
            group: group.as_deref(),
            namespace,
            labels,
            pod_spec: spec["template"]["spec"].take(),
            services,
            report,
        });
    }
    if let Some(upgrade) = &app.upgrade_strategy {
        if let Some(capacity) = upgrade.minimum_health_capacity {
            spec["upgradeStrategy"] = json!({ "minimumHealthCapacity": capacity });
            report.exact(
                "upgradeStrategy.minimumHealthCapacity",
                format!("upgradeStrategy.minimumHealthCapacity {capacity}"),
            );
        }
        match upgrade.maximum_over_capacity {
            Some(c) if c > 0.0 => report.approximated(
                "upgradeStrategy.maximumOverCapacity",
                "0: an instance owns its volumes and cannot run twice",
            ),
            Some(_) => report.exact(
                "upgradeStrategy.maximumOverCapacity",
                "0, as always for a StatefulApp",
            ),
            None => {}
        }
    }
    if let Some(selection) = &app.kill_selection {
        match selection.as_str() {
            "YOUNGEST_FIRST" => spec["killSelection"] = json!("YoungestFirst"),
            "OLDEST_FIRST" => spec["killSelection"] = json!("OldestFirst"),
            other => report.refused("killSelection", format!("unknown killSelection {other:?}")),
        }
        if spec.get("killSelection").is_some() {
            report.exact(
                "killSelection",
                format!("killSelection {}", spec["killSelection"]),
            );
        }
    }
    node_loss(&app, &mut spec, &mut report);

    let mut annotations =
        BTreeMap::from([("statefulapp.io/marathon-id".to_string(), app.id.clone())]);
    if let Some(group) = &group {
        annotations.insert("statefulapp.io/marathon-group".into(), group.clone());
    }
    if !app.dependencies.is_empty() {
        annotations.insert(
            "statefulapp.io/marathon-dependencies".into(),
            app.dependencies.join(","),
        );
        report.dropped(
            "dependencies",
            "Kubernetes has no start order between apps (kept in annotation statefulapp.io/marathon-dependencies); let the app wait for its peers",
        );
    }
    if app.labels.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        annotations.insert(
            "statefulapp.io/marathon-labels".into(),
            serde_json::to_string(&app.labels).unwrap_or_default(),
        );
    }
    let mut metadata = json!({ "name": name, "labels": labels, "annotations": annotations });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    known_drops(input, &mut report);
    report.cover(input);
    if !report.refusals().is_empty() {
        return Err(ImportError::Refused(report));
    }
    let document = json!({
        "apiVersion": "statefulapp.io/v1alpha1",
        "kind": "StatefulApp",
        "metadata": metadata,
        "spec": spec,
    });
    let app: StatefulApp =
        serde_json::from_value(document).map_err(|e| ImportError::Internal(e.to_string()))?;
    Ok(Imported {
        workload: Workload::StatefulApp(Box::new(app)),
        services,
        report,
    })
}

/// The environment: Marathon's own variables, then the app's (which win).
fn environment(
    name: &str,
    resident: bool,
    app: &MarathonApp,
    container: &super::app::Container,
    ports: &[super::ports::Port],
    relative: &[(String, String)],
    report: &mut Report,
) -> Vec<Value> {
    let mut env: Vec<Value> = Vec::new();
    let set = |env: &mut Vec<Value>, entry: Value| {
        env.retain(|e| e["name"] != entry["name"]);
        env.push(entry);
    };
    set(
        &mut env,
        json!({ "name": "MESOS_SANDBOX", "value": SANDBOX }),
    );
    set(
        &mut env,
        json!({ "name": "MARATHON_APP_ID", "value": app.id }),
    );
    set(
        &mut env,
        json!({ "name": "HOST", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }),
    );
    if resident {
        // The instance id has the task id's shape: `<app>.<uuid>`, the uuid
        // being the pod's instance label.
        set(
            &mut env,
            json!({ "name": "STATEFULAPP_INSTANCE_UUID", "valueFrom": { "fieldRef": {
                "fieldPath": "metadata.labels['statefulapp.io/instance']" } } }),
        );
        set(
            &mut env,
            json!({ "name": "MESOS_TASK_ID", "value": format!("{name}.$(STATEFULAPP_INSTANCE_UUID)") }),
        );
    } else {
        set(
            &mut env,
            json!({ "name": "MESOS_TASK_ID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        );
    }
    if let Some(image) = container.docker.as_ref().and_then(|d| d.image.as_ref()) {
        set(
            &mut env,
            json!({ "name": "MARATHON_APP_DOCKER_IMAGE", "value": literal(image) }),
        );
    }
    // Marathon's defaults when the app leaves them out.
    for (key, value) in [
        ("CPUS", format!("{:?}", app.cpus.unwrap_or(1.0))),
        ("MEM", format!("{:?}", app.mem.unwrap_or(128.0))),
        ("DISK", format!("{:?}", app.disk.unwrap_or(0.0))),
        ("GPUS", format!("{}", app.gpus.unwrap_or(0.0).ceil() as i64)),
    ] {
        set(
            &mut env,
            json!({ "name": format!("MARATHON_APP_RESOURCE_{key}"), "value": value }),
        );
    }
    let label_names: Vec<String> = app.labels.keys().map(|k| env_suffix(k)).collect();
    if !label_names.is_empty() {
        set(
            &mut env,
            json!({ "name": "MARATHON_APP_LABELS", "value": label_names.join(" ") }),
        );
    }
    for (key, value) in &app.labels {
        set(
            &mut env,
            json!({ "name": format!("MARATHON_APP_LABEL_{}", env_suffix(key)), "value": literal(value) }),
        );
    }
    for (key, value) in port_env(ports) {
        set(&mut env, json!({ "name": key, "value": value }));
    }
    for (key, value) in &app.env {
        let field = format!("env.{key}");
        match value {
            Value::String(s) => {
                let (value, note) = sandbox_path(s, relative);
                match note {
                    Some(note) if value != *s => {
                        report.rewritten(field, format!("{key}={value}: {note}"))
                    }
                    Some(note) => report.exact(field, format!("{key}={value}: {note}")),
                    None => report.exact(field, "env"),
                }
                set(&mut env, json!({ "name": key, "value": literal(&value) }));
            }
            Value::Object(o) if o.contains_key("secret") => {
                let secret = o.get("secret").and_then(Value::as_str).unwrap_or_default();
                match secret_ref(secret, &app.secrets) {
                    Some((secret_name, detail)) => {
                        report.rewritten(
                            field,
                            format!("valueFrom.secretKeyRef {secret_name}/value ({detail})"),
                        );
                        set(
                            &mut env,
                            json!({ "name": key, "valueFrom": { "secretKeyRef": { "name": secret_name, "key": "value" } } }),
                        );
                    }
                    None => report.refused(
                        field,
                        format!("names secret {secret:?}, which secrets does not define"),
                    ),
                }
            }
            other => {
                report.rewritten(field, format!("{key}={other} as a string"));
                set(
                    &mut env,
                    json!({ "name": key, "value": literal(&other.to_string()) }),
                );
            }
        }
    }
    for (key, secret) in &app.secrets {
        let used = app
            .env
            .values()
            .any(|v| v.get("secret").and_then(Value::as_str) == Some(key))
            || container
                .volumes
                .iter()
                .any(|v| v.secret.as_deref() == Some(key));
        if !used {
            report.dropped(
                format!("secrets.{key}"),
                format!(
                    "not used by env or volumes (source {:?})",
                    secret.source.as_deref().unwrap_or("")
                ),
            );
        } else {
            report.rewritten(
                format!("secrets.{key}"),
                format!(
                    "a reference to Kubernetes Secret {} (key value): create it from the secret store; no value is copied",
                    secret_name(secret.source.as_deref().unwrap_or(key))
                ),
            );
        }
    }
    env
}

/// Health checks as liveness (and readiness) probes, readiness checks as
/// readiness probes.
fn checks(app: &MarathonApp, ports: &[super::ports::Port], main: &mut Value, report: &mut Report) {
    for (i, check) in app.health_checks.iter().enumerate() {
        let field = format!("healthChecks[{i}]");
        if i > 0 {
            report.dropped(
                field,
                "a container has one liveness probe: only healthChecks[0] is kept",
            );
            continue;
        }
        if let Some(probe) = health_probe(check, ports, &field, report) {
            report.rewritten(
                field,
                "livenessProbe, and readinessProbe unless readinessChecks (Marathon routes only to healthy tasks); gracePeriodSeconds -> initialDelaySeconds, intervalSeconds -> periodSeconds, maxConsecutiveFailures -> failureThreshold",
            );
            if app.readiness_checks.is_empty() {
                let mut readiness = probe.clone();
                if let Some(o) = readiness.as_object_mut() {
                    o.remove("initialDelaySeconds");
                }
                main["readinessProbe"] = readiness;
            }
            main["livenessProbe"] = probe;
        }
    }
    for (i, check) in app.readiness_checks.iter().enumerate() {
        let field = format!("readinessChecks[{i}]");
        if i > 0 {
            report.dropped(
                field,
                "a container has one readiness probe: only readinessChecks[0] is kept",
            );
            continue;
        }
        if let Some(probe) = readiness_probe(check, ports, &field, report) {
            report.exact(field, "readinessProbe");
            main["readinessProbe"] = probe;
        }
    }
}

/// The label a Deployment made from a stateless app selects its pods by.
const DEPLOYMENT_SELECTOR: &str = "app.kubernetes.io/name";

struct DeploymentParts<'a> {
    input: &'a Value,
    app: &'a MarathonApp,
    name: &'a str,
    group: Option<&'a str>,
    namespace: Option<&'a str>,
    labels: BTreeMap<String, String>,
    pod_spec: Value,
    services: Vec<Value>,
    report: Report,
}

/// A stateless app (no persistent volume), on request, as a Deployment.
fn deployment(parts: DeploymentParts) -> Result<Imported, ImportError> {
    let DeploymentParts {
        input,
        app,
        name,
        group,
        namespace,
        labels,
        pod_spec,
        services,
        mut report,
    } = parts;
    let instances = app.instances.unwrap_or(1);
    let mut spec = json!({
        "replicas": instances,
        "selector": { "matchLabels": { DEPLOYMENT_SELECTOR: name } },
        "template": { "metadata": { "labels": labels }, "spec": pod_spec },
    });
    spec["template"]["metadata"]["labels"][DEPLOYMENT_SELECTOR] = json!(name);
    if let Some(upgrade) = &app.upgrade_strategy {
        // Marathon keeps ceil(n * minimumHealthCapacity) healthy and starts
        // at most floor(n * maximumOverCapacity) extra.
        let health = upgrade
            .minimum_health_capacity
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let over = upgrade.maximum_over_capacity.unwrap_or(1.0).clamp(0.0, 1.0);
        let n = f64::from(instances.max(0));
        let unavailable = n as i64 - (n * health).ceil() as i64;
        let mut surge = (n * over).floor() as i64;
        if unavailable == 0 && surge == 0 {
            surge = 1;
            report.approximated(
                "upgradeStrategy",
                "maxSurge 1, maxUnavailable 0: a Deployment must be allowed one of them",
            );
        } else {
            report.exact(
                "upgradeStrategy",
                format!("rollingUpdate maxUnavailable {unavailable}, maxSurge {surge}"),
            );
        }
        spec["strategy"] = json!({ "type": "RollingUpdate",
            "rollingUpdate": { "maxUnavailable": unavailable, "maxSurge": surge } });
    }
    for field in ["killSelection", "residency", "unreachableStrategy"] {
        if input.get(field).is_some() {
            report.dropped(
                field,
                "a Deployment chooses which pods to remove, and replaces pods of a lost node after its not-ready toleration (300 s by default)",
            );
        }
    }
    let mut annotations =
        BTreeMap::from([("statefulapp.io/marathon-id".to_string(), app.id.clone())]);
    if let Some(group) = group {
        annotations.insert("statefulapp.io/marathon-group".into(), group.to_string());
    }
    if !app.dependencies.is_empty() {
        annotations.insert(
            "statefulapp.io/marathon-dependencies".into(),
            app.dependencies.join(","),
        );
        report.dropped(
            "dependencies",
            "Kubernetes has no start order between apps (kept in annotation statefulapp.io/marathon-dependencies)",
        );
    }
    let mut metadata = json!({ "name": name, "annotations": annotations });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    known_drops(input, &mut report);
    report.cover(input);
    if !report.refusals().is_empty() {
        return Err(ImportError::Refused(report));
    }
    let document = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec });
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(document).map_err(|e| ImportError::Internal(e.to_string()))?;
    Ok(Imported {
        workload: Workload::Deployment(Box::new(deployment)),
        services,
        report,
    })
}

/// A string the kubelet passes on as Marathon did: it expands `$(VAR)` and
/// turns `$$` into `$` in commands, args and env values; Mesos expanded
/// nothing (the shell of `cmd` still does).
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && matches!(chars.peek(), Some('$' | '(')) {
            out.push('$');
        }
    }
    out
}

/// Fields that are dropped for a reason worth saying.
fn known_drops(input: &Value, report: &mut Report) {
    let reasons = [
        (
            "backoffSeconds",
            "the kubelet applies its own restart back-off",
        ),
        (
            "backoffFactor",
            "the kubelet applies its own restart back-off",
        ),
        (
            "maxLaunchDelaySeconds",
            "the kubelet applies its own restart back-off",
        ),
        (
            "requirePorts",
            "ports are the container's own (a pod has its own IP)",
        ),
        ("executor", "Kubernetes has no Mesos executors"),
        ("role", "Mesos roles do not exist on Kubernetes"),
        (
            "container.docker.parameters",
            "raw docker run flags: set the equivalent in the pod template",
        ),
        ("storeUrls", "no equivalent"),
        ("ipAddress", "the pod network gives each pod an IP"),
    ];
    for (field, why) in reasons {
        let value = field.split('.').try_fold(input, |v, k| v.get(k));
        if value.is_some() {
            report.dropped(field, why);
        }
    }
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

fn resources(app: &MarathonApp, report: &mut Report) -> Value {
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(cpus) = app.cpus {
        let cpu = format!("{}m", (cpus * 1000.0).round() as i64);
        requests.insert("cpu".into(), json!(cpu));
        report.exact(
            "cpus",
            format!("requests.cpu {cpu} (a share, as Mesos' cpus)"),
        );
    }
    if let Some(mem) = app.mem {
        let memory = json!(format!("{}Mi", mem.ceil() as i64));
        requests.insert("memory".into(), memory.clone());
        // Mesos enforces mem as a hard limit.
        limits.insert("memory".into(), memory.clone());
        report.exact(
            "mem",
            format!(
                "requests and limits memory {}",
                memory.as_str().unwrap_or_default()
            ),
        );
    }
    if let Some(disk) = app.disk {
        if disk > 0.0 {
            let storage = json!(format!("{}Mi", disk.ceil() as i64));
            requests.insert("ephemeral-storage".into(), storage.clone());
            limits.insert("ephemeral-storage".into(), storage);
            report.exact(
                "disk",
                format!(
                    "ephemeral-storage {}Mi (the sandbox's disk)",
                    disk.ceil() as i64
                ),
            );
        } else {
            report.exact("disk", "0: no sandbox disk asked");
        }
    }
    if let Some(gpus) = app.gpus {
        if gpus > 0.0 {
            let gpus = json!(gpus.ceil() as i64);
            requests.insert("nvidia.com/gpu".into(), gpus.clone());
            limits.insert("nvidia.com/gpu".into(), gpus);
            report.rewritten(
                "gpus",
                "nvidia.com/gpu (the NVIDIA device plugin's resource)",
            );
        } else {
            report.exact("gpus", "0: no GPU");
        }
    }
    json!({ "requests": requests, "limits": limits })
}

fn node_loss(app: &MarathonApp, spec: &mut Value, report: &mut Report) {
    let from_residency =
        app.residency
            .as_ref()
            .map(|residency| match residency.task_lost_behavior.as_deref() {
                None | Some("WAIT_FOREVER") => Ok(json!({ "action": "Wait" })),
                Some("RELAUNCH_AFTER_TIMEOUT") => Ok(json!({
                    "action": "Replace",
                    "afterSeconds": residency.relaunch_escalation_timeout_seconds.unwrap_or(3600),
                })),
                Some(other) => Err(format!("unknown taskLostBehavior {other:?}")),
            });
    let from_unreachable = app
        .unreachable_strategy
        .as_ref()
        .map(|strategy| match strategy {
            Value::String(s) if s == "disabled" => Ok(json!({ "action": "Wait" })),
            Value::Object(o) => match o.get("inactiveAfterSeconds").and_then(Value::as_i64) {
                Some(after) => Ok(json!({ "action": "Replace", "afterSeconds": after })),
                None => Ok(json!({ "action": "Replace", "afterSeconds": 0 })),
            },
            other => Err(format!("unknown unreachableStrategy {other}")),
        });
    // unreachableStrategy superseded residency.taskLostBehavior in Marathon.
    match (from_residency, from_unreachable) {
        (_, Some(Err(e))) => report.refused("unreachableStrategy", e),
        (Some(Err(e)), _) => report.refused("residency.taskLostBehavior", e),
        (residency, Some(Ok(policy))) => {
            report.exact("unreachableStrategy", format!("nodeLossPolicy {policy}"));
            if let Some(Ok(r)) = residency {
                if r == policy {
                    report.exact("residency", format!("nodeLossPolicy {r}"));
                } else {
                    report.dropped(
                        "residency",
                        "superseded by unreachableStrategy, as in Marathon",
                    );
                }
            }
            spec["nodeLossPolicy"] = policy;
        }
        (Some(Ok(policy)), None) => {
            report.exact("residency", format!("nodeLossPolicy {policy}"));
            spec["nodeLossPolicy"] = policy;
        }
        (None, None) => {}
    }
}

fn apply_placement(placement: super::constraints::Placement, pod_spec: &mut Value) {
    let mut affinity = json!({});
    if !placement.node_terms.is_empty() {
        affinity["nodeAffinity"] = json!({ "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{ "matchExpressions": placement.node_terms }] } });
    }
    if !placement.pod_affinity.is_empty() {
        affinity["podAffinity"] =
            json!({ "requiredDuringSchedulingIgnoredDuringExecution": placement.pod_affinity });
    }
    if !placement.anti_affinity.is_empty() {
        affinity["podAntiAffinity"] =
            json!({ "requiredDuringSchedulingIgnoredDuringExecution": placement.anti_affinity });
    }
    if affinity.as_object().is_some_and(|o| !o.is_empty()) {
        pod_spec["affinity"] = affinity;
    }
    if !placement.spread.is_empty() {
        pod_spec["topologySpreadConstraints"] = json!(placement.spread);
    }
}

/// Labels valid on Kubernetes; per label Ok(kept) or Err(how it changed).
#[allow(clippy::type_complexity)]
fn sanitize_labels(
    labels: &BTreeMap<String, String>,
) -> (
    BTreeMap<String, String>,
    Vec<(String, Result<String, String>)>,
) {
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
    let mut notes = Vec::new();
    for (key, value) in labels {
        let (k, v) = (clean(key), clean(value));
        if k.is_empty() {
            notes.push((
                key.clone(),
                Err(
                    "not a valid label key: only in annotation statefulapp.io/marathon-labels"
                        .to_string(),
                ),
            ));
            continue;
        }
        if &k != key || &v != value {
            notes.push((
                key.clone(),
                Err(format!(
                    "label {k}={v}; the original in annotation statefulapp.io/marathon-labels"
                )),
            ));
        } else {
            notes.push((key.clone(), Ok(format!("label {k}={v}"))));
        }
        out.insert(k, v);
    }
    (out, notes)
}

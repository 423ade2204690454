//! Ports as Marathon gave them (`portDefinitions`, `portMappings`,
//! `container.docker.portMappings`): container ports chosen
//! deterministically, the environment Marathon set, Services for
//! `servicePort`s and VIP labels, and health and readiness checks as probes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::app::{HealthCheck, MarathonApp, PortMapping, ReadinessCheck};
use super::report::Report;
use crate::names::is_dns_label;

/// Where chosen ports start: the first port of a Mesos agent's default
/// range, which is where Marathon's `0` ports used to land.
const FIRST_CHOSEN_PORT: i32 = 31000;

#[derive(Debug, Clone)]
pub struct Port {
    pub container_port: i32,
    pub host_port: Option<i32>,
    pub service_port: Option<i32>,
    pub name: Option<String>,
    /// The name as Marathon had it (for `PORT_<NAME>`).
    pub marathon_name: Option<String>,
    /// The port number the definition asked for (0 is none).
    pub requested: Option<i32>,
    pub protocol: &'static str,
    /// Named VIP (`VIP_n: /name:port`): (Service name, port).
    pub vip: Option<(String, i32)>,
}

/// The app's ports, in Marathon's order (`PORT0` is the first).
pub fn ports(app: &MarathonApp, report: &mut Report) -> Vec<Port> {
    let container = app.container.as_ref();
    let sources: [(&str, &[PortMapping], bool); 3] = [
        (
            "container.portMappings",
            container.map(|c| c.port_mappings.as_slice()).unwrap_or(&[]),
            true,
        ),
        (
            "container.docker.portMappings",
            container
                .and_then(|c| c.docker.as_ref())
                .map(|d| d.port_mappings.as_slice())
                .unwrap_or(&[]),
            true,
        ),
        ("portDefinitions", app.port_definitions.as_slice(), false),
    ];
    let used: BTreeSet<i32> = sources
        .iter()
        .flat_map(|(_, list, mapping)| {
            list.iter()
                .filter_map(move |p| if *mapping { p.container_port } else { p.port })
        })
        .filter(|p| *p > 0)
        .collect();
    let mut next_free = FIRST_CHOSEN_PORT;
    let mut out = Vec::new();
    for (source, list, mapping) in sources {
        for (i, p) in list.iter().enumerate() {
            let field = format!("{source}[{i}]");
            let asked = if mapping { p.container_port } else { p.port }.unwrap_or(0);
            let container_port = if asked > 0 {
                if mapping {
                    report.exact(
                        format!("{field}.containerPort"),
                        format!("containerPort {asked}"),
                    );
                } else {
                    // A portDefinition's port is also its service port.
                    report.rewritten(
                        format!("{field}.port"),
                        format!("containerPort {asked}, and port {asked} of the app's Service (the service port)"),
                    );
                }
                asked
            } else {
                while used.contains(&next_free) {
                    next_free += 1;
                }
                let chosen = next_free;
                next_free += 1;
                report.rewritten(
                    format!("{field}.{}", if mapping { "containerPort" } else { "port" }),
                    format!(
                        "0 (Marathon picked a random port): containerPort {chosen}, chosen in order from {FIRST_CHOSEN_PORT}; the app reads it from $PORT{}",
                        out.len()
                    ),
                );
                chosen
            };
            let lowered = p.protocol.as_deref().map(str::to_ascii_lowercase);
            let protocol = match lowered.as_deref() {
                None | Some("tcp") | Some("udp") => {
                    let protocol = if lowered.as_deref() == Some("udp") {
                        "UDP"
                    } else {
                        "TCP"
                    };
                    if p.protocol.is_some() {
                        report.exact(format!("{field}.protocol"), protocol);
                    }
                    protocol
                }
                Some("udp,tcp") | Some("tcp,udp") => {
                    report.approximated(
                        format!("{field}.protocol"),
                        "TCP only: a Kubernetes port has one protocol; add a UDP port of the same number if needed",
                    );
                    "TCP"
                }
                Some(other) => {
                    report.refused(
                        format!("{field}.protocol"),
                        format!("unknown protocol {other:?}"),
                    );
                    "TCP"
                }
            };
            let name = match &p.name {
                Some(n) if is_dns_label(n) && n.len() <= 15 => {
                    report.exact(
                        format!("{field}.name"),
                        format!("port name {n}, env PORT_{}", env_suffix(n)),
                    );
                    Some(n.clone())
                }
                Some(n) => {
                    let cleaned = port_name(n);
                    report.rewritten(
                        format!("{field}.name"),
                        format!("port name {cleaned:?} (a Kubernetes port name is a DNS label of at most 15 characters); env PORT_{} keeps the original", env_suffix(n)),
                    );
                    Some(cleaned).filter(|c| !c.is_empty())
                }
                None => None,
            };
            let host_port = p.host_port.filter(|h| *h > 0);
            match p.host_port {
                Some(0) => report.exact(
                    format!("{field}.hostPort"),
                    "0: no host port (a pod is reached at its own IP)",
                ),
                Some(h) if h > 0 => {
                    report.exact(format!("{field}.hostPort"), format!("hostPort {h}"))
                }
                Some(h) => {
                    report.refused(format!("{field}.hostPort"), format!("invalid hostPort {h}"))
                }
                None => {}
            }
            let service_port = if mapping { p.service_port } else { p.port }.filter(|s| *s > 0);
            if mapping && let Some(s) = p.service_port {
                if s > 0 {
                    report.rewritten(
                        format!("{field}.servicePort"),
                        format!("port {s} of Service of the app"),
                    );
                } else {
                    report.exact(format!("{field}.servicePort"), "0: no Service port asked");
                }
            }
            let mut vip = None;
            for (key, value) in &p.labels {
                let label_field = format!("{field}.labels.{key}");
                if key.starts_with("VIP_") {
                    match parse_vip(value) {
                        Some(Vip::Named(name, port)) => {
                            report.rewritten(label_field, format!("Service {name}, port {port} (in-cluster DNS {name}.<namespace>.svc instead of {name}.marathon.l4lb.thisdcos.directory)"));
                            vip = Some((name, port));
                        }
                        Some(Vip::Address(port)) => {
                            report.rewritten(label_field, format!("port {port} of Service of the app (a VIP address is not kept: Kubernetes assigns the cluster IP)"));
                            vip = Some((String::new(), port));
                        }
                        None => report.refused(
                            label_field,
                            format!("VIP {value:?} is not /name:port or address:port"),
                        ),
                    }
                } else {
                    report.dropped(
                        label_field,
                        "port labels other than VIP_n have no Kubernetes equivalent",
                    );
                }
            }
            out.push(Port {
                container_port,
                host_port,
                service_port,
                name,
                marathon_name: p.name.clone(),
                requested: Some(asked).filter(|a| *a > 0),
                protocol,
                vip,
            });
        }
    }
    out
}

enum Vip {
    Named(String, i32),
    Address(i32),
}

fn parse_vip(value: &str) -> Option<Vip> {
    let (host, port) = value.rsplit_once(':')?;
    let port: i32 = port.parse().ok().filter(|p| (1..=65535).contains(p))?;
    if host.starts_with('/') {
        let name = dns_name(host.trim_matches('/'));
        (!name.is_empty()).then_some(Vip::Named(name, port))
    } else if host.parse::<std::net::IpAddr>().is_ok() {
        Some(Vip::Address(port))
    } else {
        None
    }
}

/// `/db/postgres` -> `db-postgres`.
pub fn dns_name(text: &str) -> String {
    let mapped: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut name = mapped.trim_matches('-').to_string();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

fn port_name(name: &str) -> String {
    let mut n = dns_name(name);
    n.truncate(15);
    let n = n.trim_end_matches('-').to_string();
    if n.starts_with(|c: char| c.is_ascii_digit()) || n.chars().all(|c| c.is_ascii_digit()) {
        format!("p{}", &n[..n.len().min(14)])
    } else {
        n
    }
}

pub fn env_suffix(name: &str) -> String {
    name.to_ascii_uppercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What Marathon put in a task's environment about its ports.
pub fn port_env(ports: &[Port]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), port.container_port.to_string()));
    }
    for port in ports {
        if let Some(requested) = port.requested {
            env.push((format!("PORT_{requested}"), port.container_port.to_string()));
        }
    }
    for port in ports {
        if let Some(name) = &port.marathon_name {
            env.push((
                format!("PORT_{}", env_suffix(name)),
                port.container_port.to_string(),
            ));
        }
    }
    if let Some(first) = ports.first() {
        env.push(("PORT".into(), first.container_port.to_string()));
        let all: Vec<String> = ports.iter().map(|p| p.container_port.to_string()).collect();
        env.push(("PORTS".into(), all.join(",")));
    }
    env
}

pub fn container_ports(ports: &[Port]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            let mut entry = json!({ "containerPort": p.container_port, "protocol": p.protocol });
            if let Some(name) = &p.name {
                entry["name"] = json!(name);
            }
            if let Some(h) = p.host_port {
                entry["hostPort"] = json!(h);
            }
            entry
        })
        .collect()
}

/// Services asked for by `servicePort`s (one named after the app) and by
/// named VIPs (one per VIP name).
pub fn services(
    app_name: &str,
    namespace: Option<&str>,
    ports: &[Port],
    selector_key: &str,
) -> Vec<Value> {
    let mut by_name: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let mut wanted = Vec::new();
        if let Some(s) = port.service_port {
            wanted.push((app_name.to_string(), s));
        }
        if let Some((name, p)) = &port.vip {
            let name = if name.is_empty() { app_name } else { name };
            wanted.push((name.to_string(), *p));
        }
        for (service, number) in wanted {
            let list = by_name.entry(service).or_default();
            if list
                .iter()
                .any(|p| p["port"] == json!(number) && p["protocol"] == json!(port.protocol))
            {
                continue;
            }
            let name = port.name.clone().unwrap_or_else(|| format!("port{i}"));
            list.push(json!({ "name": name, "port": number, "targetPort": port.container_port, "protocol": port.protocol }));
        }
    }
    by_name
        .into_iter()
        .map(|(name, ports)| {
            let mut metadata = json!({ "name": name, "labels": { selector_key: app_name } });
            if let Some(ns) = namespace {
                metadata["namespace"] = json!(ns);
            }
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": { "selector": { selector_key: app_name }, "ports": ports },
            })
        })
        .collect()
}

/// A Marathon health check as a probe; None (and a refusal) if it cannot be.
pub fn health_probe(
    check: &HealthCheck,
    ports: &[Port],
    field: &str,
    report: &mut Report,
) -> Option<Value> {
    let protocol = check.protocol.as_deref().unwrap_or("HTTP");
    let port = || -> Option<i32> {
        match (check.port, check.port_index) {
            (Some(p), _) if p > 0 => Some(p),
            (_, index) => ports.get(index.unwrap_or(0)).map(|p| p.container_port),
        }
    };
    let mut probe = match protocol {
        "HTTP" | "MESOS_HTTP" | "HTTPS" | "MESOS_HTTPS" | "TCP" | "MESOS_TCP" => {
            let Some(port) = port() else {
                report.refused(
                    field,
                    format!(
                        "{protocol} check on portIndex {} but the app has {} port(s)",
                        check.port_index.unwrap_or(0),
                        ports.len()
                    ),
                );
                return None;
            };
            if protocol.ends_with("TCP") {
                json!({ "tcpSocket": { "port": port } })
            } else {
                let scheme = if protocol.ends_with("HTTPS") {
                    "HTTPS"
                } else {
                    "HTTP"
                };
                json!({ "httpGet": { "path": check.path.clone().unwrap_or_else(|| "/".into()), "port": port, "scheme": scheme } })
            }
        }
        "COMMAND" | "MESOS_COMMAND" => {
            let Some(command) = check
                .command
                .as_ref()
                .and_then(|c| c.get("value").and_then(Value::as_str))
            else {
                report.refused(field, "COMMAND check without command.value");
                return None;
            };
            json!({ "exec": { "command": ["/bin/sh", "-c", super::convert::literal(command)] } })
        }
        other => {
            report.refused(field, format!("unknown health check protocol {other:?}"));
            return None;
        }
    };
    // Marathon ignores failures for the grace period, and MESOS_* checks
    // start after delaySeconds: no probe before the later of the two.
    let delay = check.grace_period_seconds.max(check.delay_seconds);
    if let Some(v) = delay {
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
    Some(probe)
}

/// A Marathon readiness check (HTTP/HTTPS on a named port) as a probe.
pub fn readiness_probe(
    check: &ReadinessCheck,
    ports: &[Port],
    field: &str,
    report: &mut Report,
) -> Option<Value> {
    let scheme = match check.protocol.as_deref().unwrap_or("HTTP") {
        "HTTP" => "HTTP",
        "HTTPS" => "HTTPS",
        other => {
            report.refused(
                format!("{field}.protocol"),
                format!("unknown readiness protocol {other:?}"),
            );
            return None;
        }
    };
    let port = match &check.port_name {
        Some(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
        None => ports.first().map(|p| p.container_port),
    };
    let Some(port) = port else {
        report.refused(
            format!("{field}.portName"),
            format!(
                "no port named {:?}",
                check.port_name.as_deref().unwrap_or("")
            ),
        );
        return None;
    };
    let mut probe = json!({ "httpGet": { "path": check.path.clone().unwrap_or_else(|| "/".into()), "port": port, "scheme": scheme } });
    if let Some(v) = check.interval_seconds {
        probe["periodSeconds"] = json!(v);
    }
    if let Some(v) = check.timeout_seconds {
        probe["timeoutSeconds"] = json!(v);
    }
    if let Some(codes) = &check.http_status_codes_for_ready {
        if codes.iter().all(|c| (200..400).contains(c)) {
            report.approximated(
                format!("{field}.httpStatusCodesForReady"),
                format!("{codes:?}: a probe accepts any status from 200 to 399"),
            );
        } else {
            report.refused(
                format!("{field}.httpStatusCodesForReady"),
                format!("{codes:?}: a probe accepts only statuses from 200 to 399"),
            );
        }
    }
    Some(probe)
}

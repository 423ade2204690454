//! The Mesos sandbox on Kubernetes: persistent volumes mounted where
//! Marathon mounted them, env values that name them made absolute, secret
//! files, and artifacts fetched into the sandbox.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::app::{Secret, Volume};
use super::ports::dns_name;
use super::report::Report;
use crate::names::{is_dns_label, pod_volume_name};

/// The task sandbox: Mesos mounts it here, makes it the working directory
/// and mounts each persistent volume with a relative `containerPath` in it.
pub const SANDBOX: &str = "/mnt/mesos/sandbox";

/// Where the volumes of an app go.
pub struct Mounts {
    /// `spec.volumes`.
    pub volumes: Vec<Value>,
    /// Extra mounts of the main container (a persistent volume also at its
    /// sandbox path, secret files).
    pub extra_mounts: Vec<Value>,
    /// Volumes of the pod template (secrets).
    pub pod_volumes: Vec<Value>,
    /// Relative containerPath -> the volume's name.
    pub relative: Vec<(String, String)>,
}

/// The persistent volumes (and secret files) of `container.volumes`.
pub fn volumes(
    volumes: &[Volume],
    secrets: &BTreeMap<String, Secret>,
    report: &mut Report,
) -> Mounts {
    let mut out = Mounts {
        volumes: Vec::new(),
        extra_mounts: Vec::new(),
        pod_volumes: Vec::new(),
        relative: Vec::new(),
    };
    for (i, volume) in volumes.iter().enumerate() {
        let field = format!("container.volumes[{i}]");
        let container_path = volume.container_path.clone().unwrap_or_default();
        let relative_path = container_path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let Some(persistent) = &volume.persistent else {
            continue;
        };
        let name = match volume_name(&relative_path) {
            Some(n) => n,
            None => {
                report.refused(
                    format!("{field}.containerPath"),
                    format!("cannot name a volume after {container_path:?}"),
                );
                continue;
            }
        };
        let sandbox_path = format!("{SANDBOX}/{relative_path}");
        // The documented trick: a host volume whose hostPath names this
        // volume's relative path mounts it at an absolute path too.
        let trick = volumes.iter().position(|v| {
            v.persistent.is_none()
                && v.host_path
                    .as_deref()
                    .map(|h| h.trim_start_matches("./").trim_end_matches('/'))
                    == Some(relative_path.as_str())
        });
        let mount_path = if container_path.starts_with('/') {
            report.exact(
                format!("{field}.containerPath"),
                format!("volume {name} at {container_path}"),
            );
            container_path.clone()
        } else if let Some(t) = trick {
            let absolute = volumes[t].container_path.clone().unwrap_or_default();
            report.exact(
                format!("{field}.containerPath"),
                format!("volume {name}, mounted at {sandbox_path} (in the sandbox, as on Mesos) and at {absolute}"),
            );
            report.exact(
                format!("container.volumes[{t}]"),
                format!("volume {name} also at {absolute}"),
            );
            out.extra_mounts
                .push(json!({ "name": pod_volume_name(&name), "mountPath": sandbox_path }));
            out.relative.push((relative_path.clone(), name.clone()));
            absolute
        } else {
            report.exact(
                format!("{field}.containerPath"),
                format!("volume {name} at {sandbox_path} (in the sandbox, the working directory, as on Mesos)"),
            );
            out.relative.push((relative_path.clone(), name.clone()));
            sandbox_path
        };
        match persistent.size {
            Some(size) if size > 0.0 => report.exact(
                format!("{field}.persistent.size"),
                format!("size {}Mi", size.ceil() as i64),
            ),
            _ => report.refused(
                format!("{field}.persistent.size"),
                "a persistent volume needs a size (MiB)",
            ),
        }
        match persistent.kind.as_deref() {
            None => {}
            Some("root") => report.exact(format!("{field}.persistent.type"), "root: a directory on the node's data disk"),
            Some(kind @ ("path" | "mount")) => report.approximated(
                format!("{field}.persistent.type"),
                format!("{kind}: a directory on the node's data disk (agent.baseDir), not a disk of its own; mount a dedicated disk there for the same isolation"),
            ),
            Some(other) => report.refused(format!("{field}.persistent.type"), format!("unknown persistent type {other:?}")),
        }
        if let Some(max) = persistent.max_size {
            report.dropped(
                format!("{field}.persistent.maxSize"),
                format!("{max} MiB: a volume gets exactly its size (enforced by a quota where the node's base dir supports it)"),
            );
        }
        if let Some(profile) = &persistent.profile_name {
            report.refused(
                format!("{field}.persistent.profileName"),
                format!("{profile:?}: StatefulApp volumes are node-local directories of the chart's StorageClass; there is no storage profile to choose"),
            );
        }
        if !persistent.constraints.is_empty() {
            report.refused(
                format!("{field}.persistent.constraints"),
                "disk constraints choose a Mesos disk resource; StatefulApp volumes live on the node's data disk",
            );
        }
        match volume.mode.as_deref() {
            None | Some("RW") => {
                if volume.mode.is_some() {
                    report.exact(format!("{field}.mode"), "read-write");
                }
            }
            Some(mode) => report.refused(
                format!("{field}.mode"),
                format!("{mode}: persistent volumes are mounted read-write"),
            ),
        }
        out.volumes.push(json!({ "name": name, "size": format!("{}Mi", persistent.size.unwrap_or(1.0).ceil().max(1.0) as i64), "mountPath": mount_path }));
    }
    for (i, volume) in volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| v.persistent.is_none())
    {
        let field = format!("container.volumes[{i}]");
        let path = volume.container_path.clone().unwrap_or_default();
        if let Some(secret) = &volume.secret {
            let source = secrets.get(secret).and_then(|s| s.source.clone());
            match source {
                Some(source) => {
                    let secret_name = secret_name(&source);
                    let pod_volume = format!("secret-{}", dns_name(secret));
                    let mount = if path.starts_with('/') {
                        path.clone()
                    } else {
                        format!("{SANDBOX}/{path}")
                    };
                    out.pod_volumes.push(
                        json!({ "name": pod_volume, "secret": { "secretName": secret_name } }),
                    );
                    out.extra_mounts.push(json!({ "name": pod_volume, "mountPath": mount, "subPath": "value", "readOnly": true }));
                    report.rewritten(
                        field,
                        format!("the file {mount} from key value of Secret {secret_name}"),
                    );
                }
                None => report.refused(
                    field,
                    format!("names secret {secret:?}, which secrets does not define"),
                ),
            }
            continue;
        }
        if volume.external.is_some() {
            report.refused(
                field,
                format!("external volume {path:?}: use a PersistentVolumeClaim of a network StorageClass (a Deployment or StatefulSet)"),
            );
            continue;
        }
        if out
            .extra_mounts
            .iter()
            .chain(&out.volumes)
            .any(|m| m["mountPath"].as_str() == volume.container_path.as_deref())
        {
            continue; // the trick, reported with its persistent volume
        }
        report.refused(
            field,
            format!(
                "host volume {path:?} -> {:?}: a node's own paths are not portable; use a persistent volume",
                volume.host_path.as_deref().unwrap_or("")
            ),
        );
    }
    out
}

/// An env value that names a path in the sandbox, made absolute; and where
/// it lands.
pub fn sandbox_path(value: &str, relative: &[(String, String)]) -> (String, Option<String>) {
    let expanded = ["${MESOS_SANDBOX}", "$MESOS_SANDBOX"]
        .iter()
        .find_map(|p| value.strip_prefix(p).map(|rest| format!("{SANDBOX}{rest}")));
    let candidate = expanded.clone().unwrap_or_else(|| value.to_string());
    let inside = |path: &str| -> Option<String> {
        let rest = path.strip_prefix(SANDBOX)?.strip_prefix('/')?;
        relative.iter().find_map(|(rel, volume)| {
            (rest == rel || rest.starts_with(&format!("{rel}/"))).then(|| volume.clone())
        })
    };
    if candidate.starts_with('/') {
        return match (inside(&candidate), expanded.is_some()) {
            (Some(volume), true) => (
                candidate,
                Some(format!(
                    "$MESOS_SANDBOX made absolute: inside volume {volume}"
                )),
            ),
            (Some(volume), false) => (candidate, Some(format!("inside volume {volume}"))),
            (None, true) => (candidate, Some("$MESOS_SANDBOX made absolute".into())),
            (None, false) => (candidate, None),
        };
    }
    let trimmed = candidate.trim_start_matches("./");
    let absolute = format!("{SANDBOX}/{trimmed}");
    match inside(&absolute) {
        Some(volume) => (
            absolute,
            Some(format!(
                "a path relative to the sandbox, made absolute: inside volume {volume}"
            )),
        ),
        None => (value.to_string(), None),
    }
}

/// Kubernetes Secret name for a Marathon secret store path.
pub fn secret_name(source: &str) -> String {
    let name = dns_name(source);
    if name.is_empty() {
        "marathon-secret".into()
    } else {
        name
    }
}

pub fn secret_ref(secret: &str, secrets: &BTreeMap<String, Secret>) -> Option<(String, String)> {
    let source = secrets.get(secret)?.source.clone()?;
    Some((
        secret_name(&source),
        format!("secret {secret}, source {source}"),
    ))
}

pub fn fetch_script(fetches: &[(String, bool, bool, Option<String>)]) -> String {
    let mut lines = vec!["set -e".to_string()];
    for (uri, extract, executable, dest) in fetches {
        let file = dest.clone().unwrap_or_else(|| {
            uri.rsplit('/')
                .next()
                .unwrap_or("artifact")
                .split('?')
                .next()
                .unwrap_or("artifact")
                .to_string()
        });
        let quoted = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        lines.push(format!("wget -q -O {} {}", quoted(&file), quoted(uri)));
        let archive = [".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"]
            .iter()
            .any(|s| file.ends_with(s));
        if *extract && archive {
            if file.ends_with(".zip") {
                lines.push(format!("unzip -o {}", quoted(&file)));
            } else {
                lines.push(format!("tar xf {}", quoted(&file)));
            }
        }
        if *executable {
            lines.push(format!("chmod +x {}", quoted(&file)));
        }
    }
    lines.join("\n")
}

/// `pgdata` -> `pgdata`, `data/db` -> `data-db`.
fn volume_name(container_path: &str) -> Option<String> {
    let mut name = dns_name(container_path);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "v-");
    }
    name.truncate(32);
    let name = name.trim_end_matches('-').to_string();
    is_dns_label(&name).then_some(name)
}

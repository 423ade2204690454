//! Import of Marathon app definitions and group exports (JSON) as
//! StatefulApps, for teams leaving DC/OS. Pure: text and the facts the
//! caller gathered (node labels, uid names) in; objects and a report of
//! every input field out. Cluster access stays with the caller.

mod app;
mod constraints;
mod convert;
mod ports;
pub mod report;
mod sandbox;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::api::StatefulApp;
pub use constraints::NodeLabels;
pub use report::{Outcome, Report, Verdict};

/// What the caller knows beyond the JSON.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Namespace of a single app, and of the root group's apps.
    pub namespace: Option<String>,
    /// Group id (`/prod/db`) -> namespace, overriding one namespace per group.
    pub namespace_map: BTreeMap<String, String>,
    /// Labels of the live nodes, for `LIKE`/`UNLIKE` regexes; None offline.
    pub nodes: Option<Vec<BTreeMap<String, String>>>,
    /// User names -> uids (`user`).
    pub users: BTreeMap<String, i64>,
    /// Image of an init container that downloads `fetch` URIs.
    pub fetch_image: Option<String>,
    /// Import stateless apps (no persistent volume) as Deployments instead
    /// of skipping them.
    pub deployments: bool,
}

/// What an app became.
pub enum Workload {
    StatefulApp(Box<StatefulApp>),
    /// A stateless app, when asked for (`Options::deployments`).
    Deployment(Box<k8s_openapi::api::apps::v1::Deployment>),
}

/// One app, imported.
pub struct Imported {
    pub workload: Workload,
    /// Services its `servicePort`s and VIP labels ask for.
    pub services: Vec<Value>,
    pub report: Report,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a Marathon app definition or group export: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "app id {0:?}: its last segment must be a DNS label of at most 40 characters starting with a letter"
    )]
    InvalidId(String),
    #[error(
        "app {0}: not resident (no persistent volume in container.volumes); a StatefulApp needs one, use a Deployment for stateless apps"
    )]
    NotResident(String),
    #[error("cannot import {}: {}", .0.app, .0.refusals().iter().map(|e| format!("{}: {}", e.field, e.detail)).collect::<Vec<_>>().join("; "))]
    Refused(Report),
    #[error("the imported app is not a valid StatefulApp: {0}")]
    Internal(String),
}

/// One app as a StatefulApp.
pub struct ImportedApp {
    pub app: StatefulApp,
    /// Services its `servicePort`s and VIP labels ask for.
    pub services: Vec<Value>,
    pub report: Report,
}

/// Converts one resident Marathon app definition into a StatefulApp in
/// `namespace`.
pub fn import_app(json: &str, options: &Options) -> Result<ImportedApp, ImportError> {
    let value: Value = serde_json::from_str(json)?;
    let options = Options {
        deployments: false,
        ..options.clone()
    };
    let imported = convert::convert(&value, &options, options.namespace.as_deref())?;
    match imported.workload {
        Workload::StatefulApp(app) => Ok(ImportedApp {
            app: *app,
            services: imported.services,
            report: imported.report,
        }),
        Workload::Deployment(_) => Err(ImportError::Internal("a stateless app".into())),
    }
}

/// An app of an import that was not imported, and why.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct NotImported {
    pub app: String,
    pub reason: String,
}

/// The result of importing an app or a whole group export.
#[derive(Default)]
pub struct Export {
    /// Namespaces, Services and StatefulApps, in the order to apply them.
    pub objects: Vec<Value>,
    /// One report per app that was converted or refused field by field.
    pub reports: Vec<Report>,
    /// Apps not resident (stateless): listed, not imported.
    pub skipped: Vec<NotImported>,
    /// Apps refused (with their report in `reports` when field by field).
    pub refused: Vec<NotImported>,
    /// The groups' own fields (not their apps'), one report per group.
    pub groups: Vec<Report>,
}

impl Export {
    /// Whether a refusal would go away with the cluster's node labels.
    pub fn needs_nodes(&self) -> bool {
        self.reports.iter().any(|r| {
            r.refusals()
                .iter()
                .any(|e| e.detail.contains(constraints::NEEDS_NODES))
        })
    }

    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let verdicts: Vec<Verdict> = self.reports.iter().map(Report::verdict).collect();
        BTreeMap::from([
            (
                "exact",
                verdicts.iter().filter(|v| **v == Verdict::Exact).count(),
            ),
            (
                "withRewrites",
                verdicts
                    .iter()
                    .filter(|v| **v == Verdict::WithRewrites)
                    .count(),
            ),
            ("refused", self.refused.len()),
            ("skipped", self.skipped.len()),
        ])
    }
}

/// Imports one app definition, or a group export (`GET /v2/groups`: nested
/// `groups` and `apps`) with one namespace per group.
pub fn import(json: &str, options: &Options) -> Result<Export, ImportError> {
    let value: Value = serde_json::from_str(json)?;
    let mut export = Export::default();
    let is_group =
        value.get("apps").is_some() || value.get("groups").is_some() || value.get("pods").is_some();
    if !is_group {
        add_app(&value, options, options.namespace.as_deref(), &mut export);
        return Ok(export);
    }
    let mut apps = Vec::new();
    collect(&value, &mut apps, &mut export);
    let mut namespaces = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (group, app) in apps {
        let namespace = namespace_of(&group, options);
        let id = app
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !names.insert((namespace.clone(), name.clone())) {
            export.refused.push(NotImported {
                app: id,
                reason: format!(
                    "another app of namespace {} is named {name} already",
                    namespace.as_deref().unwrap_or("(default)")
                ),
            });
            continue;
        }
        if add_app(&app, options, namespace.as_deref(), &mut export)
            && let Some(ns) = namespace
            && Some(&ns) != options.namespace.as_ref()
        {
            namespaces.insert(ns);
        }
    }
    let namespace_docs = namespaces
        .into_iter()
        .map(|ns| json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }));
    export.objects.splice(0..0, namespace_docs);
    Ok(export)
}

/// Converts one app into `export`; true if it was imported.
fn add_app(app: &Value, options: &Options, namespace: Option<&str>, export: &mut Export) -> bool {
    let id = app
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("(no id)")
        .to_string();
    match convert::convert(app, options, namespace) {
        Ok(imported) => {
            export.objects.extend(imported.services);
            let object = match &imported.workload {
                Workload::StatefulApp(app) => serde_json::to_value(app),
                Workload::Deployment(deployment) => serde_json::to_value(deployment),
            };
            export.objects.push(object.unwrap_or_default());
            export.reports.push(imported.report);
            true
        }
        Err(ImportError::NotResident(_)) => {
            export.skipped.push(NotImported {
                app: id,
                reason: "not resident (no persistent volume): a stateless app, for a Deployment"
                    .into(),
            });
            false
        }
        Err(ImportError::Refused(report)) => {
            let reason = ImportError::Refused(report.clone()).to_string();
            export.refused.push(NotImported { app: id, reason });
            export.reports.push(report);
            false
        }
        Err(e) => {
            export.refused.push(NotImported {
                app: id,
                reason: e.to_string(),
            });
            false
        }
    }
}

/// Every app of a group export with its group id.
fn collect(group: &Value, apps: &mut Vec<(String, Value)>, export: &mut Export) {
    let id = group
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    export.groups.push(group_report(&id, group));
    for app in group
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let app_id = app.get("id").and_then(Value::as_str).unwrap_or_default();
        // Apps of an export carry absolute ids; a relative one is in this group.
        let mut app = app.clone();
        match app.as_object_mut() {
            Some(fields) if !app_id.starts_with('/') => {
                let absolute = format!("{}/{app_id}", id.trim_end_matches('/'));
                fields.insert("id".into(), json!(absolute));
            }
            Some(_) => {}
            None => {
                export.refused.push(NotImported {
                    app: format!("{id}: {app}"),
                    reason: "not an app definition (a JSON object)".into(),
                });
                continue;
            }
        }
        apps.push((id.clone(), app));
    }
    for pod in group
        .get("pods")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        export.skipped.push(NotImported {
            app: pod
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("(no id)")
                .to_string(),
            reason: "a Marathon pod (/v2/pods): not imported; only apps are".into(),
        });
    }
    for sub in group
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        collect(sub, apps, export);
    }
}

/// What became of a group's own fields.
fn group_report(id: &str, group: &Value) -> Report {
    let mut report = Report::new(id);
    for key in ["apps", "groups", "pods"] {
        if group.get(key).is_some() {
            report.exact(key, "each one on its own (see its report)");
        }
    }
    if group.get("id").is_some() {
        report.exact("id", "a namespace (or --namespace-map), and annotation statefulapp.io/marathon-group on its apps");
    }
    for key in ["version", "versionInfo"] {
        if group.get(key).is_some() {
            report.ignored(key, "runtime state, not configuration");
        }
    }
    if group.get("dependencies").is_some() {
        report.dropped(
            "dependencies",
            "Kubernetes has no start order between groups; apps keep their own dependencies in an annotation",
        );
    }
    if group.get("enforceRole").is_some() {
        report.dropped("enforceRole", "Mesos roles do not exist on Kubernetes");
    }
    // The apps, groups and pods are reported on their own.
    let mut own = group.clone();
    if let Some(map) = own.as_object_mut() {
        map.retain(|k, _| !matches!(k.as_str(), "apps" | "groups" | "pods"));
    }
    report.cover(&own);
    report
}

/// `/prod/db` -> `prod-db`, unless mapped; the root group -> `--namespace`.
fn namespace_of(group: &str, options: &Options) -> Option<String> {
    let normalized = format!("/{}", group.trim_matches('/'));
    let mapped = options
        .namespace_map
        .iter()
        .filter(|(g, _)| {
            let g = format!("/{}", g.trim_matches('/'));
            normalized == g || g == "/" || normalized.starts_with(&format!("{g}/"))
        })
        .max_by_key(|(g, _)| g.trim_matches('/').len());
    if let Some((_, ns)) = mapped {
        return Some(ns.clone());
    }
    if normalized == "/" {
        return options.namespace.clone();
    }
    Some(ports::dns_name(&normalized))
}

#[cfg(test)]
mod tests;

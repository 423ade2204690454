//! The commands. Each reads what it needs, does one thing, and prints what a
//! `dcos marathon` user would expect to see.

use std::io::Read;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

use super::PluginError;
use super::cli::{AppCommand, Cli, Command, GlobalArgs, ImportArgs, Output, TaskCommand, WaitArgs};
use super::output::{app_table, task_document, task_table};
use super::resolve::{find_instance, parse_instances_setting};
use super::wait::{Goal, wait_for};
use crate::api::{InstanceState, StatefulApp};
use crate::names::{
    ANNOTATION_WIPE, ANNOTATION_WIPE_ON_DELETE, FINALIZER_CLEANUP, InstanceId, pod_name,
};

const FIELD_MANAGER: &str = "kubectl-statefulapp";

struct Session {
    client: Client,
    namespace: String,
    all_namespaces: bool,
    output: Output,
    selector: Option<String>,
}

impl Session {
    async fn connect(global: &GlobalArgs) -> Result<Session, PluginError> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..Default::default()
        };
        let config = match (&global.kubeconfig, &global.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(config_error)?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(config_error)?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(config_error)?,
            (None, None) => Config::infer().await.map_err(config_error)?,
        };
        let mut config = config;
        if let Some(user) = &global.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !global.as_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(global.as_groups.clone());
        }
        if let Some(timeout) = global.request_timeout.filter(|t| !t.is_zero()) {
            config.connect_timeout = Some(timeout);
            config.read_timeout = Some(timeout);
            config.write_timeout = Some(timeout);
        }
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
        Ok(Session {
            client,
            namespace,
            all_namespaces: global.all_namespaces,
            output: global.output.clone(),
            selector: global.selector.clone(),
        })
    }

    fn apps(&self) -> Api<StatefulApp> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn list_apps(&self) -> Result<Vec<StatefulApp>, PluginError> {
        let api: Api<StatefulApp> = if self.all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.apps()
        };
        let mut params = ListParams::default();
        if let Some(selector) = &self.selector {
            params = params.labels(selector);
        }
        let mut apps = api.list(&params).await?.items;
        apps.sort_by_key(|a| (a.namespace(), a.name_any()));
        Ok(apps)
    }

    async fn get_app(&self, name: &str) -> Result<StatefulApp, PluginError> {
        let name = name.trim_start_matches('/');
        self.apps().get_opt(name).await?.ok_or_else(|| {
            PluginError::NotFound(format!(
                "app /{name} not found in namespace {}",
                self.namespace
            ))
        })
    }

    /// With `--wait`, follows app `name` in `namespace` until `goal`.
    async fn wait(
        &self,
        namespace: &str,
        name: &str,
        goal: Goal<'_>,
        args: WaitArgs,
    ) -> Result<(), PluginError> {
        if !args.wait {
            return Ok(());
        }
        let api = Api::namespaced(self.client.clone(), namespace);
        wait_for(&api, name, goal, args.timeout).await
    }

    /// Sets `spec.instances`; returns the app's name.
    async fn set_instances(&self, name: &str, instances: i32) -> Result<String, PluginError> {
        let app = self.get_app(name).await?;
        let patch = json!({ "spec": { "instances": instances } });
        self.apps()
            .patch(
                &app.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        println!(
            "/{}: instances {} -> {instances}",
            app.name_any(),
            app.spec.instances
        );
        Ok(app.name_any())
    }

    /// Prints in the session's format: `table(wide)`, one name per line,
    /// or the JSON/YAML document `value`.
    fn print(
        &self,
        value: &Value,
        table: impl FnOnce(bool) -> String,
        names: impl FnOnce() -> Vec<String>,
    ) -> Result<(), PluginError> {
        match &self.output {
            Output::Table => print!("{}", table(false)),
            Output::Wide => print!("{}", table(true)),
            Output::Name => names().iter().for_each(|name| println!("{name}")),
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            ),
            Output::Yaml => print!("{}", serde_yaml::to_string(value).unwrap_or_default()),
            Output::JsonPath(template) => {
                // kubectl applies a template to a list as a List object.
                let document = match value {
                    Value::Array(items) => {
                        json!({ "apiVersion": "v1", "kind": "List", "items": items })
                    }
                    other => other.clone(),
                };
                // As kubectl: no newline of its own (the template adds one).
                print!("{}", template.render(&document));
            }
            Output::CustomColumns(columns) => {
                let items = match value {
                    Value::Array(items) => items.clone(),
                    other => vec![other.clone()],
                };
                let rows: Vec<Vec<String>> = items.iter().map(|i| columns.row(i)).collect();
                print!("{}", super::output::table(&columns.headers(), &rows));
            }
        }
        Ok(())
    }
}

fn config_error(error: impl std::fmt::Display) -> PluginError {
    PluginError::Config(error.to_string())
}

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<(), PluginError> {
    if let Command::Completion { shell } = &cli.command {
        use clap::CommandFactory;
        let mut command = Cli::command();
        clap_complete::generate(
            *shell,
            &mut command,
            "kubectl-statefulapp",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    if let Command::Import(args) = &cli.command {
        return import(&cli.global, args).await;
    }
    let session = Session::connect(&cli.global).await?;
    match cli.command {
        Command::App(command) => app(&session, command).await,
        Command::Task(command) => task(&session, command).await,
        Command::Import(_) | Command::Completion { .. } => unreachable!("handled above"),
    }
}

async fn app(session: &Session, command: AppCommand) -> Result<(), PluginError> {
    match command {
        AppCommand::Add {
            file,
            force_conflicts,
            wait,
        } => {
            let (namespace, name) = add(session, &file, force_conflicts).await?;
            session.wait(&namespace, &name, Goal::Converged, wait).await
        }
        AppCommand::List => {
            let apps = session.list_apps().await?;
            let value = serde_json::to_value(&apps).unwrap_or_default();
            session.print(
                &value,
                |wide| app_table(&apps, Timestamp::now(), session.all_namespaces, wide),
                || {
                    apps.iter()
                        .map(|a| format!("statefulapp.statefulapp.io/{}", a.name_any()))
                        .collect()
                },
            )
        }
        AppCommand::Stop { app, wait } => {
            let name = session.set_instances(&app, 0).await?;
            session
                .wait(&session.namespace, &name, Goal::Converged, wait)
                .await
        }
        AppCommand::Start {
            app,
            instances,
            wait,
        } => {
            let name = session.set_instances(&app, instances).await?;
            session
                .wait(&session.namespace, &name, Goal::Converged, wait)
                .await
        }
        AppCommand::Update { app, setting, wait } => {
            let instances = parse_instances_setting(&setting)?;
            let name = session.set_instances(&app, instances).await?;
            session
                .wait(&session.namespace, &name, Goal::Converged, wait)
                .await
        }
        AppCommand::Remove { app, wipe } => remove(session, &app, wipe).await,
    }
}

async fn add(
    session: &Session,
    file: &std::path::Path,
    force_conflicts: bool,
) -> Result<(String, String), PluginError> {
    let text = read_input(file)?;
    let path = file.display().to_string();
    let parse_error = |message: String| PluginError::Parse {
        path: path.clone(),
        message,
    };
    let value: Value = serde_yaml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
    let mut app: StatefulApp = if value.get("apiVersion").is_none() && value.get("id").is_some() {
        let options = crate::marathon::Options {
            namespace: Some(session.namespace.clone()),
            ..Default::default()
        };
        let imported =
            crate::marathon::import_app(&text, &options).map_err(|e| parse_error(e.to_string()))?;
        for entry in &imported.report.entries {
            if entry.outcome > crate::marathon::Outcome::Ignored {
                eprintln!(
                    "warning: {}: {} ({})",
                    entry.field,
                    entry.detail,
                    entry.outcome.as_str()
                );
            }
        }
        if !imported.services.is_empty() {
            eprintln!(
                "warning: the app's ports ask for Services; `kubectl statefulapp import` prints them, `app add` creates only the app"
            );
        }
        imported.app
    } else {
        if value.get("kind").and_then(Value::as_str) != Some("StatefulApp") {
            return Err(parse_error(
                "expected kind: StatefulApp (or a Marathon app JSON)".into(),
            ));
        }
        serde_json::from_value(value).map_err(|e| parse_error(e.to_string()))?
    };
    let namespace = app.namespace().unwrap_or_else(|| session.namespace.clone());
    app.metadata.namespace = Some(namespace.clone());
    app.metadata.managed_fields = None;
    app.metadata.resource_version = None;
    app.status = None;
    let name = app.name_any();
    let api: Api<StatefulApp> = Api::namespaced(session.client.clone(), &namespace);
    // Server-side apply without force: fields another manager owns stay
    // theirs unless the user asks (a GitOps controller would fight back).
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if force_conflicts {
        params = params.force();
    }
    match api.patch(&name, &params, &Patch::Apply(&app)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => return Err(PluginError::Conflict(e.message)),
        Err(e) => return Err(e.into()),
    }
    println!(
        "app /{name} added in namespace {namespace} ({} instances)",
        app.spec.instances
    );
    Ok((namespace, name))
}

/// How long `app remove --wipe` waits for the controller to take charge.
const CONTROLLER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn wait_for_finalizer(api: &kube::Api<StatefulApp>, name: &str) -> Result<(), PluginError> {
    let deadline = std::time::Instant::now() + CONTROLLER_WAIT;
    loop {
        let app = api.get(name).await?;
        if app.finalizers().iter().any(|f| f == FINALIZER_CLEANUP) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(PluginError::ControllerAbsent(format!(
                "the operator has not taken charge of app /{name} within {}s (no {FINALIZER_CLEANUP} finalizer): \
                 nothing was deleted; is the operator running?",
                CONTROLLER_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn remove(session: &Session, name: &str, wipe: bool) -> Result<(), PluginError> {
    let app = session.get_app(name).await?;
    let name = app.name_any();
    let api = session.apps();
    if wipe {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_WIPE_ON_DELETE: "true" } } });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // The deletion must wait for the controller, which then reads the
        // annotation: an app the controller has not seen yet has no
        // finalizer, and deleting it would keep the data.
        wait_for_finalizer(&api, &name).await?;
    }
    api.delete(&name, &DeleteParams::default()).await?;
    let wipes = wipe
        || app
            .annotations()
            .get(ANNOTATION_WIPE_ON_DELETE)
            .is_some_and(|v| v == "true");
    if wipes {
        println!("app /{name} removed; its volumes and data are being destroyed");
    } else {
        println!(
            "app /{name} removed; its volumes and data are kept: adding an app named {name} in namespace {} again adopts them (use --wipe to destroy them)",
            session.namespace
        );
    }
    Ok(())
}

async fn task(session: &Session, command: TaskCommand) -> Result<(), PluginError> {
    match command {
        TaskCommand::List { app } => {
            let mut apps = session.list_apps().await?;
            if let Some(name) = app {
                let name = name.trim_start_matches('/').to_string();
                apps.retain(|a| a.name_any() == name);
                if apps.is_empty() {
                    return Err(PluginError::NotFound(format!("app /{name} not found")));
                }
            }
            let documents: Vec<Value> = apps
                .iter()
                .flat_map(|app| {
                    app.status
                        .iter()
                        .flat_map(|s| &s.instances)
                        .map(move |i| task_document(app, i))
                })
                .collect();
            session.print(
                &json!(documents),
                |wide| task_table(&apps, session.all_namespaces, wide),
                || {
                    apps.iter()
                        .flat_map(|a| a.status.iter().flat_map(|s| &s.instances))
                        .map(|i| i.id.clone())
                        .collect()
                },
            )
        }
        TaskCommand::Show { id } => {
            let apps = session.list_apps().await?;
            let found = find_instance(&apps, &id)?;
            let document = task_document(found.app, found.instance);
            match &session.output {
                Output::Yaml => print!("{}", serde_yaml::to_string(&document).unwrap_or_default()),
                Output::JsonPath(_) | Output::CustomColumns(_) => {
                    session.print(&document, |_| String::new(), Vec::new)?;
                }
                _ => println!(
                    "{}",
                    serde_json::to_string_pretty(&document).unwrap_or_default()
                ),
            }
            Ok(())
        }
        TaskCommand::Stop {
            id,
            wipe,
            yes,
            wait,
        } => {
            let apps = session.list_apps().await?;
            let found = find_instance(&apps, &id)?;
            if wipe && !found.exact {
                // Destroying data takes the whole id: a prefix that matched
                // one instance today may match another tomorrow.
                if session.all_namespaces {
                    return Err(PluginError::Usage(format!(
                        "--wipe with --all-namespaces needs the full instance id, not a prefix ({id:?} matched {} in namespace {})",
                        found.instance.id,
                        found.app.namespace().unwrap_or_default()
                    )));
                }
                if !yes {
                    return Err(PluginError::Usage(format!(
                        "--wipe destroys data: give the full instance id ({}), or add --yes to wipe what the prefix {id:?} matched",
                        found.instance.id
                    )));
                }
            }
            let app_name = found.app.name_any();
            let namespace = found.app.namespace().unwrap_or_default();
            let instance_id = found.instance.id.clone();
            let goal = if wipe {
                wipe_instance(session, found.app, &instance_id).await?;
                Goal::Wiped(&instance_id)
            } else {
                let parsed: InstanceId = instance_id
                    .parse()
                    .map_err(|e: crate::names::IdError| PluginError::Usage(e.to_string()))?;
                if found.instance.state == InstanceState::Stopped {
                    println!("{instance_id} is stopped; nothing to restart");
                    return Ok(());
                }
                let pods: Api<Pod> = Api::namespaced(session.client.clone(), &namespace);
                pods.delete(&pod_name(&parsed), &DeleteParams::default())
                    .await?;
                println!(
                    "{instance_id} restarting on its node (app /{app_name} keeps it; use `app update {app_name} instances=N` to stop instances, --wipe to destroy it)"
                );
                Goal::Converged
            };
            session.wait(&namespace, &app_name, goal, wait).await
        }
    }
}

async fn wipe_instance(session: &Session, app: &StatefulApp, id: &str) -> Result<(), PluginError> {
    let mut ids: Vec<String> = app
        .annotations()
        .get(ANNOTATION_WIPE)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !ids.iter().any(|i| i == id) {
        ids.push(id.to_string());
    }
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_WIPE: ids.join(",") } } });
    let api: Api<StatefulApp> =
        Api::namespaced(session.client.clone(), &app.namespace().unwrap_or_default());
    api.patch(
        &app.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    println!(
        "{id} will be wiped: its pod, volumes and data are destroyed{}",
        if app.spec.instances as usize
            > app
                .status
                .as_ref()
                .map_or(0, |s| s.instances.len())
                .saturating_sub(1)
        {
            "; a fresh instance replaces it because instances still asks for it"
        } else {
            ""
        }
    );
    Ok(())
}

fn read_input(path: &std::path::Path) -> Result<String, PluginError> {
    let read_error = |source| PluginError::Read {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(read_error)
    }
}

/// `import`: pure conversion, plus the cluster's node labels when a
/// `LIKE`/`UNLIKE` regex needs them (and the cluster can be reached).
async fn import(global: &GlobalArgs, args: &ImportArgs) -> Result<(), PluginError> {
    let text = read_input(&args.file)?;
    let path = args.file.display().to_string();
    let mut options = crate::marathon::Options {
        namespace: global.namespace.clone(),
        fetch_image: args.fetch_image.clone(),
        deployments: args.deployments,
        ..Default::default()
    };
    for pair in &args.namespace_map {
        let (group, namespace) = split_pair(pair, "--namespace-map", "GROUP=NAMESPACE")?;
        options.namespace_map.insert(group, namespace);
    }
    for pair in &args.uids {
        let (name, uid) = split_pair(pair, "--uid", "NAME=UID")?;
        let uid = uid
            .parse()
            .map_err(|_| PluginError::Usage(format!("--uid {pair}: the uid must be a number")))?;
        options.users.insert(name, uid);
    }
    let parse_error = |e: crate::marathon::ImportError| PluginError::Parse {
        path: path.clone(),
        message: e.to_string(),
    };
    let mut export = crate::marathon::import(&text, &options).map_err(parse_error)?;
    if export.needs_nodes() && !args.offline {
        match node_labels(global).await {
            Ok(nodes) => {
                options.nodes = Some(nodes);
                export = crate::marathon::import(&text, &options).map_err(parse_error)?;
            }
            Err(e) => {
                eprintln!("note: cannot read the cluster's nodes for LIKE/UNLIKE regexes: {e}")
            }
        }
    }
    let not_exact: usize = export
        .reports
        .iter()
        .chain(&export.groups)
        .flat_map(|r| &r.entries)
        .filter(|e| e.outcome > crate::marathon::Outcome::Ignored)
        .count();
    let counts = export.counts();
    if global.output == Output::Json {
        let document = json!({
            "objects": export.objects,
            "reports": export.reports,
            "groups": export.groups,
            "skipped": export.skipped,
            "refused": export.refused,
            "counts": counts,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    } else {
        eprint!("{}", crate::marathon::report::table(&export.groups));
        eprint!("{}", crate::marathon::report::table(&export.reports));
        for skipped in &export.skipped {
            eprintln!("skipped {}: {}", skipped.app, skipped.reason);
        }
        for refused in &export.refused {
            eprintln!("refused {}: {}", refused.app, refused.reason);
        }
        eprintln!(
            "{} imported exactly, {} with rewrites, {} refused, {} skipped",
            counts["exact"], counts["withRewrites"], counts["refused"], counts["skipped"]
        );
        if !(args.strict && not_exact > 0) {
            for object in &export.objects {
                print!("---\n{}", serde_yaml::to_string(object).unwrap_or_default());
            }
        }
    }
    if args.strict && (not_exact > 0 || !export.skipped.is_empty()) {
        return Err(PluginError::Import(format!(
            "--strict: {not_exact} field(s) not mapped exactly, {} app(s) skipped",
            export.skipped.len()
        )));
    }
    if !export.refused.is_empty() {
        return Err(PluginError::Import(format!(
            "{} app(s) refused: {}",
            export.refused.len(),
            export
                .refused
                .iter()
                .map(|r| r.app.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if export.objects.is_empty() {
        return Err(PluginError::Import("nothing to import".into()));
    }
    Ok(())
}

fn split_pair(pair: &str, flag: &str, shape: &str) -> Result<(String, String), PluginError> {
    pair.split_once('=')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| PluginError::Usage(format!("{flag} {pair}: expected {shape}")))
}

/// The labels of every node, for matching constraint regexes.
async fn node_labels(
    global: &GlobalArgs,
) -> Result<Vec<std::collections::BTreeMap<String, String>>, PluginError> {
    let session = Session::connect(global).await?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(session.client.clone());
    let list = nodes.list_metadata(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .map(|n| n.metadata.labels.unwrap_or_default())
        .collect())
}

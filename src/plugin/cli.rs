//! Command line of `kubectl statefulapp`, shaped like `dcos marathon`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::jsonpath::{Columns, Template};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-statefulapp",
    version,
    about = "Manage StatefulApps the way `dcos marathon` managed stateful apps"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format: table, wide (more columns), name, json, yaml,
    /// jsonpath=TEMPLATE (e.g. '{.items[*].metadata.name}'), or
    /// custom-columns=HEADER:PATH,... (e.g. NAME:.metadata.name).
    #[arg(short = 'o', long, global = true, default_value = "table", value_parser = parse_output)]
    pub output: Output,
    /// Only apps with these labels (`key=value,key2!=value2`, as kubectl).
    #[arg(short = 'l', long, global = true)]
    pub selector: Option<String>,
    /// Act as this user (impersonation, as kubectl's --as).
    #[arg(long = "as", global = true)]
    pub as_user: Option<String>,
    /// Act with this group (repeatable, as kubectl's --as-group).
    #[arg(long = "as-group", global = true)]
    pub as_groups: Vec<String>,
    /// Give up on a request after this long (e.g. 10s, 1m; 0 for never).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub request_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Table,
    Wide,
    Name,
    Json,
    Yaml,
    /// kubectl's `-o jsonpath=...`, applied to the JSON document (a list
    /// as `{"kind": "List", "items": [...]}`).
    JsonPath(Template),
    /// kubectl's `-o custom-columns=...`: one row per item.
    CustomColumns(Columns),
}

/// `-o`'s value, as kubectl spells it.
fn parse_output(value: &str) -> Result<Output, String> {
    if let Some(template) = value.strip_prefix("jsonpath=") {
        return Template::parse(template)
            .map(Output::JsonPath)
            .map_err(|e| e.to_string());
    }
    if let Some(spec) = value.strip_prefix("custom-columns=") {
        return Columns::parse(spec)
            .map(Output::CustomColumns)
            .map_err(|e| e.to_string());
    }
    match value {
        "table" => Ok(Output::Table),
        "wide" => Ok(Output::Wide),
        "name" => Ok(Output::Name),
        "json" => Ok(Output::Json),
        "yaml" => Ok(Output::Yaml),
        other => Err(format!(
            "unknown output format {other:?}: use table, wide, name, json, yaml, jsonpath=TEMPLATE or custom-columns=HEADER:PATH,..."
        )),
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apps: add, list, stop, start, update, remove.
    #[command(subcommand)]
    App(AppCommand),
    /// Tasks (instances): list, show, stop.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Convert a Marathon app definition or group export (`GET /v2/groups`)
    /// into StatefulApps and Services (YAML on stdout), with a report of
    /// every field on stderr (`-o json`: objects and report as one JSON).
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The Marathon JSON (`-` for stdin).
    pub file: PathBuf,
    /// Fail unless every field maps exactly.
    #[arg(long)]
    pub strict: bool,
    /// Never read the cluster (`LIKE`/`UNLIKE` regexes that need node labels are refused).
    #[arg(long)]
    pub offline: bool,
    /// Put a group's apps in a namespace: `/prod/db=databases` (repeatable;
    /// default one namespace per group, `/prod/db` -> `prod-db`).
    #[arg(long = "namespace-map", value_name = "GROUP=NAMESPACE")]
    pub namespace_map: Vec<String>,
    /// The uid of a user name in `user`: `postgres=999` (repeatable).
    #[arg(long = "uid", value_name = "NAME=UID")]
    pub uids: Vec<String>,
    /// Download `fetch` URIs in an init container of this image (with sh,
    /// wget, tar, unzip); without it such apps are refused.
    #[arg(long, value_name = "IMAGE")]
    pub fetch_image: Option<String>,
    /// Import stateless apps (no persistent volume) as Deployments instead
    /// of listing them as skipped.
    #[arg(long)]
    pub deployments: bool,
}

/// `--wait` and `--timeout`, as `kubectl rollout status` has them.
#[derive(Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Follow the app until the change is done (Ready, not Reconciling),
    /// printing progress; fail if it is Stalled or time runs out.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create or update an app from a StatefulApp YAML/JSON or a Marathon app JSON (`-` for stdin).
    Add {
        file: PathBuf,
        /// Take over fields another manager (Argo CD, Flux, kubectl apply)
        /// owns, as `kubectl apply --server-side --force-conflicts` does.
        #[arg(long)]
        force_conflicts: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List apps.
    List,
    /// Stop all instances (instances=0); they keep their node and volumes.
    Stop {
        app: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start a stopped app again (instances=1 unless --instances).
    Start {
        app: String,
        #[arg(long, default_value_t = 1)]
        instances: i32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Change an app: `instances=N`.
    Update {
        app: String,
        /// `instances=N`
        setting: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete an app; its volumes are kept unless --wipe.
    Remove {
        app: String,
        /// Destroy all of the app's volumes and data too.
        #[arg(long)]
        wipe: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// List instances, running and stopped, of one app or all apps.
    List { app: Option<String> },
    /// Show one instance (id, unique id prefix, or uuid).
    Show { id: String },
    /// Restart an instance (its pod is replaced); with --wipe destroy it and its data.
    Stop {
        id: String,
        /// Destroy the instance and its data (needs the full instance id,
        /// or --yes to accept a unique prefix in this namespace).
        #[arg(long)]
        wipe: bool,
        /// With --wipe: accept an id prefix.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

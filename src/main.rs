//! The operator binary: `controller`, `agent` and `crd` subcommands.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use statefulapp_operator::{agent, controller, crdgen, provisioner};

#[derive(Parser)]
#[command(
    name = "statefulapp-operator",
    version,
    about = "Marathon-style stateful services on Kubernetes"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the StatefulApp controller and the volume provisioner.
    Controller {
        /// StorageClass of the claims of StatefulApp instances.
        #[arg(long, default_value = "statefulapp-local")]
        storage_class: String,
        /// `provisioner` name of that StorageClass.
        #[arg(long, default_value = "statefulapp.io/local")]
        provisioner_name: String,
        /// Directory holding volumes on every node (the agents' base dir).
        #[arg(long, default_value = "/var/lib/statefulapp")]
        volume_base_dir: String,
    },
    /// Run the node agent for one node.
    Agent {
        /// The node this agent serves.
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// Directory where this node's volume data lives.
        #[arg(long, default_value = "/var/lib/statefulapp")]
        base_dir: PathBuf,
    },
    /// Print the StatefulApp CustomResourceDefinition as YAML.
    Crd,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", crdgen::crd_yaml()?),
        Command::Controller {
            storage_class,
            provisioner_name,
            volume_base_dir,
        } => {
            init_tracing(cli.log_json);
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes")?;
            let ctx = Arc::new(controller::Context::new(client.clone(), storage_class));
            let provisioner = Arc::new(provisioner::Provisioner {
                client,
                name: provisioner_name,
                base_dir: volume_base_dir,
            });
            tracing::info!("controller and provisioner started");
            tokio::join!(controller::run(ctx), provisioner::run(provisioner));
        }
        Command::Agent { node, base_dir } => {
            init_tracing(cli.log_json);
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes")?;
            std::fs::create_dir_all(&base_dir)
                .with_context(|| format!("creating base dir {}", base_dir.display()))?;
            tracing::info!(%node, base_dir = %base_dir.display(), "node agent started");
            agent::run(Arc::new(agent::Agent {
                client,
                node,
                base_dir,
            }))
            .await;
        }
    }
    Ok(())
}

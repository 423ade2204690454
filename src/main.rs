//! The operator binary: `controller`, `agent` and `crd` subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kube_lease_manager::LeaseManagerBuilder;
use prometheus_client::registry::Registry;
use statefulapp_operator::http::{self, Health};
use statefulapp_operator::metrics::{AgentMetrics, ControllerMetrics};
use statefulapp_operator::{agent, api_client, controller, crdgen, provisioner, worker};

// jemalloc returns freed memory to the system (glibc's malloc keeps most of
// what a burst of watch events and reconciles allocated: at 1,000
// instances the resident size was a third larger).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    Controller(ControllerArgs),
    /// Run the node agent for one node.
    Agent(AgentArgs),
    /// Print the StatefulApp CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Args)]
struct ControllerArgs {
    /// StorageClass of the claims of StatefulApp instances.
    #[arg(long, default_value = "statefulapp-local")]
    storage_class: String,
    /// `provisioner` name of that StorageClass.
    #[arg(long, default_value = "local.statefulapp.io")]
    provisioner_name: String,
    /// Names the provisioner had before: claims and volumes made under
    /// them are still its own (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "statefulapp.io/local")]
    former_provisioner_names: Vec<String>,
    /// Check each new volume against the disk capacity the node agents
    /// publish in this namespace (never overcommit a node).
    #[arg(long)]
    capacity_namespace: Option<String>,
    /// How the sizes of new volumes are enforced on their nodes: `image`
    /// (a filesystem per volume; the agents must run privileged) or `none`
    /// (measured, a Warning past the size).
    #[arg(long, value_enum, default_value = "none")]
    size_enforcement: statefulapp_operator::names::SizeEnforcement,
    /// The filesystem of each `image` volume: `ext4` (any size) or `xfs`
    /// (at least 300Mi).
    #[arg(long, value_enum, default_value = "ext4")]
    image_filesystem: statefulapp_operator::names::ImageFilesystem,
    /// Directory holding volumes on every node (the agents' base dir).
    #[arg(long, default_value = "/var/lib/statefulapp")]
    volume_base_dir: String,
    /// Also make volumes for claims that are not a StatefulApp's (say, a
    /// StatefulSet's volumeClaimTemplates). Off: such claims get no volume
    /// and a Warning Event. Their volumes are kept (`Retain`) with their
    /// data until someone deletes the directory on the node.
    #[arg(long)]
    provision_any_claim: bool,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Act only while holding a coordination.k8s.io Lease (run 2+ replicas).
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_elect_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "statefulapp-operator")]
    leader_elect_lease: String,
    /// Seconds a leader may go silent before another replica takes over.
    #[arg(long, default_value_t = 15)]
    leader_elect_duration: u64,
    /// StatefulApps reconciled at the same time.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Claims provisioned at the same time. Each waits on a handful of
    /// sequential API requests, so a scale-up of hundreds of claims is paced
    /// by this number unless it is well above the reconciles'.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_provisions: u16,
    /// PriorityClass of the pods that hold a stopped instance's resources
    /// (the chart installs it; ordinary pods must not outrank it).
    #[arg(long, default_value = "statefulapp-reservation")]
    reservation_priority_class: String,
    /// Image of those pods: a pause image the nodes already have.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    reservation_image: String,
    /// /healthz and /readyz fail once the API server has not answered, or
    /// a watch has kept failing, for this long (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    unhealthy_after: std::time::Duration,
    /// An app is Stalled once the scheduler has found no node for one of
    /// its instances' pods (Unschedulable) for this long (e.g. 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    unschedulable_after: std::time::Duration,
}

#[derive(Args)]
struct AgentArgs {
    /// The node this agent serves.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Directory where this node's volume data lives.
    #[arg(long, default_value = "/var/lib/statefulapp")]
    base_dir: PathBuf,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8081")]
    metrics_address: SocketAddr,
    /// /healthz and /readyz fail once the API server has not answered, or
    /// the volume watch has kept failing, for this long (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    unhealthy_after: std::time::Duration,
    /// Publish this node's disk capacity for this StorageClass (a
    /// CSIStorageCapacity in --capacity-namespace), for kube-scheduler.
    #[arg(long, requires = "capacity_namespace")]
    storage_class: Option<String>,
    /// Namespace of the published capacity objects.
    #[arg(long, requires = "storage_class")]
    capacity_namespace: Option<String>,
}

fn init_tracing(json: bool) {
    // Logs go to stderr (stdout is for `crd` output).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,kube_lease_manager=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().with_writer(std::io::stderr).init();
    } else {
        builder.with_writer(std::io::stderr).init();
    }
}

/// Loads credentials (a mistake there is fatal) and waits until the API
/// server answers (it may be restarting: keep trying, as kubelets do).
/// Returns the configuration, for more connections, and the client that
/// got the answer.
async fn connect() -> anyhow::Result<(kube::Config, kube::Client)> {
    let config = kube::Config::infer()
        .await
        .map_err(api_client::ClientError::from)?;
    let client = api_client::from_config(config.clone())?;
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match client.apiserver_version().await {
            Ok(_) => return Ok((config, client)),
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "cannot reach the Kubernetes API server yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", crdgen::crd_yaml()?),
        Command::Controller(args) => {
            init_tracing(cli.log_json);
            run_controller(args).await?;
        }
        Command::Agent(args) => {
            init_tracing(cli.log_json);
            run_agent(args).await?;
        }
    }
    Ok(())
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(ControllerMetrics::register(&mut registry));
    let health = Health::new(registry, args.unhealthy_after);
    let server = tokio::spawn(http::serve(args.metrics_address, health.clone()));
    let (config, control_client) = connect().await?;
    // A connection each for the controller, the provisioner, and the health
    // pings with the leader lease (the one that reached the API server). The
    // API server serves 100 requests at a time on one HTTP/2 connection and
    // the client queues the rest: on a shared one, the provisioner's
    // requests (and a lease renewal) waited behind a scale-up's hundreds of
    // pod creations.
    let client = api_client::from_config(config.clone())?;
    let provisioner_client = api_client::from_config(config)?;
    tokio::spawn(health.clone().ping_api_server(control_client.clone()));
    health.set_ready(true);

    let (mut ctx, feeds) =
        controller::Context::new(client.clone(), args.storage_class, metrics.clone());
    ctx.max_concurrent_reconciles = args.max_concurrent_reconciles;
    ctx.unschedulable_after = args.unschedulable_after;
    ctx.reservations = controller::reservation::ReservationConfig {
        priority_class: args.reservation_priority_class,
        image: args.reservation_image,
    };
    let ctx = Arc::new(ctx);
    let mut provisioner = provisioner::Provisioner::new(
        provisioner_client,
        args.provisioner_name,
        args.volume_base_dir,
        metrics.volumes_provisioned.clone(),
        args.max_concurrent_provisions,
    );
    provisioner.failures = metrics.provisioning_failures.clone();
    provisioner.former_names = args.former_provisioner_names;
    provisioner.capacity_namespace = args.capacity_namespace;
    provisioner.size_enforcement = args.size_enforcement;
    provisioner.image_filesystem = args.image_filesystem;
    provisioner.any_claim = args.provision_any_claim;
    provisioner.nodes = Some(ctx.nodes());
    let provisioner = Arc::new(provisioner);
    // Tasks of their own, each on a worker thread, stopped with `work`.
    let work = async {
        let controller = worker::spawn_owned(controller::run(ctx, feeds));
        let provisioner = worker::spawn_owned(provisioner::run(provisioner));
        let _ = tokio::join!(controller, provisioner);
    };

    if !args.leader_elect {
        tracing::info!("controller and provisioner started (no leader election)");
        metrics.is_leader.set(1);
        tokio::select! {
            _ = work => {}
            served = server => served??,
        }
        return Ok(());
    }

    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("statefulapp-operator-{}", uuid::Uuid::new_v4().simple()));
    let manager = LeaseManagerBuilder::new(control_client, &args.leader_elect_lease)
        .with_namespace(&args.leader_elect_namespace)
        .with_identity(&identity)
        .with_duration(args.leader_elect_duration)
        .with_grace(args.leader_elect_duration.div_ceil(3))
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(%identity, lease = %args.leader_elect_lease, "waiting for the leader lease");
    while !*leading.borrow_and_update() {
        leading.changed().await.context("leader election stopped")?;
    }
    tracing::info!(%identity, "leading: controller and provisioner started");
    metrics.is_leader.set(1);
    let lost = async {
        while *leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = work => {
            // Shut down by a signal: hand the lease over at once.
            drop(leading);
            let _ = lease_task.await;
            Ok(())
        }
        _ = lost => {
            // Another replica may act now: stop before doing anything twice.
            anyhow::bail!("lost the leader lease {}; exiting", args.leader_elect_lease)
        }
        served = server => Ok(served??),
    }
}

async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let health = Health::new(registry, args.unhealthy_after);
    let server = tokio::spawn(http::serve(args.metrics_address, health.clone()));
    let (_, client) = connect().await?;
    tokio::spawn(health.clone().ping_api_server(client.clone()));
    std::fs::create_dir_all(&args.base_dir)
        .with_context(|| format!("creating base dir {}", args.base_dir.display()))?;
    health.set_ready(true);
    tracing::info!(node = %args.node, base_dir = %args.base_dir.display(), "node agent started");
    let capacity =
        args.storage_class
            .zip(args.capacity_namespace)
            .map(|(storage_class, namespace)| agent::CapacityTarget {
                namespace,
                storage_class,
            });
    let agent = Arc::new(agent::Agent::new(
        client,
        args.node,
        args.base_dir,
        metrics,
        capacity,
    ));
    tokio::select! {
        _ = agent::run(agent) => Ok(()),
        served = server => Ok(served??),
    }
}

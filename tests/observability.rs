//! Metrics and health endpoints of the controller reflect what it does.

mod support;

use support::fixtures::{create_app, postgres, set_instances, wait_for_status};
use support::http::{get, sample};
use support::operator::Operator;
use support::{TestCluster, wait_until};

#[tokio::test]
async fn metrics_report_reconciles_actions_and_instances_by_state() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "metrics").await;
    let port = operator.metrics_port;

    create_app(&client, &ns, postgres(2)).await;
    wait_for_status(&client, &ns, "postgres", operator, "two running", |s| {
        s.running == 2
    })
    .await;
    set_instances(&client, &ns, "postgres", 1).await;
    wait_for_status(&client, &ns, "postgres", operator, "one stopped", |s| {
        s.stopped == 1
    })
    .await;

    let app = [
        format!("namespace=\"{ns}\""),
        "app=\"postgres\"".to_string(),
    ];
    let exposition = wait_until(
        support::fixtures::WAIT,
        "metrics with the app's states",
        || async {
            let (status, body) = get(port, "/metrics").await?;
            let running = sample(
                &body,
                "statefulapp_instances",
                &[&app[0], &app[1], "state=\"Running\""],
            )?;
            let stopped = sample(
                &body,
                "statefulapp_instances",
                &[&app[0], &app[1], "state=\"Stopped\""],
            )?;
            (status == 200 && running == 1.0 && stopped == 1.0).then_some(body)
        },
    )
    .await;
    let reconciles = sample(
        &exposition,
        "statefulapp_reconciles_total",
        &["result=\"success\""],
    )
    .unwrap();
    assert!(reconciles >= 1.0, "{exposition}");
    for action in ["CreateClaim", "CreatePod", "DeletePod"] {
        let label = format!("action=\"{action}\"");
        let count = sample(&exposition, "statefulapp_actions_total", &[&label]).unwrap_or(0.0);
        assert!(count >= 1.0, "no {action} counted:\n{exposition}");
    }
    let provisioned = sample(&exposition, "statefulapp_volumes_provisioned_total", &[]).unwrap();
    assert!(provisioned >= 2.0, "{exposition}");
    assert!(exposition.contains("statefulapp_reconcile_duration_seconds_bucket"));

    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get(port, "/readyz").await.map(|r| r.0), Some(200));
}

/// A TCP relay to the API server that can be cut (every connection dropped,
/// new ones refused) and restored on the same port.
struct Relay {
    port: u16,
    upstream: std::net::SocketAddr,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        let port = support::process::free_ports(1)[0];
        let relay = Relay {
            port,
            upstream,
            task: std::sync::Mutex::new(None),
        };
        relay.restore().await;
        relay
    }

    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the relay");
        let upstream = self.upstream;
        let task = tokio::spawn(async move {
            // Dropped with the task: every connection goes when it is cut.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn cut(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// `/healthz` and `/readyz` fail, saying why, once a process (here a node
/// agent; the controller serves the same endpoints) has not reached the
/// API server for `--unhealthy-after`, and recover with it. (A leading
/// controller that cannot renew its lease exits instead.)
#[tokio::test]
async fn health_endpoints_fail_while_the_api_server_is_out_of_reach() {
    let cluster = TestCluster::shared();
    Operator::shared().await; // the CRD and the classes are installed
    let kubeconfig = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("the API server's address")
        .to_string();
    let relay = Relay::start(server.parse().unwrap()).await;
    let relayed = cluster.dir.join(format!("kubeconfig-relay-{}", relay.port));
    std::fs::write(
        &relayed,
        kubeconfig.replace(&server, &format!("127.0.0.1:{}", relay.port)),
    )
    .unwrap();
    let port = support::process::free_ports(1)[0];
    let base_dir = cluster.dir.join("disks").join("behind-relay");
    let mut agent = support::process::Process::start_with_env(
        "agent-behind-relay",
        std::path::Path::new(support::operator::operator_binary()),
        &[
            "agent".to_string(),
            "--node=behind-relay".to_string(),
            format!("--base-dir={}", base_dir.display()),
            format!("--metrics-address=127.0.0.1:{port}"),
            "--unhealthy-after=5s".to_string(),
        ],
        &[("KUBECONFIG", &relayed)],
        &cluster.dir.join("logs"),
    );
    let status_of = |path: &'static str| async move { get(port, path).await };
    wait_until(support::fixtures::WAIT, "healthy", || async {
        let ready = status_of("/readyz").await?;
        let alive = status_of("/healthz").await?;
        (ready.0 == 200 && alive.0 == 200).then_some(())
    })
    .await;

    relay.cut();
    let cut = std::time::Instant::now();
    let body = wait_until(std::time::Duration::from_secs(60), "unhealthy", || async {
        let ready = status_of("/readyz").await?;
        let alive = status_of("/healthz").await?;
        (ready.0 == 503 && alive.0 == 503).then_some(ready.1)
    })
    .await;
    assert!(
        cut.elapsed() >= std::time::Duration::from_secs(4),
        "not before --unhealthy-after"
    );
    assert!(body.contains("the API server has not answered"), "{body}");

    relay.restore().await;
    wait_until(
        std::time::Duration::from_secs(60),
        "healthy again",
        || async {
            let ready = status_of("/readyz").await?;
            (ready.0 == 200).then_some(())
        },
    )
    .await;
    agent.kill();
}

//! The HTTP endpoint of every process: `/metrics` (Prometheus text format),
//! `/healthz` (liveness) and `/readyz` (readiness).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What `/healthz` and `/readyz` say: the process is healthy while it
/// reaches the API server and its watches deliver; after `tolerance` of
/// either failing, both endpoints fail (saying why), so that the pod is
/// taken out of service and restarted rather than acting on stale caches.
#[derive(Clone)]
pub struct Health {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    tolerance: Duration,
    /// When the API server last answered (the pinger's last success).
    api_answered: Arc<Mutex<Instant>>,
}

impl Health {
    pub fn new(registry: Registry, tolerance: Duration) -> Self {
        Health {
            registry: Arc::new(registry),
            ready: Arc::new(AtomicBool::new(false)),
            tolerance,
            api_answered: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Marks the process ready (connected and serving).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Asks the API server for its version every few seconds, for as long
    /// as the process runs, and records each answer.
    pub async fn ping_api_server(self, client: kube::Client) {
        loop {
            let answered = tokio::time::timeout(PING_TIMEOUT, client.apiserver_version()).await;
            match answered {
                Ok(Ok(_)) => {
                    *self.api_answered.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now()
                }
                Ok(Err(error)) => tracing::warn!(%error, "the API server did not answer"),
                Err(_) => tracing::warn!("the API server did not answer in time"),
            }
            tokio::time::sleep(PING_EVERY).await;
        }
    }

    /// What is wrong, if anything.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let silent = self
            .api_answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if silent >= self.tolerance {
            problems.push(format!(
                "the API server has not answered for {}s",
                silent.as_secs()
            ));
        }
        for (watch, since) in crate::watch::health().failing(self.tolerance) {
            problems.push(format!(
                "the {watch} watch has been failing for {}s",
                since.as_secs()
            ));
        }
        problems
    }
}

const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &health.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn ready(State(health): State<Health>) -> (StatusCode, String) {
    if !health.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into());
    }
    healthy(State(health)).await
}

async fn healthy(State(health): State<Health>) -> (StatusCode, String) {
    let problems = health.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

/// Serves until the process ends. Binding errors are returned at once.
pub async fn serve(address: SocketAddr, health: Health) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthy))
        .route("/readyz", get(ready))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app).await
}

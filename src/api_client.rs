//! The client the controller and the agent talk to the API server with.
//!
//! kube's default client speaks HTTP/1.1 only, so every request in flight
//! holds a TLS connection of its own, and its pool keeps each one a burst
//! opened (hundreds, when a thousand instances are applied or provisioned
//! at once) idle for 90 seconds. This one offers HTTP/2 as client-go does:
//! every request and watch shares one connection, kept alive by pings
//! (dead peers are noticed within 45 s). A server that only speaks
//! HTTP/1.1 (or a plain-HTTP endpoint) gets HTTP/1.1, with a small pool.
//! The API server serves 100 requests at a time on a connection and the
//! client queues the rest in order, so work that must not wait behind
//! another's burst gets a client (a connection) of its own.
//! Credentials, impersonation, extra headers, retries and timeouts come
//! from the kubeconfig as in kube's own client (its tracing spans and the
//! exec credential's expiry, which nothing here reads, are left out).

use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ConfigExt};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// As client-go: a ping after 30 s without a frame, 15 s for its answer.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP/1.1 connections kept idle per host (HTTP/2 needs one).
const IDLE_CONNECTIONS: usize = 8;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("loading Kubernetes credentials: {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("setting up the API server connection: {0}")]
    Setup(#[from] kube::Error),
    #[error("the API server's TLS name {name:?} is not a valid DNS name or IP address")]
    ServerName { name: String },
}

pub fn from_config(config: Config) -> Result<Client, ClientError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut https = HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let server_name = name
            .clone()
            .try_into()
            .map_err(|_| ClientError::ServerName { name: name.clone() })?;
        https = https.with_server_name_resolver(FixedServerNameResolver::new(server_name));
    }
    let https = https.enable_all_versions().wrap_connector(http);

    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);

    let pooled = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build::<_, Body>(connector);

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_request(user_agent)
        .map_err(BoxError::from)
        .service(pooled);
    Ok(Client::new(service, config.default_namespace))
}

/// Names the process in the API server's audit log and metrics, as
/// client-go's `<binary>/<version>` does (a kubeconfig's own headers win).
fn user_agent(mut request: http::Request<Body>) -> http::Request<Body> {
    request
        .headers_mut()
        .entry(http::header::USER_AGENT)
        .or_insert(http::HeaderValue::from_static(concat!(
            "statefulapp-operator/",
            env!("CARGO_PKG_VERSION")
        )));
    request
}

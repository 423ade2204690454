//! A fault-injecting proxy between the operator and kube-apiserver.
//!
//! It serves plain HTTP on loopback and forwards each request with the
//! admin client. A seeded generator decides, per request, to pass it, to
//! fail it before it reaches the API server (500, 429 with Retry-After,
//! a connection dropped after a delay), or to forward it and then lose the
//! response (the write happened, the caller sees an error); watch streams
//! are cut short. Counters say what was injected.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::TokioIo;
use kube::Client;

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Pass,
    /// 500 InternalError, not forwarded.
    ServerError,
    /// 429 TooManyRequests with Retry-After: 1, not forwarded.
    Throttled,
    /// Forwarded, then the response is replaced by a 500: the caller does
    /// not know its write happened.
    LostResponse,
    /// Held for a while, then the connection is dropped without a response.
    Timeout,
    /// A watch stream ended early.
    CutWatch,
}

/// How often faults are injected.
#[derive(Clone, Copy, Debug)]
pub struct FaultRates {
    /// Share of ordinary requests that fail (in turn: server error,
    /// throttling, lost response, timeout).
    pub rate: f64,
    /// Share of watch requests cut short.
    pub cut_watch: f64,
}

const FAILURES: [Fault; 4] = [
    Fault::ServerError,
    Fault::Throttled,
    Fault::LostResponse,
    Fault::Timeout,
];

pub struct FaultProxy {
    pub port: u16,
    pub seed: u64,
    counts: Arc<Mutex<BTreeMap<Fault, u64>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts the proxy forwarding with `upstream` (an admin client).
    pub async fn start(upstream: Client, rates: FaultRates, seed: u64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let state = Arc::new(Shared {
            upstream,
            rates,
            state: Mutex::new(Dice {
                rng: XorShift(seed.max(1)),
                turn: 0,
                watches: 0,
            }),
            counts: counts.clone(),
        });
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { state.handle(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy {
            port,
            seed,
            counts,
            server,
        }
    }

    /// A kubeconfig whose server is this proxy (no credentials: the proxy
    /// forwards as admin).
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("kubeconfig-fault-proxy-{}", self.port));
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fault-proxy
  cluster:
    server: http://127.0.0.1:{}
users:
- name: anyone
  user: {{}}
contexts:
- name: fault-proxy
  context:
    cluster: fault-proxy
    user: anyone
current-context: fault-proxy
",
            self.port
        );
        std::fs::write(&path, kubeconfig).expect("write the proxy kubeconfig");
        path
    }

    /// How many requests met each fault so far.
    pub fn counts(&self) -> BTreeMap<Fault, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// Requests that met a fault (all but `Pass`).
    pub fn injected(&self) -> u64 {
        self.counts()
            .iter()
            .filter(|(f, _)| **f != Fault::Pass)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type ProxyBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn io_error(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

struct Shared {
    upstream: Client,
    rates: FaultRates,
    state: Mutex<Dice>,
    counts: Arc<Mutex<BTreeMap<Fault, u64>>>,
}

impl Shared {
    /// Watches: every `1 / cut_watch`-th is cut. Other requests: a seeded
    /// coin with probability `rate` says whether to fail one, and the kinds
    /// of failure take turns, so that every kind shows up in a short run.
    fn decide(&self, watch: bool) -> Fault {
        let mut state = self.state.lock().unwrap();
        let fault = if watch {
            state.watches += 1;
            let every = (1.0 / self.rates.cut_watch.max(1e-9)).round() as u64;
            if state.watches.is_multiple_of(every.max(1)) {
                Fault::CutWatch
            } else {
                Fault::Pass
            }
        } else if state.rng.next_f64() < self.rates.rate {
            state.turn += 1;
            FAILURES[state.turn % FAILURES.len()]
        } else {
            Fault::Pass
        };
        *self.counts.lock().unwrap().entry(fault).or_default() += 1;
        fault
    }

    async fn handle(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, std::io::Error> {
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        match self.decide(watch) {
            Fault::ServerError => return Ok(status(500, "InternalError", "injected fault")),
            Fault::Throttled => {
                let mut response = status(429, "TooManyRequests", "injected throttling");
                response
                    .headers_mut()
                    .insert("Retry-After", http::HeaderValue::from_static("1"));
                return Ok(response);
            }
            Fault::Timeout => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return Err(io_error("injected timeout: connection dropped"));
            }
            Fault::LostResponse => {
                let _ = self.forward(req).await;
                return Ok(status(
                    500,
                    "InternalError",
                    "injected fault after the write",
                ));
            }
            Fault::CutWatch => {
                let response = self.forward(req).await?;
                let (parts, body) = response.into_parts();
                let deadline = tokio::time::sleep(Duration::from_millis(500 + self.jitter(3000)));
                let frames = body
                    .into_data_stream()
                    .take_until(deadline)
                    .map(|chunk| chunk.map(Frame::data).map_err(io_error));
                return Ok(Response::from_parts(
                    parts,
                    BodyExt::boxed_unsync(StreamBody::new(frames)),
                ));
            }
            Fault::Pass => {}
        }
        let response = self.forward(req).await?;
        let (parts, body) = response.into_parts();
        Ok(Response::from_parts(
            parts,
            BodyExt::boxed_unsync(body.map_err(io_error)),
        ))
    }

    fn jitter(&self, max_ms: u64) -> u64 {
        (self.state.lock().unwrap().rng.next_f64() * max_ms as f64) as u64
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<kube::client::Body>, std::io::Error> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.map_err(io_error)?.to_bytes();
        let mut forwarded = Request::builder().method(parts.method).uri(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        );
        for (name, value) in &parts.headers {
            // The upstream client sets its own host and credentials.
            if name != http::header::HOST && name != http::header::AUTHORIZATION {
                forwarded = forwarded.header(name, value);
            }
        }
        let forwarded = forwarded
            .body(kube::client::Body::from(bytes.to_vec()))
            .map_err(io_error)?;
        self.upstream.send(forwarded).await.map_err(io_error)
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
    .to_string();
    Response::builder()
        .status(StatusCode::from_u16(code).expect("valid status"))
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed_unsync(
            Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}),
        ))
        .expect("valid response")
}

struct Dice {
    rng: XorShift,
    turn: usize,
    watches: u64,
}

/// Small, seeded, good enough to spread faults; reproducible from the seed.
struct XorShift(u64);

impl XorShift {
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

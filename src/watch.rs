//! Watch streams handed to kube-runtime's `Controller`.
//!
//! Each of our watches backs off on its own when it fails (`default_backoff`).
//! The `Controller` also backs off its merged trigger stream on any error it
//! sees, which pauses every watch at once; after an API server restart the
//! errors of several watches (connection refused, then 410 Gone on resuming)
//! grew that shared pause to minutes, during which no cache was fed and the
//! controller planned from stale caches. So errors are logged here, once,
//! and not passed on.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, future};
use kube::runtime::watcher;

/// `stream` without its errors, each logged as a failure of `watch` and
/// recorded for the health endpoints ([`health`]).
pub fn errors_logged<K: Send + 'static>(
    stream: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    watch: impl Into<String>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    let watch = watch.into();
    stream.filter(move |item| {
        match item {
            Err(error) => {
                tracing::warn!(watch = %watch, %error, "watch failed, retrying");
                health().failed(&watch);
            }
            Ok(_) => health().succeeded(&watch),
        }
        future::ready(item.is_ok())
    })
}

/// How each watch of the process fares: a watch is failing from its first
/// error until it delivers again.
#[derive(Default)]
pub struct WatchHealth(Mutex<HashMap<String, WatchState>>);

#[derive(Clone, Copy, Debug, Default)]
struct WatchState {
    failing_since: Option<Instant>,
    last_error: Option<Instant>,
}

/// Errors come at least this often while a watch keeps failing (its
/// backoff is at most 30 s): a failing watch with no error for longer has
/// reconnected, even if an idle watch has nothing to deliver.
const ERRORS_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

impl WatchHealth {
    pub fn failed(&self, watch: &str) {
        self.failed_at(watch, Instant::now());
    }

    fn failed_at(&self, watch: &str, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let state = map.entry(watch.to_string()).or_default();
        state.failing_since.get_or_insert(now);
        state.last_error = Some(now);
    }

    pub fn succeeded(&self, watch: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = map.get_mut(watch) {
            state.failing_since = None;
        }
    }

    /// The watches failing for longer than `tolerance`, with how long.
    pub fn failing(&self, tolerance: Duration) -> Vec<(String, Duration)> {
        self.failing_at(tolerance, Instant::now())
    }

    fn failing_at(&self, tolerance: Duration, now: Instant) -> Vec<(String, Duration)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut failing: Vec<(String, Duration)> = map
            .iter()
            .filter_map(|(watch, state)| {
                let since = state.failing_since?;
                let recent = state
                    .last_error
                    .is_some_and(|e| now.duration_since(e) < ERRORS_AT_LEAST_EVERY);
                let long = now.duration_since(since);
                (recent && long >= tolerance).then(|| (watch.clone(), long))
            })
            .collect();
        failing.sort();
        failing
    }
}

/// The process's watches.
pub fn health() -> &'static WatchHealth {
    static HEALTH: OnceLock<WatchHealth> = OnceLock::new();
    HEALTH.get_or_init(WatchHealth::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_objects_and_drops_errors() {
        let items = vec![
            Ok(1),
            Err(watcher::Error::NoResourceVersion),
            Ok(2),
            Err(watcher::Error::NoResourceVersion),
        ];
        let passed: Vec<i32> = errors_logged(futures::stream::iter(items), "test")
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(passed, [1, 2]);
    }

    #[test]
    fn a_watch_fails_from_its_first_error_until_it_delivers_or_goes_quiet() {
        let health = WatchHealth::default();
        let start = Instant::now();
        let tolerance = Duration::from_secs(30);
        health.failed_at("pods", start);
        health.failed_at("pods", start + Duration::from_secs(20));
        assert!(
            health
                .failing_at(tolerance, start + Duration::from_secs(25))
                .is_empty()
        );
        health.failed_at("pods", start + Duration::from_secs(40));
        let failing = health.failing_at(tolerance, start + Duration::from_secs(41));
        assert_eq!(failing, [("pods".to_string(), Duration::from_secs(41))]);
        // Reconnected to an idle watch: no more errors, nothing delivered.
        assert!(
            health
                .failing_at(tolerance, start + Duration::from_secs(120))
                .is_empty()
        );
        health.failed_at("pods", start + Duration::from_secs(130));
        health.succeeded("pods");
        assert!(
            health
                .failing_at(tolerance, start + Duration::from_secs(131))
                .is_empty()
        );
    }
}

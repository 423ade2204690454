//! The status write throttle: while an app converges, its status is
//! written at most once per [`STATUS_INTERVAL`]; a converged status is
//! written at once. A status just written is not written again while the
//! app's cache has yet to show it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two status writes of an app that is converging.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// How long a cache that does not show a status just written is taken to
/// lag behind, rather than to have been changed by someone else since.
const CACHE_LAG: Duration = Duration::from_secs(10);

/// When each app's status was last written, and a digest of what.
#[derive(Default)]
pub struct StatusWrites(Mutex<HashMap<String, (Instant, u64)>>);

/// A digest of a status, to recognise the same status written again.
pub fn digest(status: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(status)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl StatusWrites {
    /// How long to hold a write back (`None`: write now). A converged status
    /// is never held: it is what users and tests wait for.
    pub fn hold(&self, app: &str, converged: bool) -> Option<Duration> {
        let (last, _) = *self.0.lock().unwrap_or_else(|e| e.into_inner()).get(app)?;
        let since = last.elapsed();
        (!converged && since < STATUS_INTERVAL).then(|| STATUS_INTERVAL - since)
    }

    /// Whether `digest` is what was written for `app` a moment ago: a cache
    /// still showing the status before it lags (the write's watch event
    /// brings the app back), and the same write again would change nothing
    /// on the server. At hundreds of apps, lagging caches made every
    /// reconcile of a converged app rewrite its unchanged status.
    pub fn just_wrote(&self, app: &str, digest: u64) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(app)
            .is_some_and(|(at, written)| *written == digest && at.elapsed() < CACHE_LAG)
    }

    pub fn wrote(&self, app: &str, digest: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(app.to_string(), (Instant::now(), digest));
    }

    pub fn forget(&self, app: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converging_status_is_held_after_a_write_and_a_converged_one_never() {
        let writes = StatusWrites::default();
        assert_eq!(writes.hold("ns/a", false), None, "never written: write now");
        writes.wrote("ns/a", 1);
        let wait = writes
            .hold("ns/a", false)
            .expect("held right after a write");
        assert!(wait <= STATUS_INTERVAL);
        assert_eq!(writes.hold("ns/a", true), None, "converged: never held");
        assert_eq!(writes.hold("ns/b", false), None, "per app");
        writes.forget("ns/a");
        assert_eq!(writes.hold("ns/a", false), None, "forgotten");
    }

    #[test]
    fn the_same_status_is_not_written_again_while_the_cache_lags() {
        let writes = StatusWrites::default();
        assert!(!writes.just_wrote("ns/a", 7), "never written");
        writes.wrote("ns/a", 7);
        assert!(writes.just_wrote("ns/a", 7));
        assert!(!writes.just_wrote("ns/a", 8), "another status is written");
        assert!(!writes.just_wrote("ns/b", 7), "per app");
        assert_ne!(digest(&["a"]), digest(&["b"]));
    }
}

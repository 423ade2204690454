//! The status write throttle: while an app converges, its status is
//! written at most once per [`interval`] (longer for a larger status); a
//! converged status is written at once. A status just written is not
//! written again while the app's cache has yet to show it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two status writes of an app of `instances` that is
/// converging: a second for each 100 instances, at least one and at most
/// ten. Each instance is listed in the status, and under load the API
/// server answered a patch of 1,000 instances in 1.6 s (median); the
/// app's next reconcile waits for it.
fn interval(instances: usize) -> Duration {
    let millis = (instances as u64).saturating_mul(10).clamp(1_000, 10_000);
    Duration::from_millis(millis)
}

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
    /// How long to hold a write of a status listing `instances` back
    /// (`None`: write now). A converged status is never held: it is what
    /// users and tests wait for.
    pub fn hold(&self, app: &str, converged: bool, instances: usize) -> Option<Duration> {
        let (last, _) = *self.0.lock().unwrap_or_else(|e| e.into_inner()).get(app)?;
        let (since, interval) = (last.elapsed(), interval(instances));
        (!converged && since < interval).then(|| interval - since)
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
        assert_eq!(
            writes.hold("ns/a", false, 3),
            None,
            "never written: write now"
        );
        writes.wrote("ns/a", 1);
        let wait = writes
            .hold("ns/a", false, 3)
            .expect("held right after a write");
        assert!(wait <= Duration::from_secs(1));
        assert_eq!(writes.hold("ns/a", true, 3), None, "converged: never held");
        assert_eq!(writes.hold("ns/b", false, 3), None, "per app");
        writes.forget("ns/a");
        assert_eq!(writes.hold("ns/a", false, 3), None, "forgotten");
    }

    #[test]
    fn a_larger_status_is_written_less_often_while_converging() {
        let writes = StatusWrites::default();
        writes.wrote("ns/a", 1);
        let small = writes.hold("ns/a", false, 100).expect("held");
        let large = writes.hold("ns/a", false, 1000).expect("held");
        assert!(small <= Duration::from_secs(1), "{small:?}");
        assert!(large > Duration::from_secs(9), "{large:?}");
        assert_eq!(interval(0), Duration::from_secs(1));
        assert_eq!(interval(500), Duration::from_secs(5));
        assert_eq!(interval(usize::MAX), Duration::from_secs(10));
        assert_eq!(
            writes.hold("ns/a", true, 1000),
            None,
            "converged: never held"
        );
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

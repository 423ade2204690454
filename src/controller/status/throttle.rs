//! The status write throttle: while an app converges, its status is
//! written at most once per [`STATUS_INTERVAL`]; a converged status is
//! written at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two status writes of an app that is converging.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// When each app's status was last written.
#[derive(Default)]
pub struct StatusWrites(Mutex<HashMap<String, Instant>>);

impl StatusWrites {
    /// How long to hold a write back (`None`: write now). A converged status
    /// is never held: it is what users and tests wait for.
    pub fn hold(&self, app: &str, converged: bool) -> Option<Duration> {
        let last = *self.0.lock().unwrap_or_else(|e| e.into_inner()).get(app)?;
        let since = last.elapsed();
        (!converged && since < STATUS_INTERVAL).then(|| STATUS_INTERVAL - since)
    }

    pub fn wrote(&self, app: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(app.to_string(), Instant::now());
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
        writes.wrote("ns/a");
        let wait = writes
            .hold("ns/a", false)
            .expect("held right after a write");
        assert!(wait <= STATUS_INTERVAL);
        assert_eq!(writes.hold("ns/a", true), None, "converged: never held");
        assert_eq!(writes.hold("ns/b", false), None, "per app");
        writes.forget("ns/a");
        assert_eq!(writes.hold("ns/a", false), None, "forgotten");
    }
}

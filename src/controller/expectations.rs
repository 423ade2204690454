//! Write expectations: what the controller's own writes must look like in
//! the caches before it plans again.
//!
//! A cache shows a write one watch event later. Planning from a cache that
//! has not seen the claims created a moment ago would create those instances
//! a second time (I4). So every write records its expected effect, and a
//! reconcile plans only once the cached objects of its app show all of
//! them. An expectation nobody can meet (the object was removed by someone
//! else before the cache saw it) lapses after [`LAPSE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::observe::ClusterObjects;

/// How long an unmet expectation holds planning back.
pub const LAPSE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Reservation,
    Claim,
    Volume,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Created by this write.
    Present,
    /// Deleted: absent, or marked for deletion.
    Gone,
    /// Carries this annotation.
    Annotated(&'static str),
    /// A volume whose claimRef names this claim.
    ClaimRef(String),
}

#[derive(Debug)]
struct Expected {
    kind: Kind,
    name: String,
    effect: Effect,
    since: Instant,
}

/// Per app (`namespace/name`), the effects not yet seen.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Vec<Expected>>>);

impl Expectations {
    pub fn expect(&self, app: &str, kind: Kind, name: &str, effect: Effect) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(app.to_string()).or_default().push(Expected {
            kind,
            name: name.to_string(),
            effect,
            since: Instant::now(),
        });
    }

    /// Forgets what `objects` (the app's cached objects) show, and what has
    /// lapsed; returns how many expectations are still unmet.
    pub fn unmet(&self, app: &str, objects: &ClusterObjects) -> usize {
        self.unmet_at(app, objects, Instant::now())
    }

    fn unmet_at(&self, app: &str, objects: &ClusterObjects, now: Instant) -> usize {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get_mut(app) else {
            return 0;
        };
        list.retain(|e| {
            let pending = !seen(e, objects);
            let lapsed = now.duration_since(e.since) >= LAPSE;
            if pending && lapsed {
                tracing::warn!(%app, kind = ?e.kind, name = %e.name, effect = ?e.effect,
                    "a write of this controller did not show in its cache in time; planning without it");
            }
            pending && !lapsed
        });
        let left = list.len();
        if left == 0 {
            map.remove(app);
        }
        left
    }

    /// Drops everything expected for an app that is gone.
    pub fn forget(&self, app: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(app);
    }
}

fn seen(expected: &Expected, objects: &ClusterObjects) -> bool {
    let name = expected.name.as_str();
    if let Effect::ClaimRef(claim) = &expected.effect {
        let Some(volume) = objects.volumes.iter().find(|v| v.meta.name == name) else {
            return true; // gone: nothing will ever show the effect
        };
        return volume.claim_name.as_deref() == Some(claim.as_str());
    }
    let meta = match expected.kind {
        Kind::Pod => objects
            .pods
            .iter()
            .map(|o| &o.meta)
            .find(|m| m.name == name),
        Kind::Reservation => objects
            .reservations
            .iter()
            .map(|o| &o.meta)
            .find(|m| m.name == name),
        Kind::Claim => objects
            .claims
            .iter()
            .map(|o| &o.meta)
            .find(|m| m.name == name),
        Kind::Volume => objects
            .volumes
            .iter()
            .map(|o| &o.meta)
            .find(|m| m.name == name),
    };
    match (&expected.effect, meta) {
        (Effect::Present, found) => found.is_some(),
        (Effect::Gone, Some(m)) => m.deleting,
        (Effect::Annotated(key), Some(m)) => m.has_annotation(key),
        // The object is gone: deleted as asked, or nothing will ever show
        // the effect.
        (_, None) | (Effect::ClaimRef(_), Some(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cache::{CachedClaim, CachedPod};
    use crate::names::ANNOTATION_WIPE_MARK;
    use serde_json::json;
    use std::sync::Arc;

    fn objects(pods: &[&str], claims: &[(&str, bool)]) -> ClusterObjects {
        ClusterObjects {
            pods: pods
                .iter()
                .map(|n| {
                    let pod: CachedPod =
                        serde_json::from_value(json!({ "metadata": { "name": n } })).unwrap();
                    Arc::new((&pod).into())
                })
                .collect(),
            reservations: vec![],
            claims: claims
                .iter()
                .map(|(n, marked)| {
                    let annotations = if *marked {
                        json!({ ANNOTATION_WIPE_MARK: "true" })
                    } else {
                        json!({})
                    };
                    let claim: CachedClaim = serde_json::from_value(
                        json!({ "metadata": { "name": n, "annotations": annotations } }),
                    )
                    .unwrap();
                    Arc::new((&claim).into())
                })
                .collect(),
            volumes: vec![],
            nodes: vec![],
            gone_nodes: Default::default(),
            namespace_uid: Some("ns-uid".into()),
        }
    }

    #[test]
    fn planning_waits_until_the_cache_shows_every_write() {
        let e = Expectations::default();
        e.expect("ns/app", Kind::Claim, "c1", Effect::Present);
        e.expect("ns/app", Kind::Pod, "p1", Effect::Present);
        assert_eq!(e.unmet("ns/app", &objects(&[], &[])), 2);
        assert_eq!(e.unmet("ns/app", &objects(&[], &[("c1", false)])), 1);
        assert_eq!(e.unmet("ns/app", &objects(&["p1"], &[("c1", false)])), 0);
        assert_eq!(e.unmet("ns/other", &objects(&[], &[])), 0);

        e.expect("ns/app", Kind::Pod, "p1", Effect::Gone);
        e.expect(
            "ns/app",
            Kind::Claim,
            "c1",
            Effect::Annotated(ANNOTATION_WIPE_MARK),
        );
        assert_eq!(e.unmet("ns/app", &objects(&["p1"], &[("c1", false)])), 2);
        assert_eq!(e.unmet("ns/app", &objects(&[], &[("c1", true)])), 0);
    }

    #[test]
    fn unmet_expectations_lapse() {
        let e = Expectations::default();
        e.expect("ns/app", Kind::Pod, "p1", Effect::Present);
        let later = Instant::now() + LAPSE + Duration::from_secs(1);
        assert_eq!(e.unmet_at("ns/app", &objects(&[], &[]), later), 0);
    }
}

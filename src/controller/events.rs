//! Publishing Events. kube-runtime's `Recorder` folds repeats of an Event
//! into one with a count, from a cache that keeps every Event it published
//! for six minutes and forgets old ones only when it publishes again: after
//! a burst (a thousand apps scaling up) an idle controller held thousands of
//! Events for good, about 6 MB at 1,000 apps x 5 instances.
//!
//! Warnings, the Events that repeat (a failing reconcile, a bad wipe request
//! seen on every pass), keep one recorder. Normal Events (an instance
//! starting, stopping, wiped) go through a recorder that [`Events::renew`]
//! replaces every [`NORMAL_FOLD_WINDOW`], so their repeats fold within that
//! window and nothing outlives it.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// How long repeats of a Normal Event fold into one.
pub const NORMAL_FOLD_WINDOW: Duration = Duration::from_secs(60);

pub struct Events {
    client: Client,
    reporter: Reporter,
    warnings: Recorder,
    normal: RwLock<Recorder>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Events {
        Events {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            normal: RwLock::new(Recorder::new(client.clone(), reporter.clone())),
            client,
            reporter,
        }
    }

    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let recorder = match event.type_ {
            EventType::Warning => self.warnings.clone(),
            EventType::Normal => self
                .normal
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        recorder.publish(event, reference).await
    }

    /// Starts a new fold window for Normal Events, dropping the old one's
    /// cache (once publishes in flight with it are done).
    pub fn renew(&self) {
        let fresh = Recorder::new(self.client.clone(), self.reporter.clone());
        *self.normal.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

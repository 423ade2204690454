//! Work on the runtime's worker threads, owned by whoever waits for it.
//!
//! kube-runtime's `Controller` polls its watches and every reconcile in
//! progress from one task, so one thread would decode every watch event
//! and every API answer of every reconcile in flight. A reconcile spawned
//! runs beside the watches and beside the other reconciles, on all the
//! runtime's threads; the controller still runs one reconcile per object
//! at a time, as it awaits this one.

use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::Result;

/// Runs `work` as a task of its own and waits for it.
pub async fn on_worker<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    spawn_owned(work).await?
}

/// Spawns `work`; the task is cancelled when the returned handle is
/// dropped (as dropping `work` itself would), so no work outlives its
/// owner: a reconcile its controller gave up, or a controller after the
/// leader lease is lost.
pub fn spawn_owned<F>(work: F) -> AbortOnDropHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    AbortOnDropHandle::new(tokio::spawn(work.in_current_span()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn returns_the_answer_and_a_panic_as_an_error() {
        assert_eq!(on_worker(async { Ok(7) }).await.unwrap(), 7);
        let panicked = on_worker(async {
            if true {
                panic!("boom");
            }
            Ok(())
        })
        .await;
        assert!(matches!(panicked, Err(crate::Error::Task(_))));
    }

    #[tokio::test]
    async fn dropping_the_handle_cancels_the_work() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let handle = spawn_owned(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            flag.store(true, Ordering::SeqCst);
        });
        drop(handle);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!finished.load(Ordering::SeqCst));
    }
}

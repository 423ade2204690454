//! Watch streams handed to kube-runtime's `Controller`.
//!
//! Each of our watches backs off on its own when it fails (`default_backoff`).
//! The `Controller` also backs off its merged trigger stream on any error it
//! sees, which pauses every watch at once; after an API server restart the
//! errors of several watches (connection refused, then 410 Gone on resuming)
//! grew that shared pause to minutes, during which no cache was fed and the
//! controller planned from stale caches. So errors are logged here, once,
//! and not passed on.

use futures::{Stream, StreamExt, future};
use kube::runtime::watcher;

/// `stream` without its errors, each logged as a failure of `watch`.
pub fn errors_logged<K: Send + 'static>(
    stream: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    watch: impl Into<String>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    let watch = watch.into();
    stream.filter(move |item| {
        if let Err(error) = item {
            tracing::warn!(watch = %watch, %error, "watch failed, retrying");
        }
        future::ready(item.is_ok())
    })
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
}

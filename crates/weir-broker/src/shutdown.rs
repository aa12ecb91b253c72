//! The broker-wide stop signal: a `watch` channel that turns `true` once.

use tokio::sync::watch;

/// Completes once shutdown has been requested (or the sender is gone).
pub(crate) async fn requested(signal: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = signal.wait_for(|stop| *stop).await.map(|_| ());
}

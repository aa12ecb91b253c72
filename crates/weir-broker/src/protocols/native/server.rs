//! The accept loop: one task per connection, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::core::session::ConnectionId;
use crate::protocols::native::connection;
use crate::protocols::native::outbox::Outboxes;
use crate::state::BrokerState;

/// How long shutdown waits for connections to drain before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections until `shutdown` turns true, then waits (bounded) for them to finish.
pub(crate) async fn accept_loop(
    state: Arc<BrokerState>,
    outboxes: Arc<Outboxes>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut next_id: ConnectionId = 1;
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let id = next_id;
                    next_id += 1;
                    connections.spawn(connection::serve(state.clone(), outboxes.clone(), stream, peer, id, for_connections.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = crate::shutdown::requested(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections did not finish in time; dropping them"
        );
        connections.shutdown().await;
    }
}

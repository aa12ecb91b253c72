//! The accept loop: one task per connection, until shutdown. At most `max_connections` are
//! served at once: one more is closed as soon as it is accepted (and counted in
//! `weir_connections_refused_total`), so a flood of connections cannot take the broker's
//! memory or file descriptors from the clients it serves. Every connection gets its share of
//! the broker's in-flight byte budget (see [`crate::in_flight`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::core::session::ConnectionId;
use crate::metrics_catalog::CONNECTIONS_REFUSED_TOTAL;
use crate::protocols::native::connection;
use crate::protocols::native::in_flight::BrokerBudget;
use crate::protocols::native::outbox::Outboxes;
use crate::state::BrokerState;

/// How long shutdown waits for connections to drain before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning about refused connections per this long.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

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
    let budget = BrokerBudget::new(
        state.config.max_in_flight_bytes,
        state.config.max_answer_bytes,
        state.config.max_connection_in_flight_bytes,
    );
    let max_connections = state.config.max_connections as usize;
    let mut refused_logged: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= max_connections => {
                    drop(stream);
                    metrics::counter!(CONNECTIONS_REFUSED_TOTAL).increment(1);
                    if refused_logged.is_none_or(|at| at.elapsed() >= REFUSED_LOG_EVERY) {
                        refused_logged = Some(tokio::time::Instant::now());
                        tracing::warn!(%peer, max_connections, "connection refused: max_connections are open");
                    }
                }
                Ok((stream, peer)) => {
                    let id = next_id;
                    next_id += 1;
                    connections.spawn(connection::serve(state.clone(), outboxes.clone(), stream, peer, id, budget.connection(), for_connections.clone()));
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

//! The accept loop every TCP listener (native, Kafka) runs: one task per connection, until
//! shutdown. At most `max_connections` are served at once per listener: one more is closed as
//! soon as it is accepted (and counted in `weir_connections_refused_total`), so a flood of
//! connections cannot take the broker's memory or file descriptors from the clients it
//! serves.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::core::session::{ConnectionId, next_connection_id};
use crate::metrics_catalog::CONNECTIONS_REFUSED_TOTAL;

/// How long shutdown waits for connections to drain before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning about refused connections per this long.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` turns true, serving each with `serve`, then waits
/// (bounded) for them to finish.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, ConnectionId) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
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
                    connections.spawn(serve(stream, peer, next_connection_id()));
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

//! The Kafka listener: binds the address, then serves connections with the shared accept
//! loop ([`crate::protocols::accept`]), each with its share of the broker's in-flight byte
//! budget.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::protocols::accept::accept_loop;
use crate::protocols::in_flight::BrokerBudget;
use crate::protocols::kafka::connection;
use crate::protocols::kafka::dispatch::Listener;

/// Serves Kafka connections on `socket` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: Arc<Listener>,
    socket: TcpListener,
    budget: BrokerBudget,
    shutdown: watch::Receiver<bool>,
) {
    let max_connections = listener.state.config.max_connections as usize;
    let for_connections = shutdown.clone();
    accept_loop(socket, max_connections, shutdown, |stream, peer, id| {
        connection::serve(
            listener.clone(),
            stream,
            peer,
            id,
            budget.connection(),
            for_connections.clone(),
        )
    })
    .await;
}

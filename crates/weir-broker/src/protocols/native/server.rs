//! The native listener: the shared accept loop ([`crate::protocols::accept`]) serving each
//! connection with [`connection::serve`], every connection with its share of the broker's
//! in-flight byte budget (see [`crate::protocols::in_flight`]).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::protocols::accept::accept_loop;
use crate::protocols::in_flight::BrokerBudget;
use crate::protocols::native::connection;
use crate::protocols::native::outbox::Outboxes;
use crate::state::BrokerState;

/// Serves native connections on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    state: Arc<BrokerState>,
    outboxes: Arc<Outboxes>,
    listener: TcpListener,
    budget: BrokerBudget,
    shutdown: watch::Receiver<bool>,
) {
    let max_connections = state.config.max_connections as usize;
    let for_connections = shutdown.clone();
    accept_loop(listener, max_connections, shutdown, |stream, peer, id| {
        connection::serve(
            state.clone(),
            outboxes.clone(),
            stream,
            peer,
            id,
            budget.connection(),
            for_connections.clone(),
        )
    })
    .await;
}

//! The send side of every open connection, so the broker can send a client a request of its
//! own (a server-to-client request such as `CheckTransaction`) on the connection the client
//! opened.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_proto::OutFrame;

use crate::connection::Outgoing;
use crate::group::ConnectionId;
use crate::in_flight::Charge;

/// Connection id → the queue its writer task drains.
#[derive(Debug, Default)]
pub(crate) struct Outboxes {
    senders: Mutex<HashMap<ConnectionId, mpsc::Sender<Outgoing>>>,
}

impl Outboxes {
    /// Remembers the writer queue of a connection that just opened.
    pub fn opened(&self, connection: ConnectionId, sender: mpsc::Sender<Outgoing>) {
        self.senders.lock().insert(connection, sender);
    }

    /// Forgets a connection; its writer can then end once its own requests are answered.
    pub fn closed(&self, connection: ConnectionId) {
        self.senders.lock().remove(&connection);
    }

    /// Queues `frame` on `connection` without waiting; false when the connection is gone or
    /// its queue is full (the frame is dropped — callers send only what may be retried). Such
    /// frames are small and rare, so they are not charged to the connection's budget.
    pub fn try_send(&self, connection: ConnectionId, frame: OutFrame) -> bool {
        let sender = self.senders.lock().get(&connection).cloned();
        sender.is_some_and(|s| s.try_send((frame, Charge::none())).is_ok())
    }
}

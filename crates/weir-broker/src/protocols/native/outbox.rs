//! The send side of every open connection, so the broker can send a client a request of its
//! own (a server-to-client request such as `CheckTransaction`) on the connection the client
//! opened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_proto::frame::flags;
use weir_proto::{ApiKey, Header, OutFrame, pb};

use crate::core::session::ConnectionId;
use crate::features::transaction::check::{CheckBack, CheckBackSender};
use crate::protocols::in_flight::Charge;

/// A frame on its way to a connection's writer, with the bytes it holds charged.
pub(crate) type Outgoing = (OutFrame, Charge);

/// Connection id → the queue its writer task drains.
#[derive(Debug, Default)]
pub(crate) struct Outboxes {
    senders: Mutex<HashMap<ConnectionId, mpsc::Sender<Outgoing>>>,
    /// Request ids of the broker's own requests (clients match nothing on one-way requests,
    /// but logs and captures do).
    request_ids: AtomicU32,
}

impl CheckBackSender for Outboxes {
    /// A one-way `CheckTransaction` carrying the message as it would be committed.
    fn send(&self, connection: ConnectionId, check: &CheckBack, message: Bytes) -> bool {
        let id = self
            .request_ids
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let mut header = Header::request(ApiKey::CheckTransaction, id);
        header.flags |= flags::ONEWAY;
        let frame = OutFrame::new(
            header,
            &pb::CheckTransactionRequest {
                producer_group: check.producer_group.clone(),
                transaction_id: check.transaction_id.clone(),
                half_offset: check.half_offset,
                topic: check.topic.clone(),
                queue_id: check.queue_id,
            },
            message,
        );
        self.try_send(connection, frame)
    }
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

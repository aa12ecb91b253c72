//! Orderly consumption: each queue is processed strictly in order, one message at a time, only
//! while this member holds the queue's broker-side lock.
//!
//! **The lock is the queue's ownership in the group** (`crates/weir-broker/src/group.rs`): the
//! broker gives a queue to one member at a time and moves it only after the old owner reported
//! it no longer held, or is gone (connection closed, `LeaveGroup`, or no heartbeat for the
//! broker's session timeout). Each heartbeat answer that lists a queue renews a *lease* on it
//! that ends half a session timeout after the heartbeat was **sent** (the broker's timer starts
//! when it receives it, later), so the member's view of the lock always ends before the
//! broker's. Before each message (and each retry) the fetch loop checks the lease and waits
//! while it has run out; a heartbeat or pull that fails on the connection ends the lease at
//! once, since the broker releases a closed connection's queues at once.
//!
//! A queue is let go only after its loop stopped: the rebalancer cancels the loop, waits for
//! the message in process to finish, commits, and only then stops reporting the queue as held.
//! So during a rebalance no two members process one queue. What a lease cannot prevent: a
//! message whose handler is still running when its member's connection breaks or its lease
//! runs out may overlap with the next owner's first delivery of it (the next owner starts at
//! the last committed offset, so it sees that message again — a repeated suffix, never a
//! message of the queue before one that came earlier).
//!
//! A failed message is handed over again after `orderly_retry_pause`, the queue's later
//! messages waiting; after `orderly_max_attempts` calls it is copied to `%DLQ%<group>` (the
//! broker's `DeadLetter` request) and the queue moves on.

use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use weir_proto::{ApiKey, pb};

use crate::consumer::offset_store::QueueProgress;
use crate::consumer::{ConsumeResult, Handler, Member, QueueKey, run_handler};
use crate::message::ReceivedMessage;

/// How often a loop whose lease ran out looks whether it was renewed.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// This member's lease on a queue's lock: valid until an instant.
#[derive(Debug)]
pub(crate) struct Lease {
    until: Mutex<Instant>,
}

impl Lease {
    /// A lease valid until `until`.
    pub(crate) fn new(until: Instant) -> Lease {
        Lease {
            until: Mutex::new(until),
        }
    }

    /// Sets the end of the lease (a heartbeat confirmed the queue, or failed).
    pub(crate) fn set(&self, until: Instant) {
        *self.until.lock() = until;
    }

    /// Ends the lease now.
    pub(crate) fn expire(&self) {
        self.set(Instant::now());
    }

    fn valid(&self) -> bool {
        Instant::now() < *self.until.lock()
    }

    /// Waits until the lease is valid; `false` when cancelled first.
    async fn hold(&self, cancel: &CancellationToken) -> bool {
        while !self.valid() {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(LEASE_POLL) => {}
            }
        }
        !cancel.is_cancelled()
    }
}

/// One owned queue's loop, as orderly delivery needs it.
pub(crate) struct QueueLoop<'a> {
    /// The member.
    pub member: &'a Member,
    /// The queue.
    pub key: &'a QueueKey,
    /// Its broker.
    pub broker: &'a str,
    /// Processed offsets.
    pub progress: &'a Mutex<QueueProgress>,
    /// The lease on the queue's lock.
    pub lease: &'a Lease,
    /// Fires when the queue is to be let go.
    pub cancel: &'a CancellationToken,
}

/// Hands `messages` (of one queue, in order) to `handler` one at a time under the lease,
/// retrying a failure in place; marks each done in the loop's progress. Returns `false` when
/// cancelled (the message in process, if any, is finished first; the rest stay uncommitted).
pub(crate) async fn deliver(
    q: &QueueLoop<'_>,
    handler: &Handler,
    messages: &[ReceivedMessage],
) -> bool {
    let QueueLoop {
        member,
        key,
        broker,
        progress,
        lease,
        cancel,
    } = *q;
    let config = &member.config;
    for message in messages {
        let mut attempt = 0;
        loop {
            if !lease.hold(cancel).await {
                return false;
            }
            attempt += 1;
            let result = run_handler(|| match handler {
                Handler::Each(f) => f(message),
                Handler::Batch(f) => f(std::slice::from_ref(message)),
            });
            if result == ConsumeResult::Success {
                break;
            }
            if attempt >= config.orderly_max_attempts {
                if !dead_letter(member, key, broker, message, attempt, cancel).await {
                    return false;
                }
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(config.orderly_retry_pause) => {}
            }
        }
        progress.lock().processed(message.queue_offset);
    }
    true
}

/// Copies `message` to `%DLQ%<group>`, retrying until it is there or the loop is cancelled.
async fn dead_letter(
    member: &Member,
    key: &QueueKey,
    broker: &str,
    message: &ReceivedMessage,
    attempts: u32,
    cancel: &CancellationToken,
) -> bool {
    let request = pb::DeadLetterRequest {
        group: member.config.group.clone(),
        topic: key.topic.clone(),
        queue_id: key.queue_id,
        queue_offset: message.queue_offset,
        attempts,
    };
    loop {
        let sent = async {
            let conn = member.pool.get(broker).await?;
            conn.call::<_, pb::DeadLetterResponse>(ApiKey::DeadLetter, &request, Bytes::new(), None)
                .await
        };
        match sent.await {
            Ok(_) => {
                error!(queue = %key, offset = message.queue_offset, attempts, "handler kept failing; message moved to the dead-letter topic");
                return true;
            }
            Err(e) => {
                warn!(queue = %key, offset = message.queue_offset, error = %e, "cannot dead-letter the message; trying again")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(member.config.orderly_retry_pause) => {}
        }
    }
}

/// Session timeout assumed when a broker does not say its own.
const DEFAULT_SESSION_TIMEOUT_MS: u32 = 10_000;

/// The lease a heartbeat sent at `sent` renews: half the broker's session timeout.
pub(crate) fn lease_end(sent: Instant, session_timeout_ms: u32) -> Instant {
    let timeout = match session_timeout_ms {
        0 => DEFAULT_SESSION_TIMEOUT_MS,
        ms => ms,
    };
    sent + Duration::from_millis(u64::from(timeout) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_is_held_only_until_it_ends_and_waits_for_renewal() {
        let sent = Instant::now();
        let lease = Lease::new(lease_end(sent, 200));
        let cancel = CancellationToken::new();
        assert!(lease.hold(&cancel).await);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            !lease.valid(),
            "half the session timeout after the heartbeat was sent"
        );
        // A renewal arriving later lets the waiting loop go on.
        let renew = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lease.set(lease_end(Instant::now(), 10_000));
        };
        let (held, ()) = tokio::join!(lease.hold(&cancel), renew);
        assert!(held);
        lease.expire();
        cancel.cancel();
        assert!(!lease.hold(&cancel).await);
        assert_eq!(lease_end(sent, 0), sent + Duration::from_secs(5));
    }
}

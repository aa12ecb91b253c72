//! What a load run saw, event by event: every produce acknowledged or failed, every message the
//! consumer group received, every committed offset sampled, every fault injected, and, at the
//! end, every queue read back from offset 0. Times are from the start of the run.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// A producer's message identity: which producer sent it and its sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKey {
    /// The producer.
    pub producer: u32,
    /// Its sequence within the producer, from 0.
    pub seq: u64,
}

impl MessageKey {
    /// The message body (and key) that carries this identity: `p<producer>-s<seq>`.
    pub fn body(self) -> String {
        format!("p{}-s{}", self.producer, self.seq)
    }

    /// The identity a body made by [`MessageKey::body`] carries.
    pub fn parse(body: &[u8]) -> Option<MessageKey> {
        let text = std::str::from_utf8(body).ok()?;
        let (producer, seq) = text.strip_prefix('p')?.split_once("-s")?;
        Some(MessageKey {
            producer: producer.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// A produce the cluster acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The message.
    pub key: MessageKey,
    /// The queue it was stored in.
    pub queue: u32,
    /// Its offset there.
    pub offset: u64,
    /// Its message id, as the acknowledgement named it.
    pub message_id: String,
    /// When the send began.
    pub sent: Duration,
    /// When the acknowledgement arrived.
    pub at: Duration,
}

/// A produce that failed (it may or may not have been stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The message.
    pub key: MessageKey,
    /// The client's error.
    pub error: String,
    /// When the error arrived.
    pub at: Duration,
}

/// A message the consumer group was handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What the body said (`None`: a body no producer of this run made).
    pub key: Option<MessageKey>,
    /// Its queue.
    pub queue: u32,
    /// Its offset there.
    pub offset: u64,
    /// When it was handed over.
    pub at: Duration,
}

/// A group's committed offset of one queue, as the cluster answered at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSample {
    /// The queue.
    pub queue: u32,
    /// The committed offset.
    pub offset: u64,
    /// When it was read.
    pub at: Duration,
}

/// A fault injected during the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What was done (`"SIGKILL leader"`, `"isolate leader"`, ...).
    pub what: String,
    /// To which replica (node id).
    pub node: u64,
    /// When.
    pub at: Duration,
}

/// One message read back at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The body's identity (`None`: a body no producer of this run made).
    pub key: Option<MessageKey>,
    /// Its message id as the cluster names it now.
    pub message_id: String,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// How many messages each producer tried to send (sequences `0..n` were sent).
    pub attempted: BTreeMap<u32, u64>,
    /// Acknowledged produces.
    pub acks: Vec<Ack>,
    /// Failed produces.
    pub failures: Vec<SendFailure>,
    /// What the consumer group received.
    pub deliveries: Vec<Delivery>,
    /// Committed offsets, sampled in time order.
    pub commits: Vec<CommitSample>,
    /// Faults injected, in time order.
    pub faults: Vec<Fault>,
    /// Each queue read back from offset 0 at the end: queue → offset → message. An offset
    /// missing from a queue's map was not readable (a hole).
    pub read_back: BTreeMap<u32, BTreeMap<u64, Stored>>,
    /// Each queue's end offset as the read back saw it.
    pub queue_ends: BTreeMap<u32, u64>,
}

impl History {
    /// Acknowledged messages the consumer group was never handed at their acknowledged place.
    pub fn undelivered(&self) -> usize {
        let delivered: HashSet<(u32, u64)> = self
            .deliveries
            .iter()
            .map(|d| (d.queue, d.offset))
            .collect();
        self.acks
            .iter()
            .filter(|a| !delivered.contains(&(a.queue, a.offset)))
            .count()
    }
}

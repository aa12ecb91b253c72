//! Changes to broker state that a broker group makes through its Raft log, so that every
//! replica applies them in the same order and a new leader starts from the same topics and
//! consumer offsets (Kafka keeps offsets in `__consumer_offsets` for the same reason).
//!
//! Standalone brokers change their tables directly; in a group the leader proposes a
//! [`StateChange`] and every replica's [`StateApplier`] applies it once it is committed.
//! Applying is idempotent: a replica replaying its log after a restart may meet a change its
//! files already hold.

use serde::{Deserialize, Serialize};

/// One change to replicated broker state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StateChange {
    /// A topic was created (nothing happens if it exists).
    TopicCreated {
        /// Its name.
        name: String,
        /// Its queue count.
        queues: u32,
    },
    /// A topic grew to `queues` queues in total.
    QueuesAdded {
        /// Its name.
        name: String,
        /// Its new queue count.
        queues: u32,
    },
    /// A topic was deleted, with its queues and the groups' offsets on it.
    TopicDeleted {
        /// Its name.
        name: String,
    },
    /// A consumer group committed offsets.
    OffsetsCommitted {
        /// The group.
        group: String,
        /// (topic, queue, next offset to consume).
        offsets: Vec<(String, u32, u64)>,
    },
    /// A Kafka consumer group committed offsets, each with its metadata string.
    OffsetsCommittedWithMetadata {
        /// The group.
        group: String,
        /// (topic, queue, next offset to consume, metadata).
        offsets: Vec<(String, u32, u64, String)>,
    },
    /// The leader delivered delayed messages: these `%DELAY%` queue offsets are done.
    DelaysDelivered {
        /// Queue offsets of `%DELAY%` queue 0.
        offsets: Vec<u64>,
    },
    /// The leader's shared groups changed: what each changed queue holds now (see
    /// `features::groups::shared`, "In a broker group").
    SharedProgress {
        /// The queues changed since the leader last sent this.
        queues: Vec<SharedQueueProgress>,
    },
}

/// A shared group's progress on one queue, as the leader holds it, for the offsets that
/// changed since it last sent one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SharedQueueProgress {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// The group was reset on this queue: forget its acks and deliveries first.
    pub reset: bool,
    /// Every offset below it is acked (or gone).
    pub low_water: u64,
    /// The next offset never delivered.
    pub cursor: u64,
    /// Changed offsets now acked, as runs `(first offset, count)`.
    pub acked: Vec<(u64, u64)>,
    /// Changed offsets now in flight.
    pub in_flight: Vec<InFlightRun>,
}

/// Consecutive in-flight offsets with consecutive tokens, of one attempt, visible again at
/// the same time (the fresh messages one receive took, or a single delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InFlightRun {
    /// The first offset.
    pub offset: u64,
    /// How many offsets.
    pub count: u64,
    /// Deliveries so far.
    pub attempt: u32,
    /// The first offset's token; each next offset's is one more.
    pub token: u64,
    /// Wall-clock Unix time in ms at which they are visible again.
    pub visible_at_ms: u64,
}

/// Where a committed change was proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// By this replica, leading, in this process: its tables may already be ahead of it.
    Here,
    /// Elsewhere (another replica, or this one before a restart).
    Elsewhere,
}

/// Applies committed state changes to this replica's tables.
pub(crate) trait StateApplier: Send + Sync + std::fmt::Debug {
    /// Applies one change (idempotently), proposed at `origin`.
    fn apply(&self, change: &StateChange, origin: Origin);
}

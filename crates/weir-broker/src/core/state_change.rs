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
}

/// Applies committed state changes to this replica's tables.
pub(crate) trait StateApplier: Send + Sync + std::fmt::Debug {
    /// Applies one change (idempotently).
    fn apply(&self, change: &StateChange);
}

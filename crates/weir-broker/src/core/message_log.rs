//! The write path: the only writer of the commit log, and the only place that decides when an
//! append is acknowledged.
//!
//! Every append the broker makes — a producer's batch, a delayed message parked in `%DELAY%`
//! or delivered, a retry, a dead letter, a half message, a transaction's decision, a
//! check-back record — goes through [`MessageLog`]. So the replication that comes next wraps
//! one type: it changes [`AckPolicy`] (committed by a majority instead of durable here) and
//! nothing else needs to know.
//!
//! An append happens in two steps:
//!
//! ```text
//! write(batch)              validated, stamped in place, in the log (not yet acknowledged)
//!   └─ acknowledged(end)    waits until the policy holds for everything before `end`
//! ```
//!
//! [`MessageLog::append`] does both. A caller that must take its place in the log under a
//! lock of its own (the idempotence check, a delayed batch split in two) writes under the lock
//! and waits for the acknowledgement outside it.
//!
//! Reads go through here too, so that what a consumer may see can later be bounded by what is
//! committed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::core::state_change::StateChange;
use bytes::{Bytes, BytesMut};
use weir_store::{
    AppendResult, FlushMode, QueueOffsets, ReadResult, Store, StoreError, StoreStats, TagFilter,
};

/// When an append counts as acknowledged (answered "stored" to whoever made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckPolicy {
    /// One node: readable (dispatched) — after a crash it may be lost if it was not flushed
    /// (the `async` flush mode's trade: no fsync on the produce path).
    Dispatched,
    /// One node: readable and fsynced (the `sync` flush mode, with group commit).
    DispatchedAndDurable,
}

impl AckPolicy {
    /// The policy a store's flush mode asks for.
    pub fn for_flush(mode: FlushMode) -> AckPolicy {
        match mode {
            FlushMode::Sync => AckPolicy::DispatchedAndDurable,
            FlushMode::Async => AckPolicy::Dispatched,
        }
    }

    /// Whether an append is acknowledged, from what has been observed of it.
    pub fn holds(self, observed: Observed) -> bool {
        match self {
            AckPolicy::Dispatched => observed.dispatched,
            AckPolicy::DispatchedAndDurable => observed.dispatched && observed.durable,
        }
    }
}

/// What has happened to an append so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Observed {
    /// Indexed: readable by consumers and lookups.
    pub dispatched: bool,
    /// Fsynced on this node.
    pub durable: bool,
}

/// How a broker group's writes go through consensus: the replication layer implements it, so
/// the write path knows no Raft.
pub(crate) trait Consensus: Send + Sync + std::fmt::Debug {
    /// Proposes a batch; returns where it went once it is committed on a majority and
    /// readable here, or `NotLeader` (naming the leader when known) on a follower.
    fn append<'a>(
        &'a self,
        topic: &'a str,
        queue_id: u32,
        batch: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<AppendResult, StoreError>> + Send + 'a>>;

    /// Proposes a change to replicated broker state; returns once it is committed and
    /// applied here.
    fn propose(
        &self,
        change: StateChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;

    /// The group leader's client address, when known.
    fn leader_addr(&self) -> Option<String>;

    /// Whether this replica leads its group now.
    fn is_leader(&self) -> bool;

    /// The Raft term this replica is in.
    fn term(&self) -> u64;
}

/// The commit log as the broker sees it: one writer, one acknowledgement rule. Cheap to clone
/// (a handle).
#[derive(Debug, Clone)]
pub(crate) struct MessageLog {
    store: Arc<Store>,
    policy: AckPolicy,
    /// A broker group's consensus; `None` standalone.
    consensus: Option<Arc<dyn Consensus>>,
}

impl MessageLog {
    /// The write path over `store`, acknowledging as its flush mode asks.
    pub fn new(store: Arc<Store>) -> MessageLog {
        let policy = AckPolicy::for_flush(store.config().flush);
        MessageLog {
            store,
            policy,
            consensus: None,
        }
    }

    /// Sends every write through `consensus` from now on: acknowledged means committed on a
    /// majority of the broker group (and, in `sync` flush mode, fsynced there).
    pub fn replicate(&mut self, consensus: Arc<dyn Consensus>) {
        self.consensus = Some(consensus);
    }

    /// Whether writes go through a broker group's consensus.
    pub fn is_replicated(&self) -> bool {
        self.consensus.is_some()
    }

    /// The term this replica leads in, for state that must be rebuilt from the log once per
    /// leadership (0 standalone: one leader forever).
    pub fn leader_term(&self) -> Result<u64, StoreError> {
        self.check_leader()?;
        Ok(self.consensus.as_ref().map_or(0, |c| c.term()))
    }

    /// `NotLeader` naming the leader, when this replica does not lead its group.
    pub fn check_leader(&self) -> Result<(), StoreError> {
        match &self.consensus {
            Some(c) if !c.is_leader() => Err(StoreError::NotLeader {
                leader: c.leader_addr(),
            }),
            _ => Ok(()),
        }
    }

    /// Makes a change to replicated broker state through the group's log (every replica
    /// applies it); `Ok(false)` on a standalone broker, which changes its tables itself.
    pub async fn propose(&self, change: StateChange) -> Result<bool, StoreError> {
        match &self.consensus {
            Some(consensus) => consensus.propose(change).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Appends a batch and returns once it is acknowledged.
    pub async fn append(
        &self,
        topic: &str,
        queue_id: u32,
        mut batch: BytesMut,
    ) -> Result<AppendResult, StoreError> {
        if let Some(consensus) = &self.consensus {
            return consensus.append(topic, queue_id, batch.freeze()).await;
        }
        let written = self.write(topic, queue_id, &mut batch)?;
        self.acknowledged(written.end_offset).await?;
        Ok(written)
    }

    /// Appends a batch (records checked, stamped in place, written with one write) without
    /// waiting: the caller must wait for [`MessageLog::acknowledged`] before it tells anyone
    /// the batch is stored.
    pub fn write(
        &self,
        topic: &str,
        queue_id: u32,
        batch: &mut [u8],
    ) -> Result<AppendResult, StoreError> {
        if self.consensus.is_some() {
            // The position of a replicated write is known only once the leader's log storage
            // takes it, inside Raft: callers that must write under a lock of their own are
            // not supported in a broker group yet.
            return Err(StoreError::Replication(
                "this kind of write (idempotent or delayed produce) is not replicated yet".into(),
            ));
        }
        self.store.append_now(topic, queue_id, batch)
    }

    /// Waits until everything before commit-log offset `end` is acknowledged.
    pub async fn acknowledged(&self, end: u64) -> Result<(), StoreError> {
        if self.policy.holds(self.observe(end)) {
            return Ok(());
        }
        // Readable first (on this thread when the dispatcher is idle), then durable: the
        // flusher gathers appends into one fsync meanwhile (group commit).
        self.store.dispatch_now();
        if self.policy == AckPolicy::DispatchedAndDurable {
            self.store.wait_durable(end).await?;
        }
        self.store.wait_dispatched(end).await
    }

    fn observe(&self, end: u64) -> Observed {
        Observed {
            dispatched: self.store.is_dispatched(end),
            durable: self.store.is_durable(end),
        }
    }

    /// Reads from a queue (see [`Store::read`]).
    pub fn read(
        &self,
        topic: &str,
        queue_id: u32,
        from_offset: u64,
        max_messages: u32,
        max_bytes: u32,
        filter: &TagFilter,
    ) -> Result<ReadResult, StoreError> {
        self.store.read(
            topic,
            queue_id,
            from_offset,
            max_messages,
            max_bytes,
            filter,
        )
    }

    /// The leader epoch stamped on the batch holding a queue offset (see
    /// [`Store::leader_epoch_at`]).
    pub fn leader_epoch_at(&self, topic: &str, queue_id: u32, offset: u64) -> Option<i32> {
        self.store.leader_epoch_at(topic, queue_id, offset)
    }

    /// The checked record at a commit-log offset.
    pub fn read_at(&self, commit_log_offset: u64) -> Result<Bytes, StoreError> {
        self.store.read_at(commit_log_offset)
    }

    /// A queue's readable range.
    pub fn queue_offsets(&self, topic: &str, queue_id: u32) -> QueueOffsets {
        self.store.queue_offsets(topic, queue_id)
    }

    /// The commit-log bytes a topic's readable batches take.
    pub fn topic_bytes(&self, topic: &str) -> u64 {
        self.store.topic_bytes(topic)
    }

    /// Up to `max` records of `topic` with key `key`, oldest first.
    pub fn find_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.store.find_by_key(topic, key, max)
    }

    /// The first queue offset stored at or after `timestamp_ms`.
    pub fn offset_for_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<u64, StoreError> {
        self.store.offset_for_time(topic, queue_id, timestamp_ms)
    }

    /// The first message whose own timestamp is at or after `timestamp_ms`: its queue offset
    /// and timestamp (Kafka's ListOffsets by time).
    pub fn offset_for_record_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(u64, i64)>, StoreError> {
        self.store
            .offset_for_record_time(topic, queue_id, timestamp_ms)
    }

    /// Drops a deleted topic's queues and indexes (its records stay until retention).
    pub fn delete_queues(&self, topic: &str) -> Result<(), StoreError> {
        self.store.delete_queues(topic)
    }

    /// The damaged ranges found so far (by recovery and by reads), oldest first.
    pub fn damaged_ranges(&self) -> Vec<weir_store::DamagedRange> {
        self.store.damaged_ranges()
    }

    /// Every queue the store has, with its readable range.
    pub fn queues(&self) -> Vec<(String, u32, weir_store::QueueOffsets)> {
        self.store.queues()
    }

    /// Store figures for the admin API and metrics.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// The store's settings.
    pub fn config(&self) -> &weir_store::StoreConfig {
        self.store.config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgement_follows_the_policy() {
        let nothing = Observed::default();
        let readable = Observed {
            dispatched: true,
            durable: false,
        };
        let durable_only = Observed {
            dispatched: false,
            durable: true,
        };
        let both = Observed {
            dispatched: true,
            durable: true,
        };
        let async_mode = AckPolicy::for_flush(FlushMode::Async);
        let sync_mode = AckPolicy::for_flush(FlushMode::Sync);
        assert!(!async_mode.holds(nothing) && async_mode.holds(readable));
        assert!(
            !async_mode.holds(durable_only),
            "never acknowledge what cannot be read"
        );
        assert!(!sync_mode.holds(readable) && !sync_mode.holds(durable_only));
        assert!(sync_mode.holds(both));
    }
}

//! Transactional messages: half messages kept invisible in `%HALF%` until their producer
//! commits (the message is re-encoded into its real topic and queue) or rolls back; decisions
//! recorded in `%HALF_OP%`; and the check-back that asks a live member of the producer group
//! about a transaction left undecided.
//!
//! State kept in memory, rebuilt at start ([`recovery`]): the pending set (half messages with
//! no decision yet, each with its check-backs so far and when the next is due) and the live
//! producer-group members (connections that sent `RegisterProducer`). Decisions and
//! check-backs are op records in `%HALF_OP%`, so the pending set and its check counts come back
//! after a restart. The only file is `config/transactions.json`, the low-water mark: the
//! `%HALF%` queue offset below which every half message is decided, so a restart scans the
//! half queue from there (and the op queue whole) instead of from the beginning.
//!
//! A commit appends the real message before the decision record: a crash between the two
//! leaves the half pending, and the check-back may commit it again (at least once, as in
//! RocketMQ). A rollback writes only the decision record.

pub(crate) mod awaiting;
pub(crate) mod check;
pub(crate) mod half;
pub(crate) mod recovery;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_proto::ErrorCode;
use weir_proto::batch::{Entry, MAX_UNCOMPRESSED_LEN, with_record};
use weir_proto::transaction::{Decision, HALF_TOPIC, OP_TOPIC};
use weir_store::AppendResult;

use crate::core::clock::now_ms;
use crate::core::message_log::MessageLog;
use crate::core::session::ConnectionId;
use crate::core::topics::TopicTable;
use crate::error::{BrokerError, RequestError};
use crate::features::transaction::half::HalfInfo;

/// When and how often undecided transactions are checked back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckTimings {
    /// From the half message to its first check.
    pub first: Duration,
    /// Between two checks.
    pub interval: Duration,
    /// Checks before the transaction is rolled back.
    pub max: u32,
}

/// A half message with no decision yet.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// What the half message says.
    pub info: HalfInfo,
    /// Its offset in the `%HALF%` queue.
    pub half_queue_offset: u64,
    /// When the next check is due.
    pub next_check: Instant,
    /// Checks made so far (recorded in `%HALF_OP%`, so counted across restarts).
    pub checks: u32,
    /// A decision is being written; nobody else may decide it.
    pub deciding: bool,
}

/// A connection that registered as a member of a producer group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    connection: ConnectionId,
    client_id: String,
}

/// The low-water mark file, `config/transactions.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LowWater {
    /// Every `%HALF%` queue offset below this is decided.
    half_queue_offset: u64,
}

/// Where a committed transaction's message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Its topic.
    pub topic: String,
    /// Its queue.
    pub queue_id: u32,
    /// Where it was stored.
    pub stored: AppendResult,
}

/// Pending transactions and live producer-group members, built from the write path (half
/// messages, committed messages and op records) and the topic table (a commit checks that its
/// queue still exists).
#[derive(Debug)]
pub(crate) struct Transactions {
    log: MessageLog,
    topics: Arc<TopicTable>,
    timings: CheckTimings,
    /// Half commit-log offset → its pending state.
    pending: Mutex<BTreeMap<u64, Pending>>,
    /// Producer group → members with a live connection.
    members: Mutex<HashMap<String, Vec<Member>>>,
    low_water_path: PathBuf,
    /// The low-water mark last written to disk.
    persisted_low_water: Mutex<u64>,
}

impl Transactions {
    /// The path of the low-water file under `data_dir`.
    fn path(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("config").join("transactions.json")
    }

    /// Registers `connection` as a live member of `group`.
    pub fn register(&self, group: &str, connection: ConnectionId, client_id: &str) {
        let mut members = self.members.lock();
        let list = members.entry(group.to_owned()).or_default();
        if !list.iter().any(|m| m.connection == connection) {
            tracing::debug!(group, client_id, connection, "producer registered");
            list.push(Member {
                connection,
                client_id: client_id.to_owned(),
            });
        }
    }

    /// Forgets every registration made on a closed connection.
    pub fn connection_closed(&self, connection: ConnectionId) {
        let mut members = self.members.lock();
        members.retain(|_, list| {
            list.retain(|m| m.connection != connection);
            !list.is_empty()
        });
    }

    /// The `n`-th live member of `group` (round-robin over them), if any.
    fn member(&self, group: &str, n: u32) -> Option<(ConnectionId, String)> {
        let members = self.members.lock();
        let list = members.get(group).filter(|l| !l.is_empty())?;
        let m = &list[n as usize % list.len()];
        Some((m.connection, m.client_id.clone()))
    }

    /// Adds a freshly stored half message to the pending set.
    pub fn add_pending(&self, half_offset: u64, half_queue_offset: u64, info: HalfInfo) {
        self.pending.lock().insert(
            half_offset,
            Pending {
                info,
                half_queue_offset,
                next_check: Instant::now() + self.timings.first,
                checks: 0,
                deciding: false,
            },
        );
    }

    /// Claims the right to decide the half at `half_offset`: `Ok(Some)` with its state,
    /// `Ok(None)` when it is not pending (decided already, or never a half message here).
    fn claim(
        &self,
        half_offset: u64,
        transaction_id: &str,
    ) -> Result<Option<HalfInfo>, RequestError> {
        let mut pending = self.pending.lock();
        let Some(p) = pending.get_mut(&half_offset) else {
            return Ok(None);
        };
        if p.info.transaction_id != transaction_id {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "the half message at {half_offset} belongs to transaction {:?}, not {transaction_id:?}",
                    p.info.transaction_id
                ),
            ));
        }
        if p.deciding {
            return Err(RequestError::new(
                ErrorCode::Busy,
                "the transaction is being decided",
            ));
        }
        p.deciding = true;
        Ok(Some(p.info.clone()))
    }

    /// Ends a claim: the half is decided (removed) or the decision failed (pending again).
    fn release(&self, half_offset: u64, decided: bool) {
        let mut pending = self.pending.lock();
        if decided {
            pending.remove(&half_offset);
        } else if let Some(p) = pending.get_mut(&half_offset) {
            p.deciding = false;
        }
    }

    /// Writes the low-water mark if it moved: the smallest pending half's queue offset, or the
    /// end of the half queue when none is pending.
    pub fn persist_low_water(&self, half_queue_end: u64) -> Result<(), BrokerError> {
        let low = self
            .pending
            .lock()
            .values()
            .map(|p| p.half_queue_offset)
            .min()
            .unwrap_or(half_queue_end);
        let mut persisted = self.persisted_low_water.lock();
        if *persisted == low {
            return Ok(());
        }
        let json = serde_json::to_vec(&LowWater {
            half_queue_offset: low,
        })
        .map_err(|e| {
            BrokerError::Config(format!("encoding the transaction low-water mark: {e}"))
        })?;
        crate::atomic_file::write_atomic(&self.low_water_path, &json)
            .map_err(|e| BrokerError::io(self.low_water_path.display(), e))?;
        *persisted = low;
        Ok(())
    }
}

impl Transactions {
    /// The `%HALF%` record at `half_offset` and what it says.
    fn read_half(&self, half_offset: u64) -> Result<(bytes::Bytes, HalfInfo), RequestError> {
        let not_half = || {
            RequestError::new(
                ErrorCode::MessageNotFound,
                format!("no half message at commit-log offset {half_offset}"),
            )
        };
        let bytes = self.log.read_at(half_offset).map_err(|_| not_half())?;
        let info = with_record(&bytes, 0, half::info)
            .ok()
            .flatten()
            .ok_or_else(not_half)?;
        Ok((bytes, info))
    }

    /// Decides the transaction of the half message at `half_offset`; answers where a committed
    /// message went. Deciding one already decided is a no-op that succeeds (answers to check-backs
    /// may repeat).
    pub async fn end(
        &self,
        half_offset: u64,
        transaction_id: &str,
        decision: Decision,
    ) -> Result<Option<Committed>, RequestError> {
        let Some(info) = self.claim(half_offset, transaction_id)? else {
            let (_, info) = self.read_half(half_offset)?;
            if info.transaction_id != transaction_id {
                return Err(RequestError::new(
                    ErrorCode::InvalidArgument,
                    "the half message belongs to another transaction",
                ));
            }
            tracing::debug!(half_offset, transaction_id, "transaction decided already");
            return Ok(None);
        };
        let result = self.write_decision(half_offset, &info, decision).await;
        self.release(half_offset, result.is_ok());
        result
    }

    /// Appends the committed message (for a commit) and the decision record.
    async fn write_decision(
        &self,
        half_offset: u64,
        info: &HalfInfo,
        decision: Decision,
    ) -> Result<Option<Committed>, RequestError> {
        let mut committed = None;
        let mut decision = decision;
        if decision == Decision::Commit {
            let queue_exists = self
                .topics
                .get(&info.topic)
                .is_some_and(|t| t.queues > info.queue_id);
            if queue_exists {
                let (bytes, _) = self.read_half(half_offset)?;
                let message = with_record(&bytes, 0, |_, half| half::restore(half, info))
                    .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))??;
                let stored = self.log.append(&info.topic, info.queue_id, message).await?;
                committed = Some(Committed {
                    topic: info.topic.clone(),
                    queue_id: info.queue_id,
                    stored,
                });
            } else {
                tracing::warn!(topic = %info.topic, queue = info.queue_id, transaction_id = %info.transaction_id,
                "the transaction's queue is gone; rolling it back instead of committing");
                decision = Decision::Rollback;
            }
        }
        let record = half::decision_record(half_offset, &info.transaction_id, decision, now_ms())?;
        self.log.append(OP_TOPIC, 0, record).await?;
        tracing::debug!(half_offset, transaction_id = %info.transaction_id, ?decision, "transaction decided");
        Ok(committed)
    }

    /// Stores a producer's half message for `topic`/`queue_id` (a transactional batch of
    /// exactly one message, its queue already checked) in `%HALF%`.
    pub async fn store_half(
        &self,
        topic: &str,
        queue_id: u32,
        payload: &[u8],
    ) -> Result<AppendResult, RequestError> {
        let corrupt = |e: weir_proto::batch::BatchError| {
            RequestError::new(ErrorCode::CorruptMessage, e.to_string())
        };
        let entry = Entry::parse(payload).map_err(corrupt)?;
        entry.verify_batch().map_err(corrupt)?;
        entry
            .records(MAX_UNCOMPRESSED_LEN)
            .map_err(corrupt)?
            .check()
            .map_err(corrupt)?;
        if entry.len() != payload.len() || entry.record_count() != 1 {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                "a half message is sent alone, one message per produce request",
            ));
        }
        if entry.topic() != topic {
            return Err(RequestError::new(
                ErrorCode::CorruptMessage,
                format!(
                    "batch topic {:?} is not the request's {topic:?}",
                    entry.topic(),
                ),
            ));
        }
        let (bytes, info) =
            with_record(payload, 0, |e, r| half::to_half(e, r, queue_id)).map_err(corrupt)??;
        let stored = self.log.append(HALF_TOPIC, 0, bytes).await?;
        tracing::debug!(half_offset = stored.commit_log_offset, transaction_id = %info.transaction_id, "half message stored");
        self.add_pending(stored.commit_log_offset, stored.queue_offset, info);
        Ok(stored)
    }
}

//! What a Raft log entry of a broker group carries, and what applying it answers.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_store::AppendResult;

use crate::core::state_change::StateChange;

/// The application data of a Raft entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    /// A batch for one queue, as a producer (or a feature) made it: the leader's log storage
    /// validates, stamps and writes it (with the entry's term as leader epoch). Only ever
    /// proposed on the leader; never sent to a follower.
    Append {
        /// The batch's topic.
        topic: String,
        /// The batch's queue.
        queue_id: u32,
        /// One or more entries laid end to end, not yet stamped.
        batch: Bytes,
    },
    /// Stamped entries as the leader's commit log holds them: a follower writes them as they
    /// are, at the same offsets.
    Entries {
        /// The entries, end to end (no segment padding).
        bytes: Bytes,
    },
    /// A change to replicated broker state (topics, consumer offsets), applied by every
    /// replica in log order.
    State(StateChange),
    /// A batch the leader refused when it came to write it (its error): kept in the Raft log
    /// so that indices stay dense, with nothing in the commit log.
    Refused {
        /// The wire error code.
        code: u16,
        /// Why.
        message: String,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Append {
                topic,
                queue_id,
                batch,
            } => write!(f, "append {topic}/{queue_id} ({} bytes)", batch.len()),
            Command::Entries { bytes } => write!(f, "entries ({} bytes)", bytes.len()),
            Command::State(change) => write!(f, "state {change:?}"),
            Command::Refused { code, message } => write!(f, "refused ({code}: {message})"),
        }
    }
}

/// Where an applied batch went: the store's own answer, carried back to the proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Written {
    /// Commit-log offset of the first entry.
    pub commit_log_offset: u64,
    /// Commit-log offset just past the last entry.
    pub end_offset: u64,
    /// Queue offset of the first message.
    pub queue_offset: u64,
    /// Messages written.
    pub count: u32,
    /// The leader's store timestamp, ms.
    pub store_timestamp: i64,
}

impl From<AppendResult> for Written {
    fn from(r: AppendResult) -> Written {
        Written {
            commit_log_offset: r.commit_log_offset,
            end_offset: r.end_offset,
            queue_offset: r.queue_offset,
            count: r.count,
            store_timestamp: r.store_timestamp,
        }
    }
}

impl From<Written> for AppendResult {
    fn from(w: Written) -> AppendResult {
        AppendResult {
            commit_log_offset: w.commit_log_offset,
            end_offset: w.end_offset,
            queue_offset: w.queue_offset,
            count: w.count,
            store_timestamp: w.store_timestamp,
        }
    }
}

/// What applying an entry answers its proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Applied {
    /// The batch is committed and readable here.
    Written(Written),
    /// The leader refused the batch (nothing stored).
    Refused {
        /// The wire error code.
        code: u16,
        /// Why.
        message: String,
    },
    /// Not a batch (a blank or membership entry), or applied on a replica that did not
    /// propose it.
    Nothing,
}

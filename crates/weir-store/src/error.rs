//! The store's one error type, with a stable numeric code per variant.

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use weir_proto::batch::BatchError;

/// Everything that can go wrong in the store.
///
/// Each variant has a stable numeric [`code`](StoreError::code), so the broker can put it on the
/// wire; codes are never reused:
///
/// | code | variant            |
/// |------|--------------------|
/// | 1001 | `Locked`           |
/// | 1002 | `Io`               |
/// | 1003 | `DiskFull`         |
/// | 1004 | `MessageTooLarge`  |
/// | 1005 | `CorruptRecord`    |
/// | 1006 | `TopicMismatch`    |
/// | 1007 | `EmptyBatch`       |
/// | 1008 | `OffsetOutOfRange` |
/// | 1009 | `NotFound`         |
/// | 1010 | `Closed`           |
/// | 1011 | `InvalidConfig`    |
/// | 1012 | `InvalidPosition`  |
/// | 1013 | `ReplicaMismatch`  |
/// | 1014 | `InvalidTopic`     |
/// | 1015 | `OldFormat`        |
/// | 1016 | `NotLeader`        |
/// | 1017 | `Refused`          |
/// | 1018 | `Replication`      |
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this one) holds the data directory's lock.
    #[error("data directory {path} is locked by another store")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An I/O error other than a full disk.
    #[error("store I/O error: {0}")]
    Io(#[from] io::Error),
    /// The disk is full; the log is unchanged and appends work again once space is freed.
    #[error("disk full")]
    DiskFull,
    /// An entry (a producer's batch) is larger than the configured maximum.
    #[error("message batch of {size} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// The entry's size in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An entry (envelope + batch) is malformed or fails its checksum.
    #[error("corrupt record batch: {0}")]
    CorruptRecord(#[from] BatchError),
    /// An entry in the batch names another topic than the one appended to.
    #[error("batch topic {found:?} does not match the append topic {expected:?}")]
    TopicMismatch {
        /// The topic passed to `append`.
        expected: String,
        /// The topic inside the record.
        found: String,
    },
    /// The batch holds no record.
    #[error("empty batch")]
    EmptyBatch,
    /// A queue offset outside the readable range.
    #[error("offset {requested} out of range [{min}, {max}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The smallest readable offset.
        min: u64,
        /// The next offset to be written (the largest readable is `max - 1`).
        max: u64,
    },
    /// Nothing is stored at that position.
    #[error("not found")]
    NotFound,
    /// The store is shut down.
    #[error("store is closed")]
    Closed,
    /// The configuration cannot work.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// A commit-log position that is not the start of a record.
    #[error("commit-log position {0} is not a record boundary")]
    InvalidPosition(u64),
    /// Replicated records do not continue this log where it ends.
    #[error("replicated records do not fit this log: {0}")]
    ReplicaMismatch(String),
    /// A topic name that cannot name a consume-queue directory (empty, `.`, `..`, or holding
    /// `/` or NUL).
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// A replicated log takes writes on its group's leader only; `leader` is the leader's
    /// client address when known.
    #[error("this replica does not lead its broker group{}", leader.as_deref().map(|l| format!(" (leader={l})")).unwrap_or_default())]
    NotLeader {
        /// The leader's client address (`host:port`), when known.
        leader: Option<String>,
    },
    /// A replicated log's leader refused the batch when it came to write it (`code` is the
    /// wire error code of why; nothing was stored).
    #[error("{message}")]
    Refused {
        /// The wire error code (`weir_proto::ErrorCode`).
        code: u16,
        /// Why.
        message: String,
    },
    /// A replicated log's consensus failed or stopped.
    #[error("replication: {0}")]
    Replication(String),
    /// The data directory was written by the first, one-record-per-message format.
    #[error(
        "{segment} is in the old record format (magic 0xA1), which this version does not read: \
         move the data directory aside and start with an empty one"
    )]
    OldFormat {
        /// The segment that showed it.
        segment: String,
    },
}

impl StoreError {
    /// The variant's stable numeric code (see the table on [`StoreError`]).
    pub fn code(&self) -> u16 {
        match self {
            StoreError::Locked { .. } => 1001,
            StoreError::Io(_) => 1002,
            StoreError::DiskFull => 1003,
            StoreError::MessageTooLarge { .. } => 1004,
            StoreError::CorruptRecord(_) => 1005,
            StoreError::OldFormat { .. } => 1015,
            StoreError::TopicMismatch { .. } => 1006,
            StoreError::EmptyBatch => 1007,
            StoreError::OffsetOutOfRange { .. } => 1008,
            StoreError::NotFound => 1009,
            StoreError::Closed => 1010,
            StoreError::InvalidConfig(_) => 1011,
            StoreError::InvalidPosition(_) => 1012,
            StoreError::ReplicaMismatch(_) => 1013,
            StoreError::InvalidTopic(_) => 1014,
            StoreError::NotLeader { .. } => 1016,
            StoreError::Refused { .. } => 1017,
            StoreError::Replication(_) => 1018,
        }
    }

    /// Maps an I/O error, turning "no space left" into [`StoreError::DiskFull`].
    pub(crate) fn from_io(err: io::Error) -> StoreError {
        if is_disk_full(&err) {
            StoreError::DiskFull
        } else {
            StoreError::Io(err)
        }
    }
}

/// Whether `err` says the disk (or quota) is full.
pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error()
    ) || err.kind() == io::ErrorKind::StorageFull
}

impl From<rustix::io::Errno> for StoreError {
    fn from(errno: rustix::io::Errno) -> Self {
        StoreError::from_io(errno.into())
    }
}

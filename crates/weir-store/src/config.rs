//! Store configuration and its defaults.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::StoreError;
use crate::page_cache;

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    /// `append` returns once the data is in the page cache; a flusher thread fdatasyncs it every
    /// [`StoreConfig::flush_interval`] and at shutdown. A machine crash loses at most that
    /// interval; a process crash loses nothing.
    #[default]
    Async,
    /// `append` returns only after the data is on disk. Appends that arrive while an fdatasync
    /// runs share the next one (group commit), so the cost is one fsync per round, not per
    /// message.
    Sync,
}

impl FromStr for FlushMode {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "async" => Ok(FlushMode::Async),
            "sync" => Ok(FlushMode::Sync),
            other => Err(StoreError::InvalidConfig(format!(
                "flush mode must be \"async\" or \"sync\", not {other:?}"
            ))),
        }
    }
}

/// Everything the store can be told. `StoreConfig::new(dir)` gives the defaults.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory: `commitlog/`, `consumequeue/<topic>/<queue>/`, `index/`, `checkpoint`,
    /// `LOCK`.
    pub data_dir: PathBuf,
    /// Size of each commit-log segment file in bytes (default 1 GiB).
    pub segment_size: u64,
    /// Entries per consume-queue file (default 300,000, i.e. 6 MB files).
    pub consume_queue_segment_entries: u64,
    /// Async or sync flushing (default async).
    pub flush: FlushMode,
    /// How often the async flusher runs (default 500 ms).
    pub flush_interval: Duration,
    /// How often a checkpoint is written (default 1 s).
    pub checkpoint_interval: Duration,
    /// Largest record accepted, in bytes (default 4 MiB).
    pub max_message_size: usize,
    /// Segments older than this are deleted (default 72 h).
    pub retention_age: Duration,
    /// Oldest segments are deleted while the disk is fuller than this ratio (default 0.75).
    pub retention_disk_ratio: f64,
    /// How often retention runs (default 10 s).
    pub retention_check_interval: Duration,
    /// Hash slots per key-index file (default 500,000).
    pub index_slots: u32,
    /// Entries per key-index file (default 2,000,000).
    pub index_entries: u32,
    /// How much of the newest flushed commit log the page cache keeps, in bytes: older pages
    /// are let go after each flush (see `page_cache.rs`). Default: a quarter of the machine's
    /// memory. `None`: the kernel keeps all it can and reclaims when memory runs short.
    pub page_cache_window: Option<u64>,
    /// A replicated log's commit point at open: records past it are kept but not dispatched
    /// (not readable) until [`crate::Store::set_dispatch_limit`] moves it. `None` (a
    /// standalone broker): everything written is dispatched.
    pub dispatch_limit: Option<u64>,
    /// A replicated log's retention floor at open: retention deletes no segment that ends past
    /// it until [`crate::Store::set_retention_floor`] raises it (the replicas' Raft log must
    /// let go of a segment's entries first). `None` (a standalone broker): no floor.
    pub retention_floor: Option<u64>,
}

impl StoreConfig {
    /// The defaults, storing under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            ..StoreConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let fail = |m: &str| Err(StoreError::InvalidConfig(m.to_owned()));
        if self.segment_size < 4096 {
            return fail("segment_size must be at least 4096");
        }
        if self.max_message_size as u64 + crate::segment::END_MARKER_LEN > self.segment_size {
            return fail("max_message_size must leave room in a segment");
        }
        if self.consume_queue_segment_entries == 0 {
            return fail("consume_queue_segment_entries must be positive");
        }
        if self.index_slots == 0 || self.index_entries == 0 {
            return fail("index_slots and index_entries must be positive");
        }
        if !(0.0..=1.0).contains(&self.retention_disk_ratio) {
            return fail("retention_disk_ratio must be within [0, 1]");
        }
        Ok(())
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("data"),
            segment_size: 1 << 30,
            consume_queue_segment_entries: 300_000,
            flush: FlushMode::Async,
            flush_interval: Duration::from_millis(500),
            checkpoint_interval: Duration::from_secs(1),
            max_message_size: 4 << 20,
            retention_age: Duration::from_secs(72 * 3600),
            retention_disk_ratio: 0.75,
            retention_check_interval: Duration::from_secs(10),
            index_slots: 500_000,
            index_entries: 2_000_000,
            page_cache_window: page_cache::default_window(),
            dispatch_limit: None,
            retention_floor: None,
        }
    }
}

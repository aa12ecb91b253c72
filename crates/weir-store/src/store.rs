//! The store: the public API over the commit log, consume queues and indexes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;
use weir_proto::batch::{self, Entries, MAX_UNCOMPRESSED_LEN};

use crate::checkpoint::Checkpoint;
use crate::commit_log::{Appended, CommitLog, StampMode, Writer};
use crate::consume_queue::{ConsumeQueue, ConsumeQueues, ENTRY_LEN, Entry};
use crate::damage::{DamageLocation, DamageLog, DamageReason, DamagedRange, SkippedRange};
use crate::dispatch::{self, DispatchState, Touched};
use crate::key_index::{IndexMark, KeyIndex};
use crate::tombstones::Tombstones;
use crate::topic_bytes::{self, TopicBytes};
use crate::verify::{self, Expected};
use crate::{FlushMode, StoreConfig, StoreError, TagFilter, flush, recovery, retention, segment};

/// Called with (topic, queue id, new max offset) after each dispatch round that touched the
/// queue.
pub type DispatchListener = Arc<dyn Fn(&str, u32, u64) + Send + Sync>;

/// Most consume-queue entries one `read` scans (so a filter that matches nothing cannot make
/// one read walk a whole queue); `next_offset` tells the caller where to go on.
const MAX_SCAN_ENTRIES: u64 = 16_384;
/// Consume-queue entries read per positional read.
const SCAN_CHUNK: u64 = 512;

/// Where an append went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Commit-log offset of the first entry.
    pub commit_log_offset: u64,
    /// Commit-log offset just past the last entry.
    pub end_offset: u64,
    /// Queue offset of the first message (the others follow consecutively).
    pub queue_offset: u64,
    /// Messages appended.
    pub count: u32,
    /// Store timestamp given to the entries, ms since the Unix epoch.
    pub store_timestamp: i64,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole entries laid end to end, exactly the stamped bytes from the log: every entry
    /// holding a message in `[from_offset, next_offset)` whose tag hash matches the filter.
    /// The first may begin before `from_offset`, and an entry may hold messages the filter
    /// does not match: the reader keeps what it asked for.
    pub records: Bytes,
    /// Messages in `[from_offset, next_offset)` in `records` whose tag hash matches.
    pub count: u32,
    /// Queue offset to read from next (past filtered-out messages too).
    pub next_offset: u64,
    /// The queue's smallest readable offset.
    pub min_offset: u64,
    /// The queue's next offset to be written.
    pub max_offset: u64,
    /// Queue offsets below `next_offset` that were stepped over because their message is
    /// damaged (also reported to the damage list, logged and counted).
    pub skipped: Vec<SkippedRange>,
}

/// A queue's readable range: offsets `min..max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueOffsets {
    /// Smallest readable offset.
    pub min: u64,
    /// One past the largest readable (dispatched) offset.
    pub max: u64,
}

/// What [`Store::serve`] did with one consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// The entry's batch was good: copied out; its end in the log.
    Copied(u64),
    /// The batch cannot be served.
    Bad(DamageReason),
    /// A lost entry: the message was in a damaged stretch of the log.
    Lost(DamageReason),
    /// The batch is below the log's start (retention).
    Gone,
}

/// Whether the entry in `bytes` is of `topic` and holds a message with key `key`.
fn entry_has_key(bytes: &[u8], topic: &str, key: &str) -> bool {
    let Ok(entry) = batch::Entry::parse(bytes) else {
        return false;
    };
    if entry.topic() != topic {
        return false;
    }
    let Ok(records) = entry.records(MAX_UNCOMPRESSED_LEN) else {
        return false;
    };
    records
        .iter()
        .any(|r| r.is_ok_and(|r| r.key == Some(key.as_bytes())))
}

/// Adds queue offset `offset` to `skipped`, extending the last range when it continues it.
fn add_skipped(skipped: &mut Vec<SkippedRange>, offset: u64, reason: DamageReason) {
    if let Some(last) = skipped.last_mut()
        && last.to == offset
        && last.reason == reason
    {
        last.to += 1;
        return;
    }
    skipped.push(SkippedRange {
        from: offset,
        to: offset + 1,
        reason,
    });
}

/// Counters and positions for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoreStats {
    /// Oldest commit-log offset still on disk.
    pub min_offset: u64,
    /// End of the written log.
    pub written_offset: u64,
    /// Durable up to here.
    pub flushed_offset: u64,
    /// Indexed (readable) up to here.
    pub dispatched_offset: u64,
    /// Commit-log segment files.
    pub segment_count: usize,
    /// Bytes the segment files take (their preallocated capacity).
    pub segment_bytes: u64,
    /// Free bytes on the data directory's filesystem.
    pub disk_free: u64,
    /// Size of that filesystem.
    pub disk_total: u64,
    /// Used fraction of that filesystem.
    pub disk_used_ratio: f64,
    /// fdatasync calls on the commit log since open.
    pub fsyncs: u64,
    /// Append calls that succeeded since open.
    pub appends: u64,
    /// Records appended since open.
    pub messages: u64,
    /// The page cache was let go of the log below here: the log's end at open (what is older
    /// was not cached by this process's writes), then as far as the flusher let go; 0 without
    /// a [`StoreConfig::page_cache_window`].
    pub cache_released_offset: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub fsyncs: AtomicU64,
    pub appends: AtomicU64,
    pub messages: AtomicU64,
}

/// State shared by the store and its threads.
pub(crate) struct Inner {
    pub config: StoreConfig,
    pub log: CommitLog,
    pub writer: Mutex<Writer>,
    pub queues: ConsumeQueues,
    pub index: KeyIndex,
    pub dispatch: Mutex<DispatchState>,
    pub dispatched: AtomicU64,
    /// How far the dispatcher may go: `u64::MAX` standalone, the commit point of a
    /// replicated log.
    pub dispatch_limit: AtomicU64,
    /// Retention deletes no segment ending past this: `u64::MAX` standalone, the end of the
    /// Raft entries a replica has purged in a broker group.
    pub retention_floor: AtomicU64,
    pub flushed: AtomicU64,
    /// The page cache was let go of the log below here (see `page_cache.rs`); the log's end
    /// at open when there is a window, else 0.
    pub cache_released: AtomicU64,
    flushed_tx: watch::Sender<u64>,
    dispatched_tx: watch::Sender<u64>,
    /// Set while dispatching fails (a full disk, an I/O error); holds whether the disk is
    /// full. Appenders waiting for dispatch are told, and new appends are refused.
    dispatch_stall: Mutex<Option<bool>>,
    pub flush_lock: Mutex<()>,
    pub checkpoint_lock: Mutex<Option<Checkpoint>>,
    pub retention_lock: Mutex<()>,
    pub wake: Mutex<()>,
    pub dispatch_cv: Condvar,
    pub flush_cv: Condvar,
    pub stop_cv: Condvar,
    stop: AtomicBool,
    closed: AtomicBool,
    listener: RwLock<Option<DispatchListener>>,
    pub stats: Counters,
    /// Damaged ranges found so far (see `damage.rs`).
    pub damage: DamageLog,
    /// The bytes each topic's readable batches take (see `topic_bytes.rs`).
    pub topic_bytes: Mutex<TopicBytes>,
}

impl Inner {
    /// Where dispatching may go now: what is written, up to the dispatch limit.
    pub fn dispatch_target(&self) -> u64 {
        self.log
            .written()
            .min(self.dispatch_limit.load(Ordering::Acquire))
    }

    /// Whether the store is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn set_flushed(&self, offset: u64) {
        self.flushed.store(offset, Ordering::Release);
        self.flushed_tx.send_replace(offset);
    }

    /// Records that a dispatch round failed with `err`, and wakes appenders waiting for
    /// dispatch so they report it instead of waiting for a round that cannot succeed yet.
    pub fn dispatch_failed(&self, err: &std::io::Error) {
        *self.dispatch_stall.lock() = Some(crate::error::is_disk_full(err));
        self.dispatched_tx.send_modify(|_| {});
    }

    /// The error appends get while dispatching is stalled, if it is.
    fn dispatch_stalled(&self) -> Option<StoreError> {
        self.dispatch_stall.lock().map(|disk_full| {
            if disk_full {
                StoreError::DiskFull
            } else {
                StoreError::Io(std::io::Error::other(
                    "indexing new messages is failing; see the broker log",
                ))
            }
        })
    }

    /// Publishes the dispatched position to appenders waiting for it, then tells the dispatch
    /// listener which queues grew.
    pub fn notify_listener(&self, touched: &Touched) {
        *self.dispatch_stall.lock() = None;
        self.dispatched_tx
            .send_replace(self.dispatched.load(Ordering::Acquire));
        if touched.is_empty() {
            return;
        }
        let listener = self.listener.read().clone();
        if let Some(listener) = listener {
            for (topic, queue_id, max) in touched {
                listener(topic, *queue_id, *max);
            }
        }
    }

    fn wake_after_write(&self) {
        drop(self.wake.lock());
        self.dispatch_cv.notify_one();
        if self.config.flush == FlushMode::Sync {
            self.flush_cv.notify_one();
        }
    }

    /// Writes a checkpoint: everything dispatched so far is made durable first.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let mut last = self.checkpoint_lock.lock();
        let (dispatched, mark, totals, sizes) = {
            let state = self.dispatch.lock();
            let mut topic_bytes = self.topic_bytes.lock();
            let sizes = (topic_bytes.dir(), topic_bytes.take_dirty());
            (
                state.dispatched,
                self.index.mark(),
                self.queues.totals(),
                sizes,
            )
        };
        // Before the checkpoint: an open uses a size file only if it matches the checkpoint.
        topic_bytes::store(&sizes.0, &sizes.1, dispatched);
        if last.is_some_and(|cp| {
            cp.dispatched == dispatched && cp.index == mark && cp.queues == Some(totals)
        }) {
            return Ok(());
        }
        flush::flush_to(self, dispatched)?;
        for (_, _, cq) in self.queues.all() {
            cq.sync()?;
        }
        self.index.sync()?;
        let cp = Checkpoint {
            dispatched,
            index: mark,
            log_end: None,
            queues: Some(totals),
        };
        cp.store(&self.config.data_dir)?;
        *last = Some(cp);
        Ok(())
    }

    /// Moves the checkpoint to `offset` with the log said to end there (before a cut); `last`
    /// is the held checkpoint lock.
    fn checkpoint_at(&self, last: &mut Option<Checkpoint>, offset: u64) -> Result<(), StoreError> {
        self.index.sync()?;
        let dirty: Vec<_> = self
            .queues
            .all()
            .into_iter()
            .filter(|(_, _, cq)| cq.is_dirty())
            .collect();
        if dirty.len() > SYNCFS_DIRTY_QUEUES {
            // With thousands of busy queues, one fdatasync per consume-queue file would cost
            // thousands of syscalls and journal commits every checkpoint; one syncfs makes the
            // whole file system durable at once. Flags are cleared first, so anything written
            // meanwhile stays dirty for the next checkpoint.
            for (_, _, cq) in &dirty {
                cq.take_dirty();
            }
            let dir = File::open(&self.config.data_dir)?;
            rustix::fs::syncfs(&dir).map_err(std::io::Error::from)?;
        } else {
            for (_, _, cq) in &dirty {
                cq.sync()?;
            }
        }
        let cp = Checkpoint {
            dispatched: offset,
            index: self.index.mark(),
            log_end: Some(offset),
            queues: Some(self.queues.totals()),
        };
        cp.store(&self.config.data_dir)?;
        *last = Some(cp);
        Ok(())
    }
}

/// A checkpoint with more dirty consume queues than this syncs the file system in one call
/// instead of each queue's files.
const SYNCFS_DIRTY_QUEUES: usize = 64;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn check_topic(topic: &str) -> Result<(), StoreError> {
    if topic.is_empty() || topic == "." || topic == ".." || topic.contains(['/', '\0']) {
        return Err(StoreError::InvalidTopic(topic.to_owned()));
    }
    Ok(())
}

/// The storage engine. Open with [`Store::open`]; share as `Arc<Store>`.
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`: takes the directory lock, recovers
    /// the log from the last checkpoint, re-dispatches what follows it, and starts the flusher,
    /// dispatcher, checkpointer and retention threads.
    pub fn open(config: StoreConfig) -> Result<Arc<Store>, StoreError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let lock_path = config.data_dir.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)?;
        // Retry briefly: a previous owner may be exiting, or a child process forked by this one
        // may hold the descriptor for the moment between fork and exec.
        let mut attempts = 0;
        while rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .is_err()
        {
            attempts += 1;
            if attempts > 25 {
                return Err(StoreError::Locked { path: lock_path });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = std::time::Instant::now();
        let damage = DamageLog::load(config.data_dir.join("damaged"))?;
        let checkpoint = Checkpoint::load(&config.data_dir);
        let log_dir = config.data_dir.join("commitlog");
        let cq_dir = config.data_dir.join("consumequeue");
        let cq_entries = config.consume_queue_segment_entries;
        let mut rec = recovery::recover_log(&log_dir, config.segment_size, checkpoint, false)?;
        let log_min = rec.segments.first().map_or(0, |s| s.base);
        let mut tombstones = Tombstones::load(&config.data_dir)?;
        tombstones.prune(log_min)?;
        let mut queues = ConsumeQueues::open(cq_dir.clone(), cq_entries, rec.start, log_min)?;
        // A deletion that crashed after its tombstone but before its queues were gone: their
        // entries point below the tombstone (a topic made anew only has entries past it).
        for (topic, deleted_at) in tombstones.iter() {
            let stale =
                queues
                    .all()
                    .into_iter()
                    .filter(|(t, _, _)| t == topic)
                    .any(|(_, _, cq)| {
                        cq.min() < cq.max()
                            && cq.entry(cq.min()).is_ok_and(|e| e.offset < deleted_at)
                    });
            if stale {
                queues.remove_topic(topic)?;
            }
        }
        let rebuild = match rec.checkpoint {
            Some(cp) => stale_indexes(&cp, &queues, &rec, &config.data_dir.join("index")),
            None if rec.records > 0 => Some("there is no valid checkpoint".to_owned()),
            None => None,
        };
        if let Some(why) = &rebuild {
            tracing::warn!(
                "{why}: verifying the whole commit log and rebuilding the consume queues and the \
                 key index from it"
            );
            if let Some(cp) = rec.checkpoint {
                drop(queues);
                // From the first segment, with no key index; a cut in progress still ends the
                // log where it was cut.
                let full = Checkpoint {
                    dispatched: log_min,
                    index: IndexMark {
                        base: u64::MAX,
                        count: 0,
                    },
                    log_end: cp.log_end,
                    queues: None,
                };
                rec = recovery::recover_log(&log_dir, config.segment_size, Some(full), true)?;
                queues = ConsumeQueues::open(cq_dir, cq_entries, rec.start, log_min)?;
            }
        }
        for (from, to) in &rec.holes {
            damage.report(
                DamagedRange {
                    location: DamageLocation::Log,
                    from: *from,
                    to: *to,
                    reason: DamageReason::DamagedLog,
                },
                "found by recovery",
            );
        }
        let index = KeyIndex::open(
            config.data_dir.join("index"),
            config.index_slots,
            config.index_entries,
            rec.checkpoint.map(|cp| cp.index),
        )?;
        let active = rec
            .segments
            .iter()
            .rev()
            .find(|s| s.base <= rec.end)
            .cloned()
            .ok_or_else(|| StoreError::InvalidConfig("no segment".into()))?;
        let log = CommitLog::new(
            config.data_dir.join("commitlog"),
            config.segment_size,
            rec.segments,
            rec.end,
        );
        let holes: std::collections::BTreeMap<u64, u64> = damage
            .list()
            .into_iter()
            .filter(|r| r.location == DamageLocation::Log)
            .map(|r| (r.from, r.to))
            .chain(rec.holes.iter().copied())
            .collect();
        let topic_bytes = TopicBytes::load(
            &config.data_dir,
            &log.segments(),
            rec.start,
            &tombstones,
            &holes,
        )?;
        let (flushed_tx, _) = watch::channel(rec.end);
        let (dispatched_tx, _) = watch::channel(rec.start);
        let inner = Arc::new(Inner {
            writer: Mutex::new(Writer::new(
                active,
                rec.end,
                HashMap::new(),
                rec.last_store_ts,
            )),
            log,
            queues,
            index,
            dispatch: Mutex::new(DispatchState::new(rec.start, tombstones, &rec.holes)),
            dispatched: AtomicU64::new(rec.start),
            dispatch_limit: AtomicU64::new(config.dispatch_limit.unwrap_or(u64::MAX)),
            retention_floor: AtomicU64::new(config.retention_floor.unwrap_or(u64::MAX)),
            flushed: AtomicU64::new(rec.end),
            cache_released: AtomicU64::new(if config.page_cache_window.is_some() {
                rec.end
            } else {
                0
            }),
            flushed_tx,
            dispatched_tx,
            dispatch_stall: Mutex::new(None),
            flush_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(None),
            retention_lock: Mutex::new(()),
            wake: Mutex::new(()),
            dispatch_cv: Condvar::new(),
            flush_cv: Condvar::new(),
            stop_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            listener: RwLock::new(None),
            stats: Counters::default(),
            damage,
            topic_bytes: Mutex::new(topic_bytes),
            config,
        });
        {
            let mut state = inner.dispatch.lock();
            let target = inner.dispatch_target();
            while state.dispatched < target {
                dispatch::dispatch_round(&inner, &mut state, target, u64::MAX)?;
            }
        }
        if rebuild.is_some() {
            // Rebuilt queues start wherever their oldest surviving record is.
            for (_, _, cq) in inner.queues.all() {
                cq.advance_min(log_min)?;
            }
        }
        {
            let mut writer = inner.writer.lock();
            let next = next_offsets(&inner, writer.written())?;
            writer.queues_mut().extend(next);
        }
        inner.checkpoint()?;
        tracing::info!(
            start = rec.start,
            end = rec.end,
            records = rec.records,
            took = ?started.elapsed(),
            "store opened"
        );
        let mut threads = Vec::new();
        let spawn = |name: &str, f: fn(Arc<Inner>)| {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || f(inner))
        };
        threads.push(spawn("weir-flush", flush::run)?);
        threads.push(spawn("weir-dispatch", dispatch::run)?);
        threads.push(spawn("weir-checkpoint", run_checkpointer)?);
        threads.push(spawn("weir-retention", retention::run)?);
        Ok(Arc::new(Store {
            inner,
            threads: Mutex::new(threads),
            _lock: lock,
        }))
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Checks every entry of a producer's batch (layout, batch CRC, size, topic, every
    /// record); returns how many messages there are.
    fn validate_batch(&self, topic: &str, batch: &[u8]) -> Result<u64, StoreError> {
        check_topic(topic)?;
        let max = self.inner.config.max_message_size;
        let mut count = 0;
        for entry in Entries::new(batch) {
            let entry = entry?;
            if entry.len() > max {
                return Err(StoreError::MessageTooLarge {
                    size: entry.len(),
                    max,
                });
            }
            entry.verify_batch()?;
            if entry.topic() != topic {
                return Err(StoreError::TopicMismatch {
                    expected: topic.to_owned(),
                    found: entry.topic().to_owned(),
                });
            }
            entry.records(MAX_UNCOMPRESSED_LEN)?.check()?;
            count += u64::from(entry.record_count());
        }
        if count == 0 {
            return Err(StoreError::EmptyBatch);
        }
        Ok(count)
    }

    /// Writes a batch of `count` messages (known for producer batches) under the writer lock.
    fn write(
        &self,
        batch: &mut [u8],
        mode: StampMode<'_>,
        count: Option<u64>,
    ) -> Result<Appended, StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if let Some(err) = self.inner.dispatch_stalled() {
            return Err(err);
        }
        let appended = {
            let mut writer = self.inner.writer.lock();
            if let (
                StampMode::Fresh {
                    topic, queue_id, ..
                },
                Some(count),
            ) = (mode, count)
            {
                // Claim the consume-queue blocks these messages will need before the log is
                // written: a full disk then fails the append with nothing written, instead of
                // leaving stored messages the dispatcher cannot index.
                let next = writer.next_queue_offset(topic, queue_id);
                self.inner
                    .queues
                    .get_or_create(topic, queue_id)
                    .reserve(next + count)
                    .map_err(StoreError::from_io)?;
            }
            writer.append(&self.inner.log, batch, mode, now_ms())?
        };
        self.inner.wake_after_write();
        self.inner.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.inner
            .stats
            .messages
            .fetch_add(appended.count as u64, Ordering::Relaxed);
        Ok(appended)
    }

    /// Appends a producer's batch (one or more entries laid end to end) to `topic`/`queue_id`.
    ///
    /// Every entry is checked first (layout, batch CRC, size, topic, its records); one bad
    /// entry rejects the whole batch and nothing is written. The messages get consecutive
    /// queue offsets, the entries are stamped in place, then written with one positional
    /// write. It returns once the batch
    /// is dispatched — readable through [`Store::read`] and the indexes, so whoever is told
    /// "stored" can read it back at once — and, in sync mode, durable (group commit).
    pub async fn append(
        &self,
        topic: &str,
        queue_id: u32,
        mut batch: BytesMut,
    ) -> Result<AppendResult, StoreError> {
        let result = self.append_now(topic, queue_id, &mut batch)?;
        self.dispatch_now();
        if self.inner.config.flush == FlushMode::Sync {
            self.wait_durable(result.end_offset).await?;
        }
        self.wait_dispatched(result.end_offset).await?;
        Ok(result)
    }

    /// The synchronous part of [`Store::append`]: validate and write, without waiting for
    /// durability in sync mode.
    pub fn append_now(
        &self,
        topic: &str,
        queue_id: u32,
        batch: &mut [u8],
    ) -> Result<AppendResult, StoreError> {
        self.append_as_leader(topic, queue_id, batch, 0)
    }

    /// [`Store::append_now`] on a replicated log's leader: the entries are stamped with
    /// `leader_epoch` (the Raft term they are written in).
    pub fn append_as_leader(
        &self,
        topic: &str,
        queue_id: u32,
        batch: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendResult, StoreError> {
        let count = self.validate_batch(topic, batch)?;
        let mode = StampMode::Fresh {
            topic,
            queue_id,
            leader_epoch,
        };
        let a = self.write(batch, mode, Some(count))?;
        Ok(AppendResult {
            commit_log_offset: a.first_offset,
            end_offset: a.end_offset,
            queue_offset: a.first_queue_offset,
            count: a.count,
            store_timestamp: a.store_timestamp,
        })
    }

    /// Appends entries already stamped by a leader, as they are, at the end of this log.
    ///
    /// Each entry's CRCs must hold and its stamped commit-log and queue offsets must be
    /// exactly where this log would put it (same segment size as the leader); otherwise
    /// nothing is written. Does not wait for durability.
    pub fn append_replicated(&self, batch: &mut [u8]) -> Result<AppendResult, StoreError> {
        let max = self.inner.config.max_message_size;
        let mut first = None;
        for entry in Entries::new(batch) {
            let entry = entry?;
            entry.verify_envelope()?;
            entry.verify_batch()?;
            check_topic(entry.topic())?;
            if entry.len() > max {
                return Err(StoreError::MessageTooLarge {
                    size: entry.len(),
                    max,
                });
            }
            first.get_or_insert(entry.stamp());
        }
        let first = first.ok_or(StoreError::EmptyBatch)?;
        let a = self.write(batch, StampMode::Replicated, None)?;
        Ok(AppendResult {
            commit_log_offset: a.first_offset,
            end_offset: a.end_offset,
            queue_offset: first.base_offset,
            count: a.count,
            store_timestamp: first.store_timestamp,
        })
    }

    /// Dispatches what is written on the caller's thread, unless a dispatch is already running
    /// (that one, or the dispatcher thread, covers it): an appender that is about to wait for
    /// its batch to be readable calls this instead of waiting for the dispatcher to wake up.
    pub fn dispatch_now(&self) {
        if self.inner.dispatched.load(Ordering::Acquire) < self.inner.dispatch_target() {
            dispatch::try_dispatch_now(&self.inner);
        }
    }

    /// Lets the dispatcher make records readable up to `end_offset` (a replicated log's new
    /// commit point), and dispatches them on the caller's thread unless a dispatch is running.
    pub fn set_dispatch_limit(&self, end_offset: u64) {
        self.inner
            .dispatch_limit
            .fetch_max(end_offset, Ordering::AcqRel);
        self.dispatch_now();
        self.inner.dispatch_cv.notify_one();
    }

    /// The entries written in `[start, end)`, end to end, without the padding at segment
    /// ends: what a replica appends with [`Store::append_replicated`] to continue this log.
    pub fn read_entries(&self, start: u64, end: u64) -> Result<BytesMut, StoreError> {
        let inner = &self.inner;
        let mut out = BytesMut::with_capacity((end.saturating_sub(start)) as usize);
        let mut pos = start;
        while pos < end {
            let seg = inner
                .log
                .segment_for(pos)
                .ok_or(StoreError::InvalidPosition(pos))?;
            let rel = pos - seg.base;
            let avail = (end - pos).min(seg.capacity - rel) as usize;
            let rest = seg
                .bytes(rel, avail)
                .ok_or(StoreError::InvalidPosition(pos))?;
            if (rest.len() as u64) < segment::END_MARKER_LEN || segment::is_end_marker(rest) {
                pos = seg.end();
                continue;
            }
            let len = batch::Entry::parse(rest)?.len();
            out.extend_from_slice(&rest[..len]);
            pos += len as u64;
        }
        Ok(out)
    }

    /// The log's end: everything appended so far, committed or not.
    pub fn written(&self) -> u64 {
        self.inner.log.written()
    }

    /// Whether the log is durable up to `end_offset` now.
    pub fn is_durable(&self, end_offset: u64) -> bool {
        self.inner.flushed.load(Ordering::Acquire) >= end_offset
    }

    /// Whether the records before `end_offset` are dispatched (readable) now.
    pub fn is_dispatched(&self, end_offset: u64) -> bool {
        self.inner.dispatched.load(Ordering::Acquire) >= end_offset
    }

    /// Waits until the log is durable up to `end_offset`.
    pub async fn wait_durable(&self, end_offset: u64) -> Result<(), StoreError> {
        if self.inner.flushed.load(Ordering::Acquire) >= end_offset {
            return Ok(());
        }
        let mut rx = self.inner.flushed_tx.subscribe();
        self.inner.flush_cv.notify_one();
        rx.wait_for(|f| *f >= end_offset)
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Closed)
    }

    /// Waits until the dispatcher has passed `end_offset`, so the records before it are
    /// readable.
    pub async fn wait_dispatched(&self, end_offset: u64) -> Result<(), StoreError> {
        if self.inner.dispatched.load(Ordering::Acquire) >= end_offset {
            return Ok(());
        }
        let mut rx = self.inner.dispatched_tx.subscribe();
        let inner = &self.inner;
        rx.wait_for(|d| *d >= end_offset || inner.dispatch_stall.lock().is_some())
            .await
            .map_err(|_| StoreError::Closed)?;
        if inner.dispatched.load(Ordering::Acquire) >= end_offset {
            return Ok(());
        }
        // The batch is in the log and will be dispatched once the cause is gone, but the
        // caller cannot be told it is readable now.
        Err(inner.dispatch_stalled().unwrap_or(StoreError::Closed))
    }

    /// Reads up to `max_messages` messages (and about `max_bytes`, but at least one if any is
    /// available) from `topic`/`queue_id` starting at queue offset `from_offset`, skipping
    /// messages whose tag does not match `filter`.
    ///
    /// Every record is checked before it is returned (both CRCs, and its stamped position,
    /// topic, queue and queue offset against the consume-queue entry; see `verify.rs`). A
    /// wrong entry is rebuilt from the log when the right record is found; a message that
    /// cannot be served is stepped over and named in [`ReadResult::skipped`], so damage never
    /// blocks a queue.
    pub fn read(
        &self,
        topic: &str,
        queue_id: u32,
        from_offset: u64,
        max_messages: u32,
        max_bytes: u32,
        filter: &TagFilter,
    ) -> Result<ReadResult, StoreError> {
        let Some(cq) = self.inner.queues.get(topic, queue_id) else {
            if from_offset == 0 {
                return Ok(ReadResult {
                    records: Bytes::new(),
                    count: 0,
                    next_offset: 0,
                    min_offset: 0,
                    max_offset: 0,
                    skipped: Vec::new(),
                });
            }
            return Err(StoreError::OffsetOutOfRange {
                requested: from_offset,
                min: 0,
                max: 0,
            });
        };
        let (min, max) = (cq.min(), cq.max());
        if from_offset < min || from_offset > max {
            return Err(StoreError::OffsetOutOfRange {
                requested: from_offset,
                min,
                max,
            });
        }
        let mut out = BytesMut::new();
        let mut count = 0u32;
        let mut next = from_offset;
        let mut skipped: Vec<SkippedRange> = Vec::new();
        // Start of the verified batch holding queue offset `next - 1`: where a repair scan
        // starts (the start, not the end: `next` may be in that same batch).
        let mut prev_start: Option<u64> = None;
        // The batch the previous queue offset was served from (or found corrupt): the
        // messages after it in the same batch are counted, never checked or copied again.
        let mut current: Option<(u64, Served)> = None;
        let scan_end = max.min(from_offset.saturating_add(MAX_SCAN_ENTRIES));
        let mut entries = Vec::new();
        'scan: while next < scan_end {
            let chunk_end = scan_end.min(next + SCAN_CHUNK);
            cq.read_entries(next, chunk_end, &mut entries)?;
            for raw in entries.chunks_exact(ENTRY_LEN as usize) {
                let entry = Entry::decode(raw);
                let usable = entry.is_written() && !entry.is_lost();
                if let Some((at, outcome)) = current
                    && usable
                    && entry.offset == at
                {
                    match outcome {
                        Served::Copied(_) if filter.matches_hash(entry.tag_hash) => count += 1,
                        Served::Bad(reason) => add_skipped(&mut skipped, next, reason),
                        _ => {}
                    }
                    next += 1;
                    continue;
                }
                current = None;
                // A whole batch goes out or none: stop only between batches.
                if count >= max_messages {
                    break 'scan;
                }
                let expected = Expected {
                    topic,
                    queue_id,
                    queue_offset: next,
                };
                if usable && !filter.matches_hash(entry.tag_hash) {
                    prev_start = None;
                    next += 1;
                    continue;
                }
                if count > 0 && out.len() + entry.size as usize > max_bytes as usize {
                    break 'scan;
                }
                let mut served = self.serve(entry, expected, &mut out);
                if let Served::Gone = served {
                    if count == 0 && skipped.is_empty() {
                        // The batch is gone (retention ran between the range check and here).
                        let log_min = self.inner.log.min_offset();
                        return Err(StoreError::OffsetOutOfRange {
                            requested: from_offset,
                            min: cq.offset_of_log_position(log_min)?,
                            max,
                        });
                    }
                    break 'scan;
                }
                let mut at = entry.offset;
                if let Served::Bad(DamageReason::IndexMismatch | DamageReason::MissingEntry) =
                    served
                    && !self.inner.damage.is_listed(topic, queue_id, next)
                    && let Some(found) = self.repair_entry(&cq, expected, prev_start)
                {
                    served = self.serve(found, expected, &mut out);
                    at = found.offset;
                }
                prev_start = None;
                match served {
                    Served::Copied(_) => {
                        count += 1;
                        prev_start = Some(at);
                        current = Some((at, served));
                    }
                    Served::Bad(reason) => {
                        add_skipped(&mut skipped, next, reason);
                        if reason == DamageReason::CorruptRecord {
                            current = Some((at, served));
                        }
                    }
                    Served::Lost(reason) => add_skipped(&mut skipped, next, reason),
                    Served::Gone => break 'scan,
                }
                next += 1;
            }
        }
        for range in &skipped {
            self.inner.damage.report(
                DamagedRange {
                    location: DamageLocation::Queue {
                        topic: topic.to_owned(),
                        queue_id,
                    },
                    from: range.from,
                    to: range.to,
                    reason: range.reason,
                },
                "found by a read",
            );
        }
        Ok(ReadResult {
            records: out.freeze(),
            count,
            next_offset: next,
            min_offset: min,
            max_offset: max,
            skipped,
        })
    }

    /// Checks the batch `entry` points at against `expected` and, if it is good, appends its
    /// bytes (the whole stored entry) to `out`.
    fn serve(&self, entry: Entry, expected: Expected<'_>, out: &mut BytesMut) -> Served {
        if entry.is_lost() {
            return Served::Lost(DamageReason::LostInLog);
        }
        if !entry.is_written() {
            return Served::Bad(DamageReason::MissingEntry);
        }
        let end = entry.offset + u64::from(entry.size);
        let checked = self
            .inner
            .log
            .with_bytes(
                entry.offset,
                entry.size as usize,
                |bytes| match verify::check_entry(bytes, entry.offset, expected) {
                    Ok(_) => {
                        out.extend_from_slice(bytes);
                        Served::Copied(end)
                    }
                    Err(reason) => Served::Bad(reason),
                },
            );
        match checked {
            Some(served) => served,
            None if entry.offset < self.inner.log.min_offset() => Served::Gone,
            None => Served::Bad(DamageReason::IndexMismatch),
        }
    }

    /// Finds the batch holding `expected` in the log when its consume-queue entry is wrong,
    /// and rewrites the entry. The search starts at `prev_start` (the start of the previous
    /// queue offset's batch, which may hold `expected` too), else at the previous entry's
    /// batch if that one checks out, else at the start of the log.
    fn repair_entry(
        &self,
        cq: &ConsumeQueue,
        expected: Expected<'_>,
        prev_start: Option<u64>,
    ) -> Option<Entry> {
        let n = expected.queue_offset;
        let lower = prev_start
            .or_else(|| {
                let prev = n.checked_sub(1).filter(|p| *p >= cq.min())?;
                let entry = cq.entry(prev).ok()?;
                let prev_expected = Expected {
                    queue_offset: prev,
                    ..expected
                };
                self.inner
                    .log
                    .with_bytes(entry.offset, entry.size as usize, |b| {
                        verify::check_entry(b, entry.offset, prev_expected).is_ok()
                    })
                    .filter(|ok| *ok)
                    .map(|_| entry.offset)
            })
            .unwrap_or_else(|| self.inner.log.min_offset());
        let upper = self.inner.dispatched.load(Ordering::Acquire);
        let found = verify::find_entry(&self.inner.log, lower, upper, expected)?;
        match cq.write_entries(n, &found.encode()) {
            Ok(()) => tracing::warn!(
                topic = expected.topic,
                queue = expected.queue_id,
                offset = n,
                "consume-queue entry did not match the commit log; rebuilt it from the log"
            ),
            Err(e) => tracing::error!(
                error = %e,
                topic = expected.topic,
                queue = expected.queue_id,
                offset = n,
                "could not rewrite a consume-queue entry found wrong; serving from the log"
            ),
        }
        Some(found)
    }

    /// Every damaged range found so far (by recovery and by reads), oldest first; they are
    /// also in `data_dir/damaged`.
    pub fn damaged_ranges(&self) -> Vec<DamagedRange> {
        self.inner.damage.list()
    }

    /// Every queue the store holds entries for: (topic, queue id, readable range), sorted.
    /// The broker rebuilds its topic table from this when the table's file is lost.
    pub fn queues(&self) -> Vec<(String, u32, QueueOffsets)> {
        let mut out: Vec<_> = self
            .inner
            .queues
            .all()
            .into_iter()
            .map(|(topic, queue_id, cq)| {
                (
                    topic,
                    queue_id,
                    QueueOffsets {
                        min: cq.min(),
                        max: cq.max(),
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// The readable range of a queue; `{0, 0}` for an unknown queue.
    pub fn queue_offsets(&self, topic: &str, queue_id: u32) -> QueueOffsets {
        self.inner
            .queues
            .get(topic, queue_id)
            .map_or(QueueOffsets::default(), |cq| QueueOffsets {
                min: cq.min(),
                max: cq.max(),
            })
    }

    /// The leader epoch stamped on the batch holding queue offset `offset` of
    /// `topic`/`queue_id` (Kafka's partition leader epoch: the Raft term the batch was written
    /// in, 0 standalone). Reads one consume-queue entry and the batch's header in place: the
    /// envelope CRC (which covers the epoch) is checked, the records are neither read nor
    /// copied. `None` when that offset is not readable now (outside the queue's range, lost,
    /// or its entry does not point at a batch holding it).
    pub fn leader_epoch_at(&self, topic: &str, queue_id: u32, offset: u64) -> Option<i32> {
        let cq = self.inner.queues.get(topic, queue_id)?;
        if offset < cq.min() || offset >= cq.max() {
            return None;
        }
        let entry = cq.entry(offset).ok()?;
        if !entry.is_written() || entry.is_lost() {
            return None;
        }
        self.inner
            .log
            .with_bytes(entry.offset, entry.size as usize, |bytes| {
                let parsed = batch::Entry::parse(bytes).ok()?;
                parsed.verify_envelope().ok()?;
                let stamp = parsed.stamp();
                let holds = stamp.commit_log_offset == entry.offset
                    && stamp.queue_id == queue_id
                    && stamp.base_offset <= offset
                    && offset - stamp.base_offset < u64::from(parsed.record_count());
                holds.then_some(stamp.leader_epoch)
            })
            .flatten()
    }

    /// The commit-log bytes `topic`'s readable batches take (their whole stored entries,
    /// envelope included); 0 for an unknown topic. Follows retention, cuts and deletions,
    /// and survives a restart (see `topic_bytes.rs`).
    pub fn topic_bytes(&self, topic: &str) -> u64 {
        self.inner.topic_bytes.lock().topic(topic)
    }

    /// The entry at commit-log offset `commit_log_offset`, checked (layout and both CRCs).
    pub fn read_at(&self, commit_log_offset: u64) -> Result<Bytes, StoreError> {
        if commit_log_offset >= self.inner.dispatched.load(Ordering::Acquire) {
            return Err(StoreError::NotFound);
        }
        self.inner.log.read_entry(commit_log_offset)
    }

    /// Up to `max` entries of `topic` holding a message with key `key`, oldest first (an
    /// entry may hold other keys too).
    pub fn find_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let log_min = self.inner.log.min_offset();
        let dispatched = self.inner.dispatched.load(Ordering::Acquire);
        let candidates = self.inner.index.candidates(
            topic,
            key.as_bytes(),
            log_min,
            max.saturating_mul(2).saturating_add(64),
        );
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for offset in candidates {
            if out.len() >= max {
                break;
            }
            if offset >= dispatched || !seen.insert(offset) {
                continue;
            }
            let Ok(bytes) = self.inner.log.read_entry(offset) else {
                continue;
            };
            if entry_has_key(&bytes, topic, key) {
                out.push(bytes);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The first message whose own (producer's) timestamp is at or after `timestamp_ms`, as
    /// Kafka's ListOffsets finds it: `(queue offset, its timestamp)`, or `None` when every
    /// message is older.
    ///
    /// A binary search over the batches' max timestamps (a message's is its batch's, so the
    /// search lands on a batch's first message), then a walk of that one batch. Exact while
    /// producers' clocks move forward; with clocks that jump back it answers a nearby offset,
    /// as Kafka's time index does.
    pub fn offset_for_record_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<Option<(u64, i64)>, StoreError> {
        let Some(cq) = self.inner.queues.get(topic, queue_id) else {
            return Ok(None);
        };
        let lo = self.first_at_or_after(&cq, timestamp_ms, |e| e.max_timestamp())?;
        if lo >= cq.max() {
            return Ok(None);
        }
        let entry = cq.entry(lo)?;
        let found = self
            .inner
            .log
            .with_bytes(entry.offset, entry.size as usize, |b| {
                let e = batch::Entry::parse(b).ok()?;
                let base = e.stamp().base_offset;
                let records = e.records(batch::MAX_UNCOMPRESSED_LEN).ok()?;
                records.iter().find_map(|r| {
                    let r = r.ok()?;
                    let offset = base + u64::from(r.offset_delta);
                    (offset >= lo && r.timestamp >= timestamp_ms).then_some((offset, r.timestamp))
                })
            })
            .flatten();
        Ok(found)
    }

    /// The first queue offset whose store timestamp is at or after `timestamp_ms`; the queue's
    /// max offset if there is none.
    pub fn offset_for_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<u64, StoreError> {
        let Some(cq) = self.inner.queues.get(topic, queue_id) else {
            return Ok(0);
        };
        self.first_at_or_after(&cq, timestamp_ms, |e| e.stamp().store_timestamp)
    }

    /// The first queue offset of `cq` whose batch's `time_of` is at or after `timestamp_ms`
    /// (the queue's max offset if there is none): a binary search, so `time_of` must grow
    /// with the queue (an unreadable batch counts as older).
    fn first_at_or_after(
        &self,
        cq: &ConsumeQueue,
        timestamp_ms: i64,
        time_of: impl Fn(&batch::Entry<'_>) -> i64,
    ) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (cq.min(), cq.max());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = cq.entry(mid)?;
            let ts = self
                .inner
                .log
                .with_bytes(entry.offset, entry.size as usize, |b| {
                    batch::Entry::parse(b).map(|e| time_of(&e)).ok()
                })
                .flatten()
                .unwrap_or(i64::MIN);
            if ts < timestamp_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Removes everything at and after `commit_log_offset` (a record boundary, a segment start
    /// or the end of the log), including the consume-queue and key-index entries that point
    /// there. Queue offsets continue from what remains.
    pub fn truncate_from(&self, commit_log_offset: u64) -> Result<(), StoreError> {
        let inner = &self.inner;
        // Lock order: checkpoint, writer, dispatch (the checkpointer takes checkpoint then
        // dispatch).
        let mut last_checkpoint = inner.checkpoint_lock.lock();
        let mut writer = inner.writer.lock();
        let mut state = inner.dispatch.lock();
        let written = writer.written();
        let offset = commit_log_offset;
        if offset == written {
            return Ok(());
        }
        let seg = inner
            .log
            .segment_for(offset)
            .ok_or(StoreError::InvalidPosition(offset))?;
        if offset > written || (offset != seg.base && inner.log.read_entry(offset).is_err()) {
            return Err(StoreError::InvalidPosition(offset));
        }
        let target = inner.dispatch_target();
        while state.dispatched < target {
            let touched = dispatch::dispatch_round(inner, &mut state, target, u64::MAX)?;
            inner.notify_listener(&touched);
        }
        let replicated = inner.dispatch_limit.load(Ordering::Acquire) != u64::MAX;
        if replicated && offset < state.dispatched {
            // Dispatched records are committed: a replicated log never takes them back.
            return Err(StoreError::InvalidPosition(offset));
        }
        {
            // The cut batches no longer count in their topics' sizes.
            let mut sizes = inner.topic_bytes.lock();
            let cut = topic_bytes::walk(
                &seg,
                offset,
                seg.end().min(state.dispatched),
                &state.tombstones,
                state.holes(),
            );
            for (topic, bytes) in cut {
                sizes.subtract(seg.base, &topic, bytes);
            }
            for later in inner.log.segments().iter().filter(|s| s.base > seg.base) {
                sizes.remove_segment(later.base);
            }
        }
        inner.index.truncate(offset)?;
        for (_, _, cq) in inner.queues.all() {
            cq.truncate_log_offset(offset)?;
        }
        // The checkpoint must not vouch for bytes about to be cut, and says the log ends at
        // `offset` until the cut is on disk: a crash midway is finished by recovery.
        inner.checkpoint_at(&mut last_checkpoint, offset)?;
        seg.zero_from(offset - seg.base)?;
        seg.sync()?;
        let removed = inner.log.remove_after(offset);
        for s in &removed {
            std::fs::remove_file(s.path())?;
        }
        if !removed.is_empty() {
            crate::segment::sync_dir(&inner.log.dir)?;
        }
        // Before anything is appended past `offset` again (the writer lock is held).
        if let Some(cp) = last_checkpoint.as_mut() {
            cp.log_end = None;
            cp.store(&inner.config.data_dir)?;
        }
        writer.reset(Arc::clone(&seg), offset);
        inner.log.publish_written(offset);
        state.dispatched = state.dispatched.min(offset);
        inner.dispatched.store(state.dispatched, Ordering::Release);
        if inner.flushed.load(Ordering::Acquire) > offset {
            inner.set_flushed(offset);
        }
        let next = next_offsets(inner, offset)?;
        let queues = writer.queues_mut();
        queues.clear();
        queues.extend(next);
        tracing::info!(offset, removed_segments = removed.len(), "log truncated");
        Ok(())
    }

    /// Drops a topic's consume queues (its records go with retention). A tombstone (see
    /// `tombstones.rs`) keeps any later recovery from rebuilding them from those records, and
    /// a checkpoint is written at once.
    pub fn delete_queues(&self, topic: &str) -> Result<(), StoreError> {
        check_topic(topic)?;
        let inner = &self.inner;
        let mut writer = inner.writer.lock();
        {
            let mut state = inner.dispatch.lock();
            let written = writer.written();
            let target = inner.dispatch_target();
            while state.dispatched < target {
                let touched = dispatch::dispatch_round(inner, &mut state, target, u64::MAX)?;
                inner.notify_listener(&touched);
            }
            // First the tombstone: from then on no recovery indexes these records again.
            state.tombstones.add(topic, written)?;
            state.forget_topic(topic);
            inner.topic_bytes.lock().remove_topic(topic);
            inner.queues.remove_topic(topic)?;
            writer.queues_mut().remove(topic);
        }
        drop(writer);
        inner.checkpoint()
    }

    /// Sets the function told about new messages (see [`DispatchListener`]).
    pub fn set_dispatch_listener(&self, listener: DispatchListener) {
        *self.inner.listener.write() = Some(listener);
    }

    /// Runs retention now (it also runs every `retention_check_interval`); returns how many
    /// segments were deleted.
    pub fn run_retention(&self) -> Result<usize, StoreError> {
        retention::run_once(&self.inner)
    }

    /// Writes a checkpoint now (it is also written every `checkpoint_interval`).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.checkpoint()
    }

    /// Positions and counters.
    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        let segments = inner.log.segments();
        let (ratio, free, total) =
            retention::disk_usage(&inner.config.data_dir).unwrap_or((0.0, 0, 0));
        StoreStats {
            min_offset: segments.first().map_or(0, |s| s.base),
            written_offset: inner.log.written(),
            flushed_offset: inner.flushed.load(Ordering::Acquire),
            dispatched_offset: inner.dispatched.load(Ordering::Acquire),
            segment_count: segments.len(),
            segment_bytes: segments.iter().map(|s| s.capacity).sum(),
            disk_free: free,
            disk_total: total,
            disk_used_ratio: ratio,
            fsyncs: inner.stats.fsyncs.load(Ordering::Relaxed),
            appends: inner.stats.appends.load(Ordering::Relaxed),
            messages: inner.stats.messages.load(Ordering::Relaxed),
            cache_released_offset: inner.cache_released.load(Ordering::Acquire),
        }
    }

    /// Stops the threads, flushes and dispatches everything, and writes a checkpoint. Appends
    /// fail with [`StoreError::Closed`] afterwards. Calling it again does nothing.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            // Wait for an append in progress to finish; none can start now.
            drop(self.inner.writer.lock());
            let _guard = self.inner.wake.lock();
            self.inner.stop.store(true, Ordering::Release);
            self.inner.dispatch_cv.notify_all();
            self.inner.flush_cv.notify_all();
            self.inner.stop_cv.notify_all();
        }
        for handle in self.threads.lock().drain(..) {
            if handle.join().is_err() {
                tracing::error!("a store thread panicked");
            }
        }
        let written = self.inner.log.written();
        {
            let mut state = self.inner.dispatch.lock();
            let target = self.inner.dispatch_target();
            while state.dispatched < target {
                dispatch::dispatch_round(&self.inner, &mut state, target, u64::MAX)?;
            }
        }
        flush::flush_to(&self.inner, written)?;
        self.inner.checkpoint()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "store shutdown on drop failed");
        }
    }
}

/// Why the consume queues or the key index cannot be trusted up to the checkpoint `cp` (then
/// they are rebuilt from the log), or `None`.
fn stale_indexes(
    cp: &Checkpoint,
    queues: &ConsumeQueues,
    rec: &recovery::Recovered,
    index_dir: &std::path::Path,
) -> Option<String> {
    if let Some(expected) = cp.queues {
        let found = queues.totals();
        if found != expected {
            return Some(format!(
                "the consume queues do not match the checkpoint ({} queues with {} entries \
                 expected, {} with {} found: files deleted, cut or replaced)",
                expected.count, expected.entries, found.count, found.entries
            ));
        }
    }
    if cp.index.base != u64::MAX && !index_dir.join(segment::file_name(cp.index.base)).exists() {
        return Some(format!(
            "key-index file {} is missing",
            segment::file_name(cp.index.base)
        ));
    }
    // Each queue's newest entry must still point at its own record.
    let log_min = rec.segments.first().map_or(0, |s| s.base);
    for (topic, queue_id, cq) in queues.all() {
        let Some(last) = cq.max().checked_sub(1).filter(|l| *l >= cq.min()) else {
            continue;
        };
        let Ok(entry) = cq.entry(last) else {
            return Some(format!(
                "the consume queue {topic}/{queue_id} cannot be read"
            ));
        };
        if entry.is_lost() || (entry.is_written() && entry.offset < log_min) {
            continue;
        }
        let expected = Expected {
            topic: &topic,
            queue_id,
            queue_offset: last,
        };
        let good = entry.is_written()
            && rec
                .segments
                .iter()
                .rev()
                .find(|s| s.base <= entry.offset)
                .and_then(|s| s.bytes(entry.offset - s.base, entry.size as usize))
                .is_some_and(|b| verify::check_entry(b, entry.offset, expected).is_ok());
        if !good {
            return Some(format!(
                "the newest entry of consume queue {topic}/{queue_id} does not match the commit log"
            ));
        }
    }
    None
}

/// Every queue's next offset, from the consume queues.
/// Every queue's next offset for a log written up to `written`: the consume queues' ends,
/// moved on by the records written but not yet dispatched (a replicated log's uncommitted
/// tail).
fn next_offsets(
    inner: &Inner,
    written: u64,
) -> Result<HashMap<String, HashMap<u32, u64>>, StoreError> {
    let mut out: HashMap<String, HashMap<u32, u64>> = HashMap::new();
    for (topic, queue_id, cq) in inner.queues.all() {
        out.entry(topic).or_default().insert(queue_id, cq.max());
    }
    let mut pos = inner.dispatched.load(Ordering::Acquire);
    while pos < written {
        let Some(seg) = inner.log.segment_for(pos) else {
            return Err(StoreError::InvalidPosition(pos));
        };
        let rel = pos - seg.base;
        let avail = (written - pos).min(seg.capacity - rel) as usize;
        let rest = seg
            .bytes(rel, avail)
            .ok_or(StoreError::InvalidPosition(pos))?;
        if (rest.len() as u64) < segment::END_MARKER_LEN || segment::is_end_marker(rest) {
            pos = seg.end();
            continue;
        }
        let entry = weir_proto::batch::Entry::parse(rest)?;
        let stamp = entry.stamp();
        let next = stamp.base_offset + entry.record_count() as u64;
        let queue = out
            .entry(entry.topic().to_owned())
            .or_default()
            .entry(stamp.queue_id)
            .or_default();
        *queue = (*queue).max(next);
        pos += entry.len() as u64;
    }
    Ok(out)
}

fn run_checkpointer(inner: Arc<Inner>) {
    loop {
        {
            let mut guard = inner.wake.lock();
            if !inner.stopping() {
                inner
                    .stop_cv
                    .wait_for(&mut guard, inner.config.checkpoint_interval);
            }
        }
        if inner.stopping() {
            return;
        }
        if let Err(e) = inner.checkpoint() {
            tracing::error!(error = %e, "checkpoint failed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

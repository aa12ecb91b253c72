//! How the idempotence table survives a restart: a snapshot file plus a scan of the commit log
//! written after it.
//!
//! `config/producer_state.json`:
//!
//! ```text
//! { "log_offset": L,
//!   "producers": [ { "producer_id", "topic", "queue_id", "batches": [BatchEntry, ...] } ] }
//! ```
//!
//! A snapshot is taken under the table lock (which every idempotent append holds from its
//! check to its append) with `L` = the store's flushed offset at that moment, and keeps only
//! batches that end at or below `L`. So every idempotent batch below `L` is in the file, and
//! none that a crash could still cut from the log. At start the broker loads the file, then
//! reads every record from `L` (or the log's start, if retention passed `L`) to the end:
//! records with a producer id, in a queue of a user topic (or in `%DELAY%`, counted for the
//! queue they wait to go to), that follow each other directly with consecutive sequences of
//! one (producer, topic, queue) form a run, remembered like a batch. A batch split between its
//! queue and `%DELAY%` becomes two or more runs there, so a retry of it after a crash before
//! its snapshot is answered `duplicate_sequence` instead of with its positions. A retried batch that is part of a run is found inside it (`position_of` walks the
//! run's records for the exact position).
//!
//! A snapshot is written every second when the table changed, or when the log moved more than
//! [`RESNAPSHOT_BYTES`] past the last one (so a restart never scans far).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::atomic_file;
use crate::core::message_log::MessageLog;
use crate::error::BrokerError;
use crate::features::delay::{DELAY_TOPIC, Delays, PROP_REAL_QUEUE, PROP_REAL_TOPIC};
use crate::features::idempotence::{
    BatchEntry, GroupSync, Idempotence, Key, Table, next_record_offset, producer_ids,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_proto::batch::{Entry, MAX_UNCOMPRESSED_LEN};

/// How often the snapshot task looks.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// The log may grow this much past the last snapshot before another is written.
const RESNAPSHOT_BYTES: u64 = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct ProducerEntry {
    producer_id: u64,
    topic: String,
    queue_id: u32,
    batches: Vec<BatchEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    log_offset: u64,
    producers: Vec<ProducerEntry>,
}

/// Where the snapshot lives and the log offset of the last one written.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    pub(crate) path: PathBuf,
    last_offset: Mutex<u64>,
}

/// Loads the snapshot and rebuilds the rest of the table from the commit log.
pub(crate) fn load(
    log: MessageLog,
    delays: Arc<Delays>,
    data_dir: &Path,
) -> Result<Idempotence, BrokerError> {
    let path = data_dir.join("config").join("producer_state.json");
    let (table, snapshot_offset, runs) = read_table(&log, &path)?;
    Ok(Idempotence {
        log,
        delays,
        ids: producer_ids::ProducerIds::load(data_dir)?,
        table: Mutex::new(table),
        dirty: std::sync::atomic::AtomicBool::new(runs > 0),
        snapshot: SnapshotFile {
            path,
            last_offset: Mutex::new(snapshot_offset),
        },
        group: GroupSync::default(),
    })
}

/// The table as the snapshot at `path` and the commit log after it say (the log read to its
/// end, committed or not): (table, the snapshot's log offset, runs added from the log).
pub(crate) fn read_table(
    log: &MessageLog,
    path: &Path,
) -> Result<(Table, u64, usize), BrokerError> {
    let snapshot: Snapshot = match atomic_file::read_if_exists(path)
        .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?,
        None => Snapshot::default(),
    };
    let mut table: HashMap<Key, VecDeque<BatchEntry>> = HashMap::new();
    for p in snapshot.producers {
        table.insert(
            (p.producer_id, p.topic, p.queue_id),
            p.batches.into_iter().collect(),
        );
    }
    let from = snapshot.log_offset.max(log.stats().min_offset);
    let runs = rebuild_from_log(log, from, &mut table);
    if runs > 0 {
        tracing::info!(
            from,
            runs,
            "idempotent producer state rebuilt from the commit log"
        );
    }
    Ok((table, snapshot.log_offset, runs))
}

/// Adds the runs of idempotent batches from commit-log offset `from` on; returns how many.
fn rebuild_from_log(
    log: &MessageLog,
    from: u64,
    table: &mut HashMap<Key, VecDeque<BatchEntry>>,
) -> usize {
    let mut runs = 0;
    let mut current: Option<(Key, BatchEntry)> = None;
    let mut at = from;
    // What is readable: in a broker group, records not yet committed are not (the caller
    // waits for the group's log to be applied first).
    let stats = log.stats();
    let written = stats.written_offset.min(stats.dispatched_offset);
    while let Some((bytes, next)) = next_record_offset(log, at, written) {
        at = next;
        let Ok(entry) = Entry::parse(&bytes) else {
            continue;
        };
        let Some((pid, topic, queue_id)) = producer_queue(&entry) else {
            if let Some((key, run)) = current.take() {
                Idempotence::remember(table, key, run);
                runs += 1;
            }
            continue;
        };
        let stamp = entry.stamp();
        let Ok(first) = u32::try_from(entry.base_sequence()) else {
            continue;
        };
        let last = first.saturating_add(entry.record_count() - 1);
        if let Some((key, run)) = current.as_mut()
            && key.0 == pid
            && key.1 == topic
            && key.2 == queue_id
            && run.last_seq.checked_add(1) == Some(first)
        {
            run.last_seq = last;
            run.end_offset = next;
            continue;
        }
        if let Some((key, run)) = current.take() {
            Idempotence::remember(table, key, run);
            runs += 1;
        }
        current = Some((
            (pid, topic, queue_id),
            BatchEntry {
                first_seq: first,
                last_seq: last,
                queue_offset: stamp.base_offset,
                commit_log_offset: stamp.commit_log_offset,
                end_offset: next,
                store_timestamp: stamp.store_timestamp,
            },
        ));
    }
    if let Some((key, run)) = current {
        Idempotence::remember(table, key, run);
        runs += 1;
    }
    runs
}

/// The producer and the (topic, queue) an idempotent producer wrote `entry` to, if it is such
/// a write: a batch with a producer id in a user topic, or in `%DELAY%` on its way to its real
/// queue. Broker-made copies (delivered, retried, dead-lettered, committed) carry no producer
/// id; transaction batches are not checked for duplicates.
fn producer_queue(entry: &Entry<'_>) -> Option<(u64, String, u32)> {
    let pid = u64::try_from(entry.producer_id()).ok()?;
    if entry.is_transactional() || entry.is_control() {
        return None;
    }
    if entry.topic() == DELAY_TOPIC {
        let records = entry.records(MAX_UNCOMPRESSED_LEN).ok()?;
        let record = records.iter().next()?.ok()?;
        let topic = record.header_str(PROP_REAL_TOPIC)?;
        let queue_id = record.header_str(PROP_REAL_QUEUE)?.parse().ok()?;
        return Some((pid, topic.to_owned(), queue_id));
    }
    (!weir_proto::names::is_internal(entry.topic()))
        .then(|| (pid, entry.topic().to_owned(), entry.stamp().queue_id))
}

/// Writes a snapshot if the table changed or the log moved far since the last one.
fn write_if_due(idem: &Idempotence) -> Result<(), BrokerError> {
    let log = &idem.log;
    let flushed = log.stats().flushed_offset;
    let mut last = idem.snapshot.last_offset.lock();
    let changed = idem.dirty.load(Ordering::Acquire);
    if !changed && flushed.saturating_sub(*last) < RESNAPSHOT_BYTES {
        return Ok(());
    }
    // In a broker group the table is whole only on the leader that rebuilt it, and only
    // between appends. (Checked before the table's lock: a rebuild takes the term's lock,
    // then the table's.)
    if !idem.group.snapshot_allowed(&idem.log) {
        return Ok(());
    }
    let snapshot = {
        let table = idem.table.lock();
        if idem.group.appending() {
            return Ok(());
        }
        // Read under the lock: every batch appended before it is in the table.
        let log_offset = log.stats().flushed_offset;
        idem.dirty.store(false, Ordering::Release);
        Snapshot {
            log_offset,
            producers: table
                .iter()
                .filter_map(|((producer_id, topic, queue_id), window)| {
                    let batches: Vec<BatchEntry> = window
                        .iter()
                        .filter(|b| b.end_offset <= log_offset)
                        .copied()
                        .collect();
                    (!batches.is_empty()).then(|| ProducerEntry {
                        producer_id: *producer_id,
                        topic: topic.clone(),
                        queue_id: *queue_id,
                        batches,
                    })
                })
                .collect(),
        }
    };
    let json = serde_json::to_vec(&snapshot)
        .map_err(|e| BrokerError::Config(format!("encoding the producer state: {e}")))?;
    atomic_file::write_atomic(&idem.snapshot.path, &json)
        .map_err(|e| BrokerError::io(idem.snapshot.path.display(), e))?;
    *last = snapshot.log_offset;
    Ok(())
}

/// Writes snapshots until shutdown, and once more at the end.
pub(crate) async fn run(idempotence: Arc<Idempotence>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(SNAPSHOT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = ticker.tick() => false,
            _ = crate::shutdown::requested(&mut shutdown) => true,
        };
        let chores = idempotence.clone();
        let written = tokio::task::spawn_blocking(move || write_if_due(&chores)).await;
        match written {
            Ok(Err(e)) => tracing::error!(error = %e, "writing the producer state failed"),
            Err(e) => tracing::error!(error = %e, "writing the producer state failed"),
            Ok(Ok(())) => {}
        }
        if stop {
            return;
        }
    }
}

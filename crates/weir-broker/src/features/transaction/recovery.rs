//! Rebuilding the pending set at start: every op record in `%HALF_OP%` is read (decisions, and
//! the check-backs made so far with their attempt numbers and times), then every half message
//! of `%HALF%` from the persisted low-water mark on; the halves with no decision are pending
//! again, with the count of checks already made. The next check of each is due when it would
//! have been had the broker kept running (its last check + `interval`), but not before `first`
//! after the start, so its producers have time to connect again; one never checked is due
//! `first` after the start.
//!
//! A new leader of a broker group does the same when it takes over ([`Transactions::rebuild`]):
//! half messages and op records are entries of the group's log, so every replica holds them,
//! but the pending set it built when it started is stale — halves written and transactions
//! decided while it followed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weir_proto::batch::{Entries, Entry, MAX_UNCOMPRESSED_LEN, RecordView};
use weir_proto::transaction::{HALF_TOPIC, HalfOp, OP_TOPIC, decode_op};
use weir_store::TagFilter;

use crate::atomic_file;
use crate::core::clock::now_ms;
use crate::core::message_log::MessageLog;
use crate::core::topics::TopicTable;
use crate::error::BrokerError;
use crate::features::transaction::{CheckTimings, LowWater, Pending, Transactions, half};

/// Messages read per step of a scan.
const SCAN_BATCH: u32 = 1024;
/// Bytes read per step of a scan.
const SCAN_BYTES: u32 = 4 << 20;

/// Calls `f` with every message of queue 0 of `topic` from queue offset `from` on, and the
/// entry holding it.
fn scan(
    log: &MessageLog,
    topic: &str,
    from: u64,
    mut f: impl FnMut(&Entry<'_>, &RecordView<'_>),
) -> Result<(), BrokerError> {
    let all = TagFilter::All;
    let bounds = log.queue_offsets(topic, 0);
    let mut next = from.clamp(bounds.min, bounds.max);
    while next < bounds.max {
        let read = log
            .read(topic, 0, next, SCAN_BATCH, SCAN_BYTES, &all)
            .map_err(BrokerError::Store)?;
        for entry in Entries::new(&read.records) {
            let walked = entry.and_then(|entry| {
                let base = entry.stamp().base_offset;
                for record in entry.records(MAX_UNCOMPRESSED_LEN)?.iter() {
                    let record = record?;
                    if base + u64::from(record.offset_delta) >= next {
                        f(&entry, &record);
                    }
                }
                Ok(())
            });
            if let Err(e) = walked {
                tracing::warn!(topic, error = %e, "skipping an unreadable batch");
            }
        }
        if read.next_offset <= next {
            break;
        }
        next = read.next_offset;
    }
    Ok(())
}

/// The latest check-back recorded for a half message.
#[derive(Debug, Clone, Copy)]
struct LastCheck {
    /// Its attempt number, from 1.
    attempt: u32,
    /// When it was made, wall-clock ms.
    at_ms: i64,
}

/// When the next check of a recovered half message is due, for a broker started at `started`
/// (wall clock `now_ms`): `interval` after its last check, but not before `first` after the
/// start; `first` after the start when it was never checked.
fn next_check(
    timings: CheckTimings,
    started: Instant,
    now_ms: i64,
    last: Option<LastCheck>,
) -> Instant {
    let grace = started + timings.first;
    let Some(last) = last else {
        return grace;
    };
    // A clock set back since the check counts as no time passed: a full interval to wait.
    let since = Duration::from_millis(u64::try_from(now_ms - last.at_ms).unwrap_or(0));
    (started + timings.interval.saturating_sub(since)).max(grace)
}

/// The pending set as the log says: every op record, then the halves from queue offset
/// `from` of `%HALF%` on.
fn scan_pending(
    log: &MessageLog,
    from: u64,
    timings: CheckTimings,
) -> Result<BTreeMap<u64, Pending>, BrokerError> {
    let mut decided = HashSet::new();
    let mut checked: HashMap<u64, LastCheck> = HashMap::new();
    scan(log, OP_TOPIC, 0, |_, record| {
        match decode_op(record.body()) {
            Ok((half_offset, HalfOp::Decided(_))) => {
                decided.insert(half_offset);
            }
            Ok((half_offset, HalfOp::Checked { attempt })) => {
                let check = LastCheck {
                    attempt,
                    at_ms: record.timestamp,
                };
                checked
                    .entry(half_offset)
                    .and_modify(|last| {
                        if check.attempt > last.attempt {
                            *last = check;
                        }
                    })
                    .or_insert(check);
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable transaction op record"),
        }
    })?;
    let mut pending = BTreeMap::new();
    let started = Instant::now();
    let now = now_ms();
    scan(log, HALF_TOPIC, from, |entry, record| {
        let stamp = entry.stamp();
        if decided.contains(&stamp.commit_log_offset) {
            return;
        }
        if let Some(info) = half::info(entry, record) {
            let last = checked.get(&stamp.commit_log_offset).copied();
            pending.insert(
                stamp.commit_log_offset,
                Pending {
                    info,
                    half_queue_offset: stamp.base_offset + u64::from(record.offset_delta),
                    next_check: next_check(timings, started, now, last),
                    checks: last.map_or(0, |c| c.attempt),
                    deciding: false,
                },
            );
        }
    })?;
    Ok(pending)
}

/// Loads the low-water mark and rebuilds the pending set from the log.
pub(crate) fn load(
    log: MessageLog,
    topics: Arc<TopicTable>,
    data_dir: &Path,
    timings: CheckTimings,
) -> Result<Transactions, BrokerError> {
    let path = Transactions::path(data_dir);
    let low_water: LowWater = match atomic_file::read_if_exists(&path)
        .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?,
        None => LowWater::default(),
    };
    let pending = scan_pending(&log, low_water.half_queue_offset, timings)?;
    if !pending.is_empty() {
        tracing::info!(
            pending = pending.len(),
            checked_before = pending.values().filter(|p| p.checks > 0).count(),
            "undecided transactions recovered; they will be checked back"
        );
    }
    Ok(Transactions {
        log,
        topics,
        timings,
        pending: Mutex::new(pending),
        members: Mutex::new(Default::default()),
        low_water_path: path,
        persisted_low_water: Mutex::new(low_water.half_queue_offset),
    })
}

impl Transactions {
    /// A new leader of a broker group starts from the log (see the module docs): the pending
    /// set becomes what the log says up to where it ended when the rebuild began; halves
    /// written after that (by this leader, during the scan) stay as the write path put them.
    pub(crate) fn rebuild(&self) -> Result<(), BrokerError> {
        let written = self.log.stats().written_offset;
        let from = *self.persisted_low_water.lock();
        let scanned = scan_pending(&self.log, from, self.timings)?;
        let count = scanned.len();
        let mut pending = self.pending.lock();
        let newer = pending.split_off(&written);
        *pending = scanned;
        for (offset, p) in newer {
            pending.entry(offset).or_insert(p);
        }
        drop(pending);
        tracing::info!(
            pending = count,
            "undecided transactions rebuilt by the new leader"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use weir_proto::batch::{
        BatchBuilder, BatchOptions, Compression, RecordFields, attributes, with_record,
    };
    use weir_proto::transaction::{Decision, PROP_PRODUCER_GROUP, PROP_TRANSACTION_ID};
    use weir_store::{Store, StoreConfig};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const TIMINGS: CheckTimings = CheckTimings {
        first: Duration::from_millis(500),
        interval: Duration::from_secs(3),
        max: 15,
    };

    #[test]
    fn the_next_check_keeps_its_interval_across_a_restart_but_waits_for_producers() {
        let started = Instant::now();
        let at = |ms: u64| started + Duration::from_millis(ms);
        let now = 1_000_000;
        let last = |attempt, ago: i64| {
            Some(LastCheck {
                attempt,
                at_ms: now - ago,
            })
        };
        assert_eq!(next_check(TIMINGS, started, now, None), at(500));
        // Checked 1 s before the start: the next is due 2 s after it.
        assert_eq!(next_check(TIMINGS, started, now, last(4, 1_000)), at(2_000));
        // Due while the broker was down, or just after the start: not before `first`.
        assert_eq!(next_check(TIMINGS, started, now, last(4, 60_000)), at(500));
        assert_eq!(next_check(TIMINGS, started, now, last(4, 2_800)), at(500));
        // A check "in the future" (the clock was set back): a full interval.
        assert_eq!(
            next_check(TIMINGS, started, now, last(4, -5_000)),
            at(3_000)
        );
    }

    /// Stores a half message of transaction `tx` in `%HALF%`; returns its commit-log offset.
    async fn store_half(log: &MessageLog, tx: &str) -> Result<u64, Box<dyn std::error::Error>> {
        let options = BatchOptions {
            flags: attributes::TRANSACTIONAL,
            ..BatchOptions::default()
        };
        let mut builder = BatchBuilder::new("orders", options)?;
        builder.push(
            &RecordFields {
                timestamp: 1,
                key: None,
                value: Some(tx.as_bytes()),
            },
            [
                (PROP_TRANSACTION_ID, Some(tx.as_bytes())),
                (PROP_PRODUCER_GROUP, Some(&b"pg"[..])),
            ]
            .into_iter(),
        )?;
        let sent = builder.finish(Compression::None)?;
        let (half, _) = with_record(&sent, 0, |e, r| half::to_half(e, r, 0))??;
        Ok(log.append(HALF_TOPIC, 0, half).await?.commit_log_offset)
    }

    #[tokio::test]
    async fn check_counts_and_times_come_back_from_the_op_records() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut config = StoreConfig::new(dir.path());
        config.segment_size = 1 << 20;
        config.max_message_size = 64 << 10;
        let opened = Store::open(config)?;
        let log = MessageLog::new(opened.clone());
        let checked = store_half(&log, "tx-checked").await?;
        let never = store_half(&log, "tx-never").await?;
        let decided = store_half(&log, "tx-decided").await?;
        let now = now_ms();
        for (half_offset, tx, attempt, ago) in [
            (checked, "tx-checked", 1, 4_000),
            (checked, "tx-checked", 2, 1_000),
            (decided, "tx-decided", 1, 1_000),
        ] {
            let op = half::check_record(half_offset, tx, attempt, now - ago)?;
            log.append(OP_TOPIC, 0, op).await?;
        }
        let op = half::decision_record(decided, "tx-decided", Decision::Commit, now)?;
        log.append(OP_TOPIC, 0, op).await?;

        let before = Instant::now();
        let topics = Arc::new(TopicTable::load(dir.path())?);
        let transactions = load(log, topics, dir.path(), TIMINGS)?;
        let after = Instant::now();
        let pending = transactions.pending.lock();
        assert_eq!(
            pending.keys().copied().collect::<Vec<_>>(),
            [checked, never]
        );
        let p = &pending[&checked];
        assert_eq!(p.checks, 2);
        // The last check was 1 s ago: the third is due about 2 s from now.
        assert!(p.next_check <= after + Duration::from_secs(2));
        assert!(p.next_check >= before + Duration::from_millis(1_500));
        let p = &pending[&never];
        assert_eq!(p.checks, 0);
        assert!(p.next_check >= before + TIMINGS.first && p.next_check <= after + TIMINGS.first);
        drop(pending);
        opened.shutdown()?;
        Ok(())
    }
}

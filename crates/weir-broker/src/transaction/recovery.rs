//! Rebuilding the pending set at start: every decision in `%HALF_OP%` is read, then every half
//! message of `%HALF%` from the persisted low-water mark on; the halves with no decision are
//! pending again, their first check `first` from now (check counts start over).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use parking_lot::Mutex;
use weir_proto::record::{Record, Records};
use weir_proto::transaction::{HALF_TOPIC, OP_TOPIC, decode_decision};
use weir_store::{Store, TagFilter};

use crate::atomic_file;
use crate::error::BrokerError;
use crate::transaction::{CheckTimings, LowWater, Pending, Transactions, half};

/// Records read per step of a scan.
const SCAN_BATCH: u32 = 1024;
/// Bytes read per step of a scan.
const SCAN_BYTES: u32 = 4 << 20;

/// Calls `f` with every record of queue 0 of `topic` from queue offset `from` on.
fn scan(
    store: &Store,
    topic: &str,
    from: u64,
    mut f: impl FnMut(&Record<'_>),
) -> Result<(), BrokerError> {
    let all = TagFilter::All;
    let bounds = store.queue_offsets(topic, 0);
    let mut next = from.clamp(bounds.min, bounds.max);
    while next < bounds.max {
        let read = store
            .read(topic, 0, next, SCAN_BATCH, SCAN_BYTES, &all)
            .map_err(BrokerError::Store)?;
        for record in Records::new(&read.records) {
            match record {
                Ok(record) => f(&record),
                Err(e) => tracing::warn!(topic, error = %e, "skipping an unreadable record"),
            }
        }
        if read.next_offset <= next {
            break;
        }
        next = read.next_offset;
    }
    Ok(())
}

/// Loads the low-water mark and rebuilds the pending set from the store.
pub(crate) fn load(
    store: &Store,
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
    let mut decided = HashSet::new();
    scan(store, OP_TOPIC, 0, |record| {
        if let Ok((half_offset, _)) = decode_decision(record.body()) {
            decided.insert(half_offset);
        }
    })?;
    let mut pending = BTreeMap::new();
    let first_check = Instant::now() + timings.first;
    scan(store, HALF_TOPIC, low_water.half_queue_offset, |record| {
        let stamp = record.stamp();
        if decided.contains(&stamp.commit_log_offset) {
            return;
        }
        if let Some(info) = half::info(record) {
            pending.insert(
                stamp.commit_log_offset,
                Pending {
                    info,
                    half_queue_offset: stamp.queue_offset,
                    next_check: first_check,
                    checks: 0,
                    deciding: false,
                },
            );
        }
    })?;
    if !pending.is_empty() {
        tracing::info!(
            pending = pending.len(),
            "undecided transactions recovered; they will be checked back"
        );
    }
    Ok(Transactions {
        timings,
        pending: Mutex::new(pending),
        members: Mutex::new(Default::default()),
        low_water_path: path,
        persisted_low_water: Mutex::new(low_water.half_queue_offset),
    })
}

//! The delayed messages still waiting, as the dashboard lists them: read from `%DELAY%` from
//! the delivery progress's low-water mark, delivered ones skipped, soonest due first.

use weir_proto::batch::{Entries, MAX_UNCOMPRESSED_LEN};
use weir_store::TagFilter;

use super::{DELAY_TOPIC, Delays, PROP_REAL_QUEUE, PROP_REAL_TOPIC};
use crate::error::RequestError;

/// Most `%DELAY%` records one listing reads.
const MAX_SCAN: u64 = 10_000;

/// A delayed message not delivered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upcoming {
    /// Its place in `%DELAY%` (its message id until delivery).
    pub commit_log_offset: u64,
    /// When it is due, ms since the Unix epoch.
    pub deliver_at_ms: i64,
    /// When it was stored.
    pub stored_at_ms: i64,
    /// The topic it goes to.
    pub topic: String,
    /// The queue it goes to.
    pub queue_id: u32,
    /// Its key.
    pub key: String,
}

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpcomingList {
    /// The soonest due, at most the number asked for.
    pub messages: Vec<Upcoming>,
    /// Undelivered messages seen in the scan (all of them unless `truncated`).
    pub scanned_pending: u64,
    /// The scan stopped after [`MAX_SCAN`] records.
    pub truncated: bool,
}

impl Delays {
    /// Up to `max` undelivered delayed messages, soonest due first.
    pub(crate) fn upcoming(&self, max: usize) -> Result<UpcomingList, RequestError> {
        let store = &self.log;
        let bounds = store.queue_offsets(DELAY_TOPIC, 0);
        let mut offset = self.progress.lock().low().max(bounds.min);
        let end = bounds.max.min(offset.saturating_add(MAX_SCAN));
        let mut list = UpcomingList {
            truncated: end < bounds.max,
            ..UpcomingList::default()
        };
        while offset < end {
            let count = u32::try_from(end - offset).unwrap_or(u32::MAX).min(1024);
            let read = store.read(DELAY_TOPIC, 0, offset, count, 4 << 20, &TagFilter::All)?;
            for entry in Entries::new(&read.records) {
                let Ok(entry) = entry else { continue };
                let stamp = entry.stamp();
                if stamp.base_offset < offset || self.progress.lock().is_done(stamp.base_offset) {
                    continue;
                }
                let Ok(records) = entry.records(MAX_UNCOMPRESSED_LEN) else {
                    continue;
                };
                let Some(Ok(record)) = records.iter().next() else {
                    continue;
                };
                list.scanned_pending += 1;
                list.messages.push(Upcoming {
                    commit_log_offset: stamp.commit_log_offset,
                    deliver_at_ms: record.deliver_at(),
                    stored_at_ms: stamp.store_timestamp,
                    topic: record.header_str(PROP_REAL_TOPIC).unwrap_or("").to_owned(),
                    queue_id: record
                        .header_str(PROP_REAL_QUEUE)
                        .and_then(|q| q.parse().ok())
                        .unwrap_or(0),
                    key: record.key_str().to_owned(),
                });
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        list.messages
            .sort_by_key(|m| (m.deliver_at_ms, m.commit_log_offset));
        list.messages.truncate(max);
        Ok(list)
    }
}

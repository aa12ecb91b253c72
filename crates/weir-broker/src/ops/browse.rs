//! Reading stored messages by position: a range of a queue, one message at a queue offset, the
//! first message of each queue at or after a time. What the HTTP API's message lookups and the
//! dashboard's message browser use besides the by-id and by-key lookups of
//! [`lookup`](super::lookup).

use weir_proto::ErrorCode;
use weir_proto::batch::Message;
use weir_store::TagFilter;

use crate::error::RequestError;
use crate::ops::lookup::decode_range;
use crate::state::BrokerState;

/// Most messages one range read returns.
pub(crate) const MAX_RANGE: u32 = 1000;

/// A range of a queue.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueuePage {
    /// The messages, oldest first.
    pub records: Vec<Message>,
    /// The offset after the last one returned.
    pub next_offset: u64,
    /// The queue's readable range.
    pub min_offset: u64,
    /// The queue's end.
    pub max_offset: u64,
}

/// Up to `max` (capped at [`MAX_RANGE`]) messages of `topic`/`queue_id` from queue offset
/// `from` (raised to the queue's minimum); `queue_not_found` / `topic_not_found` when the queue
/// does not exist.
pub(crate) fn range(
    state: &BrokerState,
    topic: &str,
    queue_id: u32,
    from: u64,
    max: u32,
) -> Result<QueuePage, RequestError> {
    state.topics.check_queue(topic, queue_id)?;
    let bounds = state.log.queue_offsets(topic, queue_id);
    let from = from.max(bounds.min);
    if from >= bounds.max || max == 0 {
        return Ok(QueuePage {
            records: Vec::new(),
            next_offset: from.min(bounds.max),
            min_offset: bounds.min,
            max_offset: bounds.max,
        });
    }
    let read = state.log.read(
        topic,
        queue_id,
        from,
        max.min(MAX_RANGE),
        state.config.max_pull_bytes(),
        &TagFilter::All,
    )?;
    let mut records = decode_range(&read.records, from, read.next_offset)?;
    records.truncate(max.min(MAX_RANGE) as usize);
    let next_offset = records
        .last()
        .map_or(read.next_offset, |m| m.queue_offset + 1);
    Ok(QueuePage {
        records,
        next_offset,
        min_offset: read.min_offset,
        max_offset: read.max_offset,
    })
}

/// The message at `topic`/`queue_id`/`offset`, or `message_not_found` (also when retention
/// removed it or the offset is not written yet).
pub(crate) fn at_offset(
    state: &BrokerState,
    topic: &str,
    queue_id: u32,
    offset: u64,
) -> Result<Message, RequestError> {
    let page = range(state, topic, queue_id, offset, 1)?;
    let not_found = || {
        RequestError::new(
            ErrorCode::MessageNotFound,
            format!(
                "no message at {topic}:{queue_id}:{offset} (the queue holds offsets {}..{})",
                page.min_offset, page.max_offset
            ),
        )
    };
    if offset < page.min_offset {
        return Err(not_found());
    }
    page.records
        .into_iter()
        .next()
        .filter(|m| m.queue_offset == offset)
        .ok_or_else(not_found)
}

/// Messages of `topic` stored at or after `timestamp_ms`: from each queue's first such message
/// on, shared out over the queues (a queue with fewer leaves its share to the others), up to
/// `max` in all (capped at [`MAX_RANGE`]), sorted by store time.
pub(crate) fn by_time(
    state: &BrokerState,
    topic: &str,
    timestamp_ms: i64,
    max: u32,
) -> Result<Vec<Message>, RequestError> {
    let queues = state.topics.queues(topic)?;
    let max = max.clamp(1, MAX_RANGE) as usize;
    let mut cursors = (0..queues)
        .map(|q| Ok((q, state.log.offset_for_time(topic, q, timestamp_ms)?)))
        .collect::<Result<Vec<(u32, u64)>, RequestError>>()?;
    let mut out = Vec::new();
    while out.len() < max && !cursors.is_empty() {
        let share = (max - out.len()).div_ceil(cursors.len()).max(1) as u32;
        let mut still = Vec::with_capacity(cursors.len());
        for (queue_id, from) in cursors {
            let page = range(state, topic, queue_id, from, share)?;
            let exhausted = page.records.len() < share as usize;
            out.extend(page.records);
            if !exhausted {
                still.push((queue_id, page.next_offset));
            }
        }
        cursors = still;
    }
    out.sort_by_key(|m| (m.store_timestamp, m.queue_id, m.queue_offset));
    out.truncate(max);
    Ok(out)
}

//! `ListOffsets` (earliest, latest, by the records' own timestamps, the newest timestamp)
//! and `OffsetForLeaderEpoch` (where an epoch ends: see [`super::epochs`]).
//!
//! Both first check the client's current leader epoch against the broker's
//! ([`epochs::check_current`]); each answer names the epoch of the offset it gives (the
//! newest epoch for the log end).

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ListOffsetsRequest, OffsetForLeaderEpochRequest};

use crate::error::RequestError;
use crate::protocols::kafka::epochs::{self, LeaderEpochs, UNDEFINED};
use crate::protocols::kafka::errors;
use crate::protocols::kafka::names::{to_kafka, to_weir};
use crate::state::BrokerState;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Serves `ListOffsets`.
pub(crate) fn list_offsets(
    state: &BrokerState,
    epochs: &LeaderEpochs,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let current = epochs::current(state);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let weir_topic = to_weir(topic.name.0.as_str()).into_owned();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut answer = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_offset(-1)
                        .with_timestamp(-1);
                    if let Err(e) = epochs::check_current(p.current_leader_epoch, current) {
                        answer.error_code = e.code();
                        return answer;
                    }
                    match lookup(state, &weir_topic, p.partition_index, p.timestamp) {
                        Ok((offset, timestamp, queue_id)) => {
                            answer.offset = offset;
                            answer.timestamp = timestamp;
                            if version >= 4 && offset >= 0 {
                                let at = (queue_id, offset as u64);
                                answer.leader_epoch =
                                    epoch_of(state, epochs, &weir_topic, at, current);
                            }
                        }
                        Err(e) => answer.error_code = errors::kafka_code(e.code),
                    }
                    answer
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The epoch of the batch holding `(queue, offset)`; the newest one (the leader's: `current`)
/// for the log end.
fn epoch_of(
    state: &BrokerState,
    epochs: &LeaderEpochs,
    topic: &str,
    (queue_id, offset): (u32, u64),
    current: i32,
) -> i32 {
    let (history, offsets) = epochs.history(state, topic, queue_id);
    if offset >= offsets.max {
        history.latest(current)
    } else {
        history.epoch_of(offset)
    }
}

/// (offset, timestamp, queue) for one partition; offset and timestamp -1 when no record is
/// that new.
fn lookup(
    state: &BrokerState,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64, u32), RequestError> {
    let queue_id = queue_of(state, topic, partition)?;
    let offsets = state.log.queue_offsets(topic, queue_id);
    let (offset, timestamp) = match timestamp {
        LATEST => (offsets.max as i64, -1),
        EARLIEST => (offsets.min as i64, -1),
        MAX_TIMESTAMP if offsets.max > offsets.min => {
            // The newest record stands for the largest timestamp (exact while producers'
            // clocks move forward).
            let last = offsets.max - 1;
            (last as i64, record_time(state, topic, queue_id, last)?)
        }
        MAX_TIMESTAMP => (-1, -1),
        at => match state.log.offset_for_record_time(topic, queue_id, at)? {
            Some((offset, ts)) => (offset as i64, ts),
            None => (-1, -1),
        },
    };
    Ok((offset, timestamp, queue_id))
}

/// The timestamp of the record at `offset`.
fn record_time(
    state: &BrokerState,
    topic: &str,
    queue_id: u32,
    offset: u64,
) -> Result<i64, RequestError> {
    let read = state
        .log
        .read(topic, queue_id, offset, 1, 1, &weir_store::TagFilter::All)?;
    let mut ts = -1;
    for entry in weir_proto::batch::Entries::new(&read.records).flatten() {
        let base = entry.stamp().base_offset;
        if let Ok(records) = entry.records(weir_proto::batch::MAX_UNCOMPRESSED_LEN) {
            for r in records.iter().flatten() {
                if base + u64::from(r.offset_delta) == offset {
                    ts = r.timestamp;
                }
            }
        }
    }
    Ok(ts)
}

/// The queue a partition names, if Kafka clients may see the topic and it has the queue.
fn queue_of(state: &BrokerState, topic: &str, partition: i32) -> Result<u32, RequestError> {
    let queue_id = u32::try_from(partition)
        .ok()
        .filter(|_| to_kafka(topic).is_some());
    match queue_id {
        Some(queue_id) => {
            state.topics.check_queue(topic, queue_id)?;
            Ok(queue_id)
        }
        None => Err(RequestError::new(
            weir_proto::ErrorCode::TopicNotFound,
            format!("no partition {partition} of {topic:?}"),
        )),
    }
}

/// Serves `OffsetForLeaderEpoch`: per partition, where the requested epoch ends (the first
/// offset of the next newer epoch, the log end for the newest) and the largest epoch not
/// newer than it, as Kafka's leader-epoch cache answers (see [`LeaderEpochs`]).
pub(crate) fn offset_for_leader_epoch(
    state: &BrokerState,
    epochs: &LeaderEpochs,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let current = epochs::current(state);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let weir_topic = to_weir(topic.topic.0.as_str()).into_owned();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(UNDEFINED)
                        .with_end_offset(i64::from(UNDEFINED));
                    if let Err(e) = epochs::check_current(p.current_leader_epoch, current) {
                        answer.error_code = e.code();
                        return answer;
                    }
                    match queue_of(state, &weir_topic, p.partition) {
                        Ok(queue_id) => {
                            let (history, offsets) = epochs.history(state, &weir_topic, queue_id);
                            let (epoch, end) = history.end_of(p.leader_epoch, current, offsets.max);
                            answer.leader_epoch = epoch;
                            answer.end_offset = end;
                        }
                        Err(e) => answer.error_code = errors::kafka_code(e.code),
                    }
                    answer
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

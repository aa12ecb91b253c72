//! `ListOffsets` (earliest, latest, by the records' own timestamps, the newest timestamp)
//! and `OffsetForLeaderEpoch` (one epoch, 0, so its end is the partition's end).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ListOffsetsRequest, OffsetForLeaderEpochRequest};

use crate::error::RequestError;
use crate::protocols::kafka::errors;
use crate::protocols::kafka::metadata::LEADER_EPOCH;
use crate::protocols::kafka::names::{to_kafka, to_weir};
use crate::state::BrokerState;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Serves `ListOffsets`.
pub(crate) fn list_offsets(
    state: &BrokerState,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
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
                        .with_partition_index(p.partition_index);
                    if version >= 4 {
                        answer.leader_epoch = LEADER_EPOCH;
                    }
                    match lookup(state, &weir_topic, p.partition_index, p.timestamp) {
                        Ok((offset, timestamp)) => {
                            answer.offset = offset;
                            answer.timestamp = timestamp;
                        }
                        Err(e) => {
                            answer.error_code = errors::kafka_code(e.code);
                            answer.offset = -1;
                            answer.timestamp = -1;
                        }
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

/// (offset, timestamp) for one partition; (-1, -1) when no record is that new.
fn lookup(
    state: &BrokerState,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), RequestError> {
    let queue_id = queue_of(state, topic, partition)?;
    let offsets = state.log.queue_offsets(topic, queue_id);
    Ok(match timestamp {
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
    })
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

/// Serves `OffsetForLeaderEpoch`: every batch carries epoch 0, so epoch 0 ends at the
/// partition's end; a later epoch is unknown, as Kafka answers one it has not seen.
pub(crate) fn offset_for_leader_epoch(
    state: &BrokerState,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let weir_topic = to_weir(topic.topic.0.as_str()).into_owned();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut answer = EpochEndOffset::default().with_partition(p.partition);
                    match queue_of(state, &weir_topic, p.partition) {
                        Ok(_) if p.leader_epoch > LEADER_EPOCH => {
                            answer.error_code = ResponseError::UnknownLeaderEpoch.code();
                            answer.leader_epoch = -1;
                            answer.end_offset = -1;
                        }
                        Ok(queue_id) => {
                            answer.leader_epoch = LEADER_EPOCH;
                            answer.end_offset =
                                state.log.queue_offsets(&weir_topic, queue_id).max as i64;
                        }
                        Err(e) => {
                            answer.error_code = errors::kafka_code(e.code);
                            answer.leader_epoch = -1;
                            answer.end_offset = -1;
                        }
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

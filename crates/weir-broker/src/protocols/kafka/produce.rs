//! `Produce`: each partition's record batch gets Weir's envelope (one copy per batch) and
//! takes the same path as a native produce ([`crate::ops::produce`]): the producer's CRC is
//! checked once, the batch is stamped in place, idempotent producers' sequences are checked
//! (a batch sent again is answered with its original offset, never stored twice), delayed
//! records go to `%DELAY%`.
//!
//! acks=1 and acks=all both answer once the batch is acknowledged as the flush mode says (a
//! standalone broker is its partitions' only replica); acks=0 gets no response, as in Kafka.
//! A request's partitions are written in the order they came and their acknowledgements are
//! awaited together.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use weir_proto::ErrorCode;
use weir_proto::batch::{self, Entry};

use crate::core::position::Produced;
use crate::error::RequestError;
use crate::ops;
use crate::protocols::kafka::errors;
use crate::protocols::kafka::names::to_weir;
use crate::state::BrokerState;

/// One partition's produce, in flight.
type Pending<'a> = Pin<Box<dyn Future<Output = Result<Produced, RequestError>> + Send + 'a>>;

/// Serves `Produce`; `None` for acks=0 (no response is sent).
pub(crate) async fn produce(
    state: &BrokerState,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    // (topic index, partition index, the write in flight)
    let mut writes: Vec<(usize, i32, Pending<'_>)> = Vec::new();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for (t, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.0.as_str().to_owned();
        for partition in topic.partition_data {
            let index = partition.index;
            let records = partition.records.unwrap_or_default();
            let weir_topic = to_weir(&name).into_owned();
            let write: Pending<'_> =
                Box::pin(
                    async move { produce_partition(state, &weir_topic, index, records).await },
                );
            writes.push((t, index, write));
        }
        topics.push(TopicProduceResponse::default().with_name(topic.name));
    }
    // Each write takes its place in the log on its first poll: poll them all once, in order,
    // then wait for their acknowledgements together.
    let mut first_polls = Vec::with_capacity(writes.len());
    for (_, _, write) in &mut writes {
        let mut write = write.as_mut();
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(match write.as_mut().poll(cx) {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            })
        })
        .await;
        first_polls.push(polled);
    }
    for ((t, index, write), polled) in writes.into_iter().zip(first_polls) {
        let result = match polled {
            Some(result) => result,
            None => write.await,
        };
        let mut partition = PartitionProduceResponse::default()
            .with_index(index)
            .with_log_append_time_ms(-1);
        match result {
            Ok(produced) => {
                partition.base_offset = produced.queue_offset as i64;
                partition.log_start_offset = state
                    .log
                    .queue_offsets(&to_weir(topics[t].name.0.as_str()), index as u32)
                    .min as i64;
            }
            Err(e) => {
                let (code, message) = errors::of(&e);
                partition.error_code = code;
                partition.base_offset = -1;
                partition.log_start_offset = -1;
                partition.error_message = Some(StrBytes::from_string(message));
            }
        }
        topics[t].partition_responses.push(partition);
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(topics))
}

/// Stores one partition's record batch.
async fn produce_partition(
    state: &BrokerState,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> Result<Produced, RequestError> {
    let queue_id = u32::try_from(partition).map_err(|_| {
        RequestError::new(
            ErrorCode::QueueNotFound,
            format!("partition {partition} does not exist"),
        )
    })?;
    if records.is_empty() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "a produce request needs a record batch",
        ));
    }
    let limit = state.config.max_message_size;
    if records.len() as u64 > limit {
        return Err(RequestError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "the record batch is {} bytes; the most is {limit} (max_message_size)",
                records.len()
            ),
        ));
    }
    let mut payload = BytesMut::new();
    batch::wrap_batch(topic, &records, &mut payload)
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    let entry = Entry::parse(&payload)
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    if entry.len() != payload.len() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "a partition's records must be exactly one record batch (magic 2)",
        ));
    }
    if entry.is_transactional() || entry.is_control() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "transactional batches need the transaction APIs, which this listener does not offer",
        ));
    }
    // Weir's own producers flag batches holding delayed records; a Kafka producer cannot.
    batch::mark_delayed(&mut payload)
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    ops::produce::produce(state, topic, queue_id, payload).await
}

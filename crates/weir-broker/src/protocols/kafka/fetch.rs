//! `Fetch`: stored batches sent back as Kafka record batches, with long polls.
//!
//! A partition's read is the store's read of its queue ([`crate::core::message_log`]): whole
//! batches, the first one holding the fetch offset (a fetch in the middle of a batch returns
//! that batch; the client skips the records before its offset), at least one batch even when
//! it is larger than the fetch's byte limits. Each entry loses its Weir envelope on the way
//! out: one copy per batch, none per record.
//!
//! When less than `min_bytes` is found and `max_wait_ms` allows, the fetch waits until a
//! message is dispatched to any of its partitions (or the wait, capped by
//! `long_poll_max_ms`, ends) and reads again; it never spins. A request that arrives behind
//! it on the same connection ends the wait at once (its answer has to follow this one): the
//! fetch answers with what it has. Fetch sessions (KIP-227) are not kept: every answer says
//! session 0, and clients send full fetches.
//!
//! A partition whose current leader epoch, as the client gives it, is not the broker's gets
//! `FENCED_LEADER_EPOCH` (older: the client refreshes its metadata) or `UNKNOWN_LEADER_EPOCH`
//! (newer: this broker has not caught up) and no records (see [`super::epochs`]).

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use weir_proto::batch::Entries;
use weir_store::TagFilter;

use crate::error::RequestError;
use crate::metrics_catalog::{BYTES_OUT_TOTAL, MESSAGES_OUT_TOTAL};
use crate::ops::pull::WaiterGauge;
use crate::protocols::kafka::names::{to_kafka, to_weir};
use crate::protocols::kafka::{epochs, errors};
use crate::state::BrokerState;

/// One partition to read: (topic index in the answer, Weir topic, queue, offset, byte limit,
/// the leader epoch the client believes current).
struct Wanted {
    topic: usize,
    weir_topic: String,
    partition: i32,
    offset: i64,
    max_bytes: u32,
    leader_epoch: i32,
}

/// Serves `Fetch`; `queued` is notified when a later request of the connection starts.
pub(crate) async fn fetch(
    state: &BrokerState,
    request: FetchRequest,
    queued: &Notify,
) -> FetchResponse {
    let mut answer: Vec<FetchableTopicResponse> = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    for topic in request.topics {
        let weir_topic = to_weir(topic.topic.0.as_str()).into_owned();
        let index = answer.len();
        for partition in &topic.partitions {
            wanted.push(Wanted {
                topic: index,
                weir_topic: weir_topic.clone(),
                partition: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: partition.partition_max_bytes.max(0) as u32,
                leader_epoch: partition.current_leader_epoch,
            });
        }
        answer.push(FetchableTopicResponse::default().with_topic(topic.topic));
    }
    let wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms)
            .unwrap_or(0)
            .min(state.config.long_poll_max_ms),
    );
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0).max(1);
    // Set once a request waits behind this one: answer with what there is. The future hears
    // every request started after it is made (made once: none slips between two reads).
    let mut overtaken = false;
    let mut behind = std::pin::pin!(queued.notified());
    let max_bytes = match request.max_bytes {
        n if n > 0 => n as usize,
        _ => usize::MAX,
    }
    .min(state.config.max_pull_bytes() as usize);
    loop {
        // Registered before the reads, so a message dispatched after them still wakes us.
        let waiters: Vec<Arc<Notify>> = if wait.is_zero() {
            Vec::new()
        } else {
            wanted
                .iter()
                .map(|w| {
                    state
                        .long_poll
                        .waiter(&w.weir_topic, u32::try_from(w.partition).unwrap_or(0))
                })
                .collect()
        };
        let mut notified: Vec<_> = waiters.iter().map(|n| Box::pin(n.notified())).collect();
        for n in &mut notified {
            n.as_mut().enable();
        }
        let (partitions, found) = read_all(state, &wanted, max_bytes);
        // A client in another leader epoch hears so at once (Kafka answers errors at once).
        let fenced_any = partitions.iter().any(|p| {
            p.error_code == ResponseError::FencedLeaderEpoch.code()
                || p.error_code == ResponseError::UnknownLeaderEpoch.code()
        });
        let give_up = found >= min_bytes
            || fenced_any
            || notified.is_empty()
            || overtaken
            || state.is_shutting_down()
            || Instant::now() >= deadline;
        if give_up {
            for (w, data) in wanted.iter().zip(partitions) {
                answer[w.topic].partitions.push(data);
            }
            return FetchResponse::default().with_responses(answer);
        }
        let _waiting = WaiterGauge::enter();
        let any = std::future::poll_fn(|cx| {
            if behind.as_mut().poll(cx).is_ready() {
                overtaken = true;
                Poll::Ready(())
            } else if notified.iter_mut().any(|n| n.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let _ = tokio::time::timeout_at(deadline, any).await;
    }
}

/// Reads every partition once; answers each partition's data and the record bytes found.
fn read_all(
    state: &BrokerState,
    wanted: &[Wanted],
    max_bytes: usize,
) -> (Vec<PartitionData>, usize) {
    let mut total = 0usize;
    let epoch = epochs::current(state);
    let partitions = wanted
        .iter()
        .map(|w| {
            if let Err(e) = epochs::check_current(w.leader_epoch, epoch) {
                return fenced(w, e);
            }
            // The response's limit is soft for the first partition with data (at least one
            // batch is always returned), hard for the rest.
            let room = if total == 0 {
                w.max_bytes
            } else {
                u32::try_from(max_bytes.saturating_sub(total))
                    .unwrap_or(u32::MAX)
                    .min(w.max_bytes)
            };
            let data = if total > 0 && room == 0 {
                partition_without_records(state, w)
            } else {
                read_partition(state, w, room)
            };
            total += data.records.as_ref().map_or(0, Bytes::len);
            data
        })
        .collect();
    (partitions, total)
}

/// One partition's answer: its records from the fetch offset, or an error code.
fn read_partition(state: &BrokerState, w: &Wanted, max_bytes: u32) -> PartitionData {
    let mut data = PartitionData::default()
        .with_partition_index(w.partition)
        .with_aborted_transactions(Some(Vec::new()));
    let read = check(state, w).and_then(|queue_id| {
        let offset = u64::try_from(w.offset).map_err(|_| {
            RequestError::new(
                weir_proto::ErrorCode::OffsetOutOfRange,
                format!("offset {} is negative", w.offset),
            )
        })?;
        state
            .log
            .read(
                &w.weir_topic,
                queue_id,
                offset,
                u32::MAX,
                max_bytes.max(1),
                &TagFilter::All,
            )
            .map_err(RequestError::from)
    });
    match read {
        Ok(read) => {
            data.high_watermark = read.max_offset as i64;
            data.last_stable_offset = read.max_offset as i64;
            data.log_start_offset = read.min_offset as i64;
            if read.count > 0 {
                metrics::counter!(MESSAGES_OUT_TOTAL, "topic" => w.weir_topic.clone())
                    .increment(u64::from(read.count));
                metrics::counter!(BYTES_OUT_TOTAL, "topic" => w.weir_topic.clone())
                    .increment(read.records.len() as u64);
                state
                    .traffic
                    .consumed(u64::from(read.count), read.records.len() as u64);
            }
            data.records = Some(batches_of(&read.records));
        }
        Err(e) => {
            data.error_code = errors::kafka_code(e.code);
            let offsets = state
                .log
                .queue_offsets(&w.weir_topic, u32::try_from(w.partition).unwrap_or(0));
            data.high_watermark = offsets.max as i64;
            data.last_stable_offset = offsets.max as i64;
            data.log_start_offset = offsets.min as i64;
        }
    }
    data
}

/// A partition the client asked for in another leader epoch than the broker's: the error only.
fn fenced(w: &Wanted, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(w.partition)
        .with_error_code(error.code())
        .with_high_watermark(-1)
        .with_records(Some(Bytes::new()))
}

/// A partition left out of this answer because the response is full: its offsets only.
fn partition_without_records(state: &BrokerState, w: &Wanted) -> PartitionData {
    let mut data = PartitionData::default()
        .with_partition_index(w.partition)
        .with_aborted_transactions(Some(Vec::new()))
        .with_records(Some(Bytes::new()));
    match check(state, w) {
        Ok(queue_id) => {
            let offsets = state.log.queue_offsets(&w.weir_topic, queue_id);
            data.high_watermark = offsets.max as i64;
            data.last_stable_offset = offsets.max as i64;
            data.log_start_offset = offsets.min as i64;
        }
        Err(e) => data.error_code = errors::kafka_code(e.code),
    }
    data
}

/// The queue a partition names, if the topic is one Kafka clients may read and has it.
fn check(state: &BrokerState, w: &Wanted) -> Result<u32, RequestError> {
    let queue_id = u32::try_from(w.partition).ok();
    match (to_kafka(&w.weir_topic), queue_id) {
        (Some(_), Some(queue_id)) => {
            state.topics.check_queue(&w.weir_topic, queue_id)?;
            Ok(queue_id)
        }
        _ => Err(RequestError::new(
            weir_proto::ErrorCode::TopicNotFound,
            format!("no partition {} of {:?}", w.partition, w.weir_topic),
        )),
    }
}

/// The Kafka record batches inside stored entries, laid end to end (envelopes dropped).
fn batches_of(entries: &Bytes) -> Bytes {
    if entries.is_empty() {
        return Bytes::new();
    }
    let mut out = BytesMut::with_capacity(entries.len());
    for entry in Entries::new(entries) {
        match entry {
            Ok(entry) => out.extend_from_slice(entry.batch()),
            Err(e) => {
                // The store checked every entry it returned: this is a bug, not bad data.
                tracing::error!(error = %e, "a stored entry does not parse; fetch answer cut short");
                break;
            }
        }
    }
    out.freeze()
}

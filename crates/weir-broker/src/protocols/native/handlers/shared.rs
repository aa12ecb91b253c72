//! Shared groups (Receive, Ack, Nack, ChangeInvisibility) and dead letters (DeadLetter). The
//! state they act on is `shared_group.rs`.

use std::collections::HashSet;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use weir_proto::batch::Entries;
use weir_proto::{ErrorCode, pb};
use weir_store::TagFilter;

use crate::error::RequestError;
use crate::features::groups::shared::{Nacked, Receipt, ReceiveLimits, Reservation};
use crate::protocols::native::handlers::Reply;
use crate::state::BrokerState;

/// Messages per receive when the request says 0.
const DEFAULT_MAX_MESSAGES: u32 = 32;
/// Most messages one receive returns.
const MAX_MESSAGES: u32 = 1024;
/// Invisibility when the request says 0.
const DEFAULT_INVISIBLE_MS: u32 = 30_000;

/// Takes up to `max_messages` visible messages of a topic for a shared group, hiding each for
/// `invisible_time_ms`; when there are none and `max_wait_ms > 0`, waits (long polling) until
/// a message arrives or an in-flight one becomes visible again.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, topic = %request.topic))]
pub(crate) async fn receive(
    state: &BrokerState,
    request: pb::ReceiveRequest,
) -> Result<Reply, RequestError> {
    weir_proto::validate_group_name(&request.group)?;
    let topic = request.topic.as_str();
    state.topics.queues(topic)?;
    let max = match request.max_messages {
        0 => DEFAULT_MAX_MESSAGES,
        n => n.min(MAX_MESSAGES),
    } as usize;
    let invisible = Duration::from_millis(u64::from(match request.invisible_time_ms {
        0 => DEFAULT_INVISIBLE_MS,
        n => n,
    }));
    let wait =
        Duration::from_millis(u64::from(request.max_wait_ms).min(state.config.long_poll_max_ms));
    let deadline = Instant::now() + wait;
    loop {
        // Registered before reserving, so a message dispatched after it still wakes us.
        let notify = state.shared.waker(topic);
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let reservation = state.shared.reserve(
            &request.group,
            topic,
            state.queues_of(topic),
            ReceiveLimits { max, invisible },
            &|queue_id| state.log.queue_offsets(topic, queue_id),
        );
        for &(queue_id, offset, attempts) in &reservation.dead {
            move_to_dlq(state, &request.group, topic, queue_id, offset, attempts).await;
        }
        let now = Instant::now();
        if !reservation.is_empty() || state.is_shutting_down() || now >= deadline {
            return read_reserved(state, &request.group, topic, reservation);
        }
        let until = reservation
            .next_visible
            .map_or(deadline, |at| deadline.min(Instant::from_std(at)));
        let _ = tokio::time::timeout_at(until, notified).await;
    }
}

/// Reads the reserved messages into one payload (fresh runs with one read each), giving back
/// what does not fit in a frame or cannot be read. The payload holds whole entries, each
/// once; every delivered message is named by its queue and offset.
fn read_reserved(
    state: &BrokerState,
    group: &str,
    topic: &str,
    reservation: Reservation,
) -> Result<Reply, RequestError> {
    let budget = state.config.max_pull_bytes() as usize;
    let mut payload = BytesMut::new();
    // Commit-log offsets of the entries in `payload`.
    let mut sent: HashSet<u64> = HashSet::new();
    let mut entries = Vec::new();
    let mut give_back: Vec<Receipt> = Vec::new();
    let mut first_error = None;
    for (queue_id, first, receipts) in reservation.runs {
        let room = budget.saturating_sub(payload.len());
        if room == 0 || first_error.is_some() {
            give_back.extend(receipts);
            continue;
        }
        match state.log.read(
            topic,
            queue_id,
            first,
            receipts.len() as u32,
            u32::try_from(room).unwrap_or(u32::MAX),
            &TagFilter::All,
        ) {
            Ok(read) => {
                add_entries(&mut payload, &mut sent, &read.records);
                // Every offset below next_offset was read (no filter) unless it was skipped as
                // damaged: those can never be delivered, so they are settled.
                for receipt in receipts {
                    if read
                        .skipped
                        .iter()
                        .any(|r| (r.from..r.to).contains(&receipt.offset))
                    {
                        state.shared.settle(group, topic, queue_id, receipt.offset);
                    } else if receipt.offset < read.next_offset {
                        entries.push(entry(receipt));
                    } else {
                        give_back.push(receipt);
                    }
                }
            }
            Err(e) => {
                give_back.extend(receipts);
                first_error = Some(RequestError::from(e));
            }
        }
    }
    for receipt in reservation.redeliveries {
        let room = budget.saturating_sub(payload.len());
        if room == 0 || first_error.is_some() {
            give_back.push(receipt);
            continue;
        }
        match state.log.read(
            topic,
            receipt.queue_id,
            receipt.offset,
            1,
            u32::try_from(room).unwrap_or(u32::MAX),
            &TagFilter::All,
        ) {
            Ok(read) if read.count >= 1 && holds(&read.records, receipt.offset) => {
                add_entries(&mut payload, &mut sent, &read.records);
                entries.push(entry(receipt));
            }
            Ok(_) | Err(weir_store::StoreError::OffsetOutOfRange { .. }) => {
                // Deleted by retention: nothing left to deliver.
                state
                    .shared
                    .settle(group, topic, receipt.queue_id, receipt.offset);
            }
            Err(e) => {
                give_back.push(receipt);
                first_error = Some(RequestError::from(e));
            }
        }
    }
    state.shared.unreserve(group, &give_back);
    if entries.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    Ok(Reply::with_payload(
        &pb::ReceiveResponse { entries },
        payload.freeze(),
    ))
}

fn entry(receipt: Receipt) -> pb::ReceivedEntry {
    pb::ReceivedEntry {
        attempt: receipt.attempt,
        queue_id: receipt.queue_id,
        queue_offset: receipt.offset,
        receipt: receipt.to_string(),
    }
}

/// Appends the entries of a read to `payload`, each entry once.
fn add_entries(payload: &mut BytesMut, sent: &mut HashSet<u64>, records: &[u8]) {
    for entry in Entries::new(records).flatten() {
        if sent.insert(entry.stamp().commit_log_offset) {
            payload.extend_from_slice(entry.as_bytes());
        }
    }
}

/// Whether one of the entries of a read holds queue offset `offset`.
fn holds(records: &[u8], offset: u64) -> bool {
    Entries::new(records).flatten().any(|e| {
        let base = e.stamp().base_offset;
        base <= offset && offset - base < u64::from(e.record_count())
    })
}

/// Moves a message out of attempts to the dead-letter topic and settles it; on failure it
/// stays hidden and is tried again when it becomes visible.
async fn move_to_dlq(
    state: &BrokerState,
    group: &str,
    topic: &str,
    queue_id: u32,
    offset: u64,
    attempts: u32,
) {
    match state
        .retries
        .dead_letter(group, topic, queue_id, offset, attempts)
        .await
    {
        Ok(_) => state.shared.settle(group, topic, queue_id, offset),
        Err(e)
            if matches!(
                e.code,
                ErrorCode::MessageNotFound
                    | ErrorCode::OffsetOutOfRange
                    | ErrorCode::CorruptMessage
            ) =>
        {
            state.shared.settle(group, topic, queue_id, offset);
        }
        Err(e) => {
            tracing::warn!(group, topic, queue_id, offset, error = %e, "cannot dead-letter a message");
        }
    }
}

/// Acks deliveries by receipt; answers with the receipts not applied.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, count = request.receipts.len()))]
pub(crate) fn ack(state: &BrokerState, request: pb::AckRequest) -> Result<Reply, RequestError> {
    weir_proto::validate_group_name(&request.group)?;
    let rejected = request
        .receipts
        .into_iter()
        .filter(|text| {
            !Receipt::parse(text).is_ok_and(|receipt| state.shared.ack(&request.group, &receipt))
        })
        .collect();
    Ok(Reply::meta(&pb::AckResponse { rejected }))
}

/// Gives deliveries back: each is visible again after its attempt's back-off, or, out of
/// attempts, goes to `%DLQ%<group>`.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, count = request.receipts.len()))]
pub(crate) async fn nack(
    state: &BrokerState,
    request: pb::NackRequest,
) -> Result<Reply, RequestError> {
    weir_proto::validate_group_name(&request.group)?;
    let mut rejected = Vec::new();
    for text in request.receipts {
        let Ok(receipt) = Receipt::parse(&text) else {
            rejected.push(text);
            continue;
        };
        match state.shared.nack(&request.group, &receipt) {
            None => rejected.push(text),
            Some(Nacked::Retry) => {}
            Some(Nacked::Dead { attempts }) => {
                move_to_dlq(
                    state,
                    &request.group,
                    &receipt.topic,
                    receipt.queue_id,
                    receipt.offset,
                    attempts,
                )
                .await;
            }
        }
    }
    Ok(Reply::meta(&pb::AckResponse { rejected }))
}

/// Hides a delivery for `invisible_time_ms` from now (0: visible again at once).
pub(crate) fn change_invisibility(
    state: &BrokerState,
    request: pb::ChangeInvisibilityRequest,
) -> Result<Reply, RequestError> {
    weir_proto::validate_group_name(&request.group)?;
    let receipt = Receipt::parse(&request.receipt)?;
    let invisible = Duration::from_millis(u64::from(request.invisible_time_ms));
    if !state
        .shared
        .change_invisibility(&request.group, &receipt, invisible)
    {
        return Err(RequestError::new(
            ErrorCode::InvalidReceipt,
            format!(
                "delivery {} is over (acked, or redelivered after its invisibility ran out)",
                request.receipt
            ),
        ));
    }
    Ok(Reply::meta(&pb::ChangeInvisibilityResponse {
        receipt: request.receipt,
    }))
}

/// Copies a message to `%DLQ%<group>` (an orderly consumer out of tries).
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, topic = %request.topic, queue = request.queue_id, offset = request.queue_offset))]
pub(crate) async fn dead_letter(
    state: &BrokerState,
    request: pb::DeadLetterRequest,
) -> Result<Reply, RequestError> {
    weir_proto::validate_group_name(&request.group)?;
    let (queue_id, queue_offset) = state
        .retries
        .dead_letter(
            &request.group,
            &request.topic,
            request.queue_id,
            request.queue_offset,
            request.attempts,
        )
        .await?;
    Ok(Reply::meta(&pb::DeadLetterResponse {
        queue_id,
        queue_offset,
    }))
}

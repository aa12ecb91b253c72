//! A consumer group's dead letters (`%DLQ%<group>`) as an administrator sees them: a page of
//! them, and resending one or all. Resending stores a copy in the group's retry topic, where
//! the group consumes it again as a message of its origin topic (the same path as
//! `weir dlq resend`, [`crate::features::retry::send_back`] with `resend`).

use weir_proto::batch::Message;
use weir_proto::{ErrorCode, MessageId, names};

use super::browse::{self, QueuePage};
use crate::error::RequestError;
use crate::features::retry::SendBack;
use crate::state::BrokerState;

/// Most dead letters one "resend all" copies.
pub(crate) const MAX_RESEND_ALL: u32 = 1000;

/// The dead-letter topic of a group.
pub(crate) fn topic(group: &str) -> String {
    names::dlq_topic(group)
}

/// Dead letters of `group` from offset `from`, at most `max`; an empty page when the group has
/// none (no dead-letter topic yet).
pub(crate) fn list(
    state: &BrokerState,
    group: &str,
    from: u64,
    max: u32,
) -> Result<QueuePage, RequestError> {
    let topic = topic(group);
    if state.topics.get(&topic).is_none() {
        return Ok(QueuePage::default());
    }
    browse::range(state, &topic, 0, from, max)
}

/// The number of dead letters of every group: each `%DLQ%` topic's readable messages.
pub(crate) fn count_all(state: &BrokerState) -> u64 {
    state
        .topics
        .list()
        .into_iter()
        .filter(|(name, _)| names::is_dlq_topic(name))
        .map(|(name, config)| {
            (0..config.queues)
                .map(|q| {
                    let o = state.log.queue_offsets(&name, q);
                    o.max - o.min
                })
                .sum::<u64>()
        })
        .sum()
}

/// The dead letter `id` of `group`, checked to be one.
pub(crate) fn get(state: &BrokerState, group: &str, id: &str) -> Result<Message, RequestError> {
    let message = super::lookup::get_message(state, id)?.message()?;
    if message.topic != topic(group) {
        return Err(RequestError::new(
            ErrorCode::MessageNotFound,
            format!(
                "{id} is not a dead letter of group {group:?} (it is in {:?})",
                message.topic
            ),
        ));
    }
    Ok(message)
}

/// Resends the dead letter `id` of `group`; returns the id of the copy.
pub(crate) async fn resend(
    state: &BrokerState,
    group: &str,
    id: &str,
) -> Result<MessageId, RequestError> {
    get(state, group, id)?;
    let sent = state
        .retries
        .send_back(SendBack {
            group: group.to_owned(),
            message_id: id.to_owned(),
            reconsume_times: 0,
            dead_letter: false,
            resend: true,
        })
        .await?;
    Ok(sent.stored_id)
}

/// Resends every dead letter of `group` still stored (at most [`MAX_RESEND_ALL`]); returns
/// the ids of the copies.
pub(crate) async fn resend_all(
    state: &BrokerState,
    group: &str,
) -> Result<Vec<MessageId>, RequestError> {
    let mut copies = Vec::new();
    let mut from = 0;
    while copies.len() < MAX_RESEND_ALL as usize {
        let page = list(state, group, from, MAX_RESEND_ALL - copies.len() as u32)?;
        if page.records.is_empty() {
            break;
        }
        for message in &page.records {
            let id = state
                .identity
                .message_id(message.commit_log_offset, message.index);
            copies.push(resend(state, group, &id.to_string()).await?);
        }
        from = page.next_offset;
    }
    Ok(copies)
}

//! Dead letters: the messages a consumer group failed `max_retries + 1` times, kept by each
//! broker in the group's internal topic `%DLQ%<group>` (one queue), with their original topic,
//! id and failure count in the properties `ORIGIN_TOPIC`, `ORIGIN_MSG_ID`, `RECONSUME_TIMES`.

use bytes::Bytes;
use weir_proto::names::dlq_topic;
use weir_proto::{ApiKey, ErrorCode, MessageId, pb};

use crate::admin::Admin;
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;

/// Most dead letters read per pull.
const PAGE: u32 = 256;

impl Admin {
    /// Up to `max` dead letters of `group`, oldest first, from every broker (none when the
    /// group never dead-lettered a message).
    pub async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<ReceivedMessage>> {
        let topic = dlq_topic(group);
        let route = match self.routes.refresh(&topic).await {
            Ok(route) => route,
            Err(ClientError::Server {
                code: ErrorCode::TopicNotFound,
                ..
            }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for queue in &route.queues {
            let info = self.describe_topic(&topic).await?;
            let Some(bounds) = info.queues.iter().find(|q| q.queue_id == queue.queue_id) else {
                continue;
            };
            let mut offset = bounds.min_offset;
            while offset < bounds.max_offset && found.len() < max {
                let page = self.pull(&topic, queue.queue_id, offset, PAGE).await?;
                if page.next_offset <= offset {
                    break;
                }
                offset = page.next_offset;
                found.extend(page.messages);
            }
        }
        found.truncate(max);
        Ok(found)
    }

    /// The dead letter `id` of `group` (its id in `%DLQ%<group>`, as listed).
    pub async fn dead_letter(&self, group: &str, id: &MessageId) -> Result<ReceivedMessage> {
        let message = self.get_message(id).await?;
        if message.topic != dlq_topic(group) {
            return Err(ClientError::InvalidArgument(format!(
                "{id} is not a dead letter of group '{group}' (it is in '{}')",
                message.topic
            )));
        }
        Ok(message)
    }

    /// Sends dead letter `id` back to `group`: the broker stores a copy in `%RETRY%<group>`
    /// with its failure count reset, so the group's consumers get it again now. Returns the
    /// copy's id.
    pub async fn resend_dead_letter(&self, group: &str, id: &MessageId) -> Result<MessageId> {
        self.dead_letter(group, id).await?;
        let request = pb::SendBackRequest {
            group: group.to_owned(),
            message_id: id.to_string(),
            resend: true,
            ..pb::SendBackRequest::default()
        };
        let broker = self
            .routes
            .addr_of_group(&id.broker, &dlq_topic(group))
            .await?;
        let conn = self.routes.pool().get(&broker).await?;
        let (response, _) = conn
            .call::<_, pb::SendBackResponse>(ApiKey::SendBack, &request, Bytes::new(), None)
            .await?;
        response
            .stored_id
            .parse()
            .map_err(|e| ClientError::Protocol(format!("SendBack answered a bad id: {e}")))
    }
}

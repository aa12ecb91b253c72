//! Pull: read records from one queue, holding the request (long polling) while there are none.

use weir_proto::pb;

use crate::error::RequestError;
use crate::ops::pull::{self, PullRequest};
use crate::protocols::native::handlers::Reply;
use crate::state::BrokerState;

/// Decodes a pull, runs it ([`pull::pull`]) and answers with the records as the payload.
pub(crate) async fn pull(
    state: &BrokerState,
    request: pb::PullRequest,
) -> Result<Reply, RequestError> {
    let pulled = pull::pull(
        state,
        PullRequest {
            topic: &request.topic,
            queue_id: request.queue_id,
            group: &request.group,
            member_id: &request.member_id,
            offset: request.offset,
            tag_expression: &request.tag_expression,
            max_messages: request.max_messages,
            max_bytes: request.max_bytes,
            max_wait_ms: request.max_wait_ms,
        },
    )
    .await?;
    let status = if pulled.count > 0 {
        pb::PullStatus::Found
    } else {
        pb::PullStatus::NoNewMessages
    };
    let response = pb::PullResponse {
        status: status as i32,
        next_offset: pulled.next_offset,
        min_offset: pulled.min_offset,
        max_offset: pulled.max_offset,
        count: pulled.count,
        skipped: pulled
            .skipped
            .iter()
            .map(|r| pb::SkippedRange {
                from_offset: r.from,
                to_offset: r.to,
                reason: r.reason.as_str().to_owned(),
            })
            .collect(),
    };
    Ok(Reply::with_payload(&response, pulled.records))
}

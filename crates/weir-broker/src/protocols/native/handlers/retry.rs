//! SendBack: a consumer hands a failed message back for a retry or a dead letter.

use weir_proto::pb;

use crate::error::RequestError;
use crate::features::retry::SendBack;
use crate::protocols::native::handlers::Reply;
use crate::state::BrokerState;

/// Decodes a send-back, runs it ([`crate::features::retry::Retries::send_back`]) and answers
/// where the copy went.
pub(crate) async fn send_back(
    state: &BrokerState,
    request: pb::SendBackRequest,
) -> Result<Reply, RequestError> {
    let sent = state
        .retries
        .send_back(SendBack {
            group: request.group,
            message_id: request.message_id,
            reconsume_times: request.reconsume_times,
            dead_letter: request.dead_letter,
            resend: request.resend,
        })
        .await?;
    Ok(Reply::meta(&pb::SendBackResponse {
        failures: sent.failures,
        dead_lettered: sent.dead_lettered,
        deliver_at: sent.deliver_at,
        stored_id: sent.stored_id.to_string(),
    }))
}

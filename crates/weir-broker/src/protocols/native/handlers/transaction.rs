//! Transactions and idempotent producers: EndTransaction, RegisterProducer, InitProducerId.

use weir_proto::transaction::Decision;
use weir_proto::{ErrorCode, pb};

use crate::error::RequestError;
use crate::protocols::native::handlers::{Reply, RequestContext};
use crate::state::BrokerState;

/// Commits or rolls back the transaction of a half message; an unknown decision changes
/// nothing (the broker will check back later).
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.producer_group, tx = %request.transaction_id, half = request.half_offset))]
pub(crate) async fn end(
    state: &BrokerState,
    request: pb::EndTransactionRequest,
) -> Result<Reply, RequestError> {
    let decision = match pb::TransactionDecision::try_from(request.decision) {
        Ok(pb::TransactionDecision::Commit) => Decision::Commit,
        Ok(pb::TransactionDecision::Rollback) => Decision::Rollback,
        Ok(pb::TransactionDecision::Unknown) => {
            return Ok(Reply::meta(&pb::EndTransactionResponse::default()));
        }
        Err(_) => {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                format!("unknown transaction decision {}", request.decision),
            ));
        }
    };
    let committed = state
        .transactions
        .end(request.half_offset, &request.transaction_id, decision)
        .await?;
    let response = committed.map_or_else(pb::EndTransactionResponse::default, |c| {
        pb::EndTransactionResponse {
            topic: c.topic,
            queue_id: c.queue_id,
            queue_offset: c.stored.queue_offset,
            commit_log_offset: c.stored.commit_log_offset,
        }
    });
    Ok(Reply::meta(&response))
}

/// Records the connection as a live member of a producer group, to be checked back.
pub(crate) fn register_producer(
    state: &BrokerState,
    ctx: RequestContext,
    request: pb::RegisterProducerRequest,
) -> Result<Reply, RequestError> {
    if request.producer_group.is_empty() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "a producer group name is required",
        ));
    }
    state
        .transactions
        .register(&request.producer_group, ctx.connection, &request.client_id);
    Ok(Reply::meta(&pb::Empty {}))
}

/// Hands out a producer id never used before.
pub(crate) fn init_producer_id(state: &BrokerState) -> Result<Reply, RequestError> {
    let producer_id = state.idempotence.new_producer_id()?;
    tracing::debug!(producer_id, "producer id allocated");
    Ok(Reply::meta(&pb::InitProducerIdResponse { producer_id }))
}

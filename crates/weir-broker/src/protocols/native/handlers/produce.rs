//! Produce: append a producer's batch (one entry) to one queue.

use bytes::BytesMut;
use weir_proto::pb;

use crate::error::RequestError;
use crate::ops::produce;
use crate::protocols::native::handlers::Reply;
use crate::state::BrokerState;

/// Decodes a produce, runs it ([`produce::produce`]) and answers with the batch's position
/// and the broker group's name (for message ids).
pub(crate) async fn produce(
    state: &BrokerState,
    request: pb::ProduceRequest,
    payload: BytesMut,
) -> Result<Reply, RequestError> {
    let produced = produce::produce(state, &request.topic, request.queue_id, payload).await?;
    Ok(Reply::meta(&pb::ProduceResponse {
        queue_offset: produced.queue_offset,
        commit_log_offset: produced.commit_log_offset,
        count: produced.count,
        store_timestamp: produced.store_timestamp,
        broker_name: state.identity.broker_name.to_string(),
        record_offsets: produced.record_offsets,
        record_queue_offsets: produced.record_queue_offsets,
        record_indexes: produced.record_indexes,
    }))
}

//! From a request frame to its handler: check the api key and version, decode the body, call
//! the handler; count the request and time it.

use std::time::Instant;

use weir_proto::{ApiKey, ErrorCode, Frame};

use crate::error::RequestError;
use crate::metrics_catalog::{REQUEST_DURATION_SECONDS, REQUESTS_TOTAL};
use crate::protocols::native::handlers::{
    Reply, RequestContext, group, lookup, produce, pull, replicas, retry, route, shared, topic,
    transaction,
};
use crate::state::BrokerState;

/// The only body schema version spoken today.
const API_VERSION: u16 = 0;

/// Answers one request frame, recording it in `weir_requests_total` and
/// `weir_request_duration_seconds`.
pub(crate) async fn dispatch(
    state: &BrokerState,
    ctx: RequestContext,
    frame: Frame,
) -> Result<Reply, RequestError> {
    let started = Instant::now();
    let api = ApiKey::from_u16(frame.header.api_key).map_or("unknown", ApiKey::name);
    let result = handle(state, ctx, frame).await;
    let code = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.name(),
    };
    metrics::counter!(REQUESTS_TOTAL, "api" => api, "code" => code).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "api" => api).record(started.elapsed());
    result
}

/// Checks the api key and version, decodes the body and calls the handler.
async fn handle(
    state: &BrokerState,
    ctx: RequestContext,
    frame: Frame,
) -> Result<Reply, RequestError> {
    let key = api_of(&frame.header)?;
    let meta = &frame.meta;
    if !matches!(
        key,
        ApiKey::GetRoute | ApiKey::RegisterBroker | ApiKey::GetCluster
    ) {
        // In a broker group only the leader serves clients; a follower names it.
        state.log.check_leader()?;
    }
    match key {
        ApiKey::Produce => produce::produce(state, decode(meta)?, frame.payload).await,
        ApiKey::Pull => pull::pull(state, decode(meta)?).await,
        ApiKey::GetRoute => route::get_route(state, decode(meta)?),
        ApiKey::RegisterBroker => route::register_broker(state, decode(meta)?),
        ApiKey::CreateTopic => topic::create(state, decode(meta)?).await,
        ApiKey::DeleteTopic => topic::delete(state, decode(meta)?).await,
        ApiKey::ListTopics => topic::list(state),
        ApiKey::DescribeTopic => topic::describe(state, decode(meta)?),
        ApiKey::AddQueues => topic::add_queues(state, decode(meta)?).await,
        ApiKey::GroupHeartbeat => group::heartbeat(state, ctx, decode(meta)?),
        ApiKey::LeaveGroup => group::leave(state, decode(meta)?),
        ApiKey::CommitOffsets => group::commit(state, decode(meta)?).await,
        ApiKey::FetchOffset => group::fetch(state, decode(meta)?),
        ApiKey::ListGroups => group::list(state),
        ApiKey::DescribeGroup => group::describe(state, decode(meta)?),
        ApiKey::ResetOffsets => group::reset(state, decode(meta)?),
        ApiKey::GetMessage => lookup::get_message(state, decode(meta)?),
        ApiKey::FindByKey => lookup::find_by_key(state, decode(meta)?),
        ApiKey::OffsetForTime => lookup::offset_for_time(state, decode(meta)?),
        ApiKey::SendBack => retry::send_back(state, decode(meta)?).await,
        ApiKey::Receive => shared::receive(state, decode(meta)?).await,
        ApiKey::Ack => shared::ack(state, decode(meta)?),
        ApiKey::Nack => shared::nack(state, decode(meta)?).await,
        ApiKey::ChangeInvisibility => shared::change_invisibility(state, decode(meta)?),
        ApiKey::DeadLetter => shared::dead_letter(state, decode(meta)?).await,
        ApiKey::EndTransaction => transaction::end(state, decode(meta)?).await,
        ApiKey::RegisterProducer => transaction::register_producer(state, ctx, decode(meta)?),
        ApiKey::CheckTransaction => Err(RequestError::new(
            ErrorCode::UnsupportedApi,
            "check_transaction is sent by the broker to clients, not to the broker",
        )),
        ApiKey::InitProducerId => transaction::init_producer_id(state),
        ApiKey::GetCluster => route::get_cluster(state),
        ApiKey::ChangeReplicas => replicas::change(state, decode(meta)?).await,
    }
}

/// The request's api, or `unsupported_api` / `unsupported_version` (every native listener,
/// broker or name server, speaks the same versions).
pub(crate) fn api_of(header: &weir_proto::Header) -> Result<ApiKey, RequestError> {
    let Some(key) = ApiKey::from_u16(header.api_key) else {
        return Err(RequestError::new(
            ErrorCode::UnsupportedApi,
            format!("unknown api key {}", header.api_key),
        ));
    };
    if header.api_version != API_VERSION {
        return Err(RequestError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "{} version {} is not supported (only {API_VERSION})",
                key.name(),
                header.api_version
            ),
        ));
    }
    Ok(key)
}

/// Decodes a request body, or answers `malformed_request`.
pub(crate) fn decode<M: prost::Message + Default>(meta: &bytes::Bytes) -> Result<M, RequestError> {
    M::decode(meta.as_ref()).map_err(|e| {
        RequestError::new(
            ErrorCode::MalformedRequest,
            format!("request body does not decode: {e}"),
        )
    })
}

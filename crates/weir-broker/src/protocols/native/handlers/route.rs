//! The name-server role's requests: routes and broker registrations.

use weir_proto::pb;

use crate::error::RequestError;
use crate::protocols::native::handlers::Reply;
use crate::protocols::native::registration::from_request;
use crate::state::BrokerState;

/// The route of a topic over the live brokers serving it.
pub(crate) fn get_route(
    state: &BrokerState,
    request: pb::GetRouteRequest,
) -> Result<Reply, RequestError> {
    let queues = state.name_server.route(&request.topic)?;
    Ok(Reply::meta(&pb::GetRouteResponse {
        topic: request.topic,
        queues: queues
            .into_iter()
            .map(|q| pb::QueueRoute {
                queue_id: q.queue_id,
                broker_name: q.broker_name,
                broker_addr: q.broker_addr,
            })
            .collect(),
    }))
}

/// Records a broker's registration.
#[tracing::instrument(level = "debug", skip_all, fields(broker = %request.broker_name, addr = %request.broker_addr))]
pub(crate) fn register_broker(
    state: &BrokerState,
    request: pb::RegisterBrokerRequest,
) -> Result<Reply, RequestError> {
    state.name_server.register(from_request(request))?;
    Ok(Reply::meta(&pb::RegisterBrokerResponse {
        heartbeat_interval_ms: u32::try_from(state.config.broker_heartbeat_interval_ms)
            .unwrap_or(u32::MAX),
    }))
}

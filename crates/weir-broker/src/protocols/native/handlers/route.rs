//! The name-server role's requests: routes, broker registrations and the cluster's status.

use weir_proto::pb;

use crate::error::RequestError;
use crate::protocols::native::handlers::Reply;
use crate::protocols::native::registration::from_request;
use crate::routing::name_server::{GroupView, NameServer, ReplicaView};
use crate::state::BrokerState;

/// The route of a topic over the live brokers serving it.
pub(crate) fn get_route(
    state: &BrokerState,
    request: pb::GetRouteRequest,
) -> Result<Reply, RequestError> {
    route_of(&state.name_server, request)
}

/// Records a broker's registration.
pub(crate) fn register_broker(
    state: &BrokerState,
    request: pb::RegisterBrokerRequest,
) -> Result<Reply, RequestError> {
    register(
        &state.name_server,
        state.config.broker_heartbeat_interval_ms,
        request,
    )
}

/// Every broker group and replica this node's name-server role knows.
pub(crate) fn get_cluster(state: &BrokerState) -> Result<Reply, RequestError> {
    Ok(cluster_of(&state.name_server))
}

/// The route of a topic from `name_server`: each queue's group leader, each group's replicas.
pub(crate) fn route_of(
    name_server: &NameServer,
    request: pb::GetRouteRequest,
) -> Result<Reply, RequestError> {
    let route = name_server.route(&request.topic)?;
    Ok(Reply::meta(&pb::GetRouteResponse {
        topic: request.topic,
        queues: route
            .queues
            .into_iter()
            .map(|q| pb::QueueRoute {
                queue_id: q.queue_id,
                broker_name: q.broker_name,
                broker_addr: q.broker_addr,
            })
            .collect(),
        groups: route
            .groups
            .into_iter()
            .map(|g| pb::BrokerGroupRoute {
                broker_name: g.broker_name,
                leader_addr: g.leader_addr,
                leader_known: g.leader_known,
                replicas: g.replicas.into_iter().map(replica_info).collect(),
            })
            .collect(),
    }))
}

/// Records a registration in `name_server`; the answer tells the heartbeat interval.
#[tracing::instrument(level = "debug", skip_all, fields(broker = %request.broker_name, addr = %request.broker_addr))]
pub(crate) fn register(
    name_server: &NameServer,
    heartbeat_interval_ms: u64,
    request: pb::RegisterBrokerRequest,
) -> Result<Reply, RequestError> {
    name_server.register(from_request(request))?;
    Ok(Reply::meta(&pb::RegisterBrokerResponse {
        heartbeat_interval_ms: u32::try_from(heartbeat_interval_ms).unwrap_or(u32::MAX),
    }))
}

/// Every live group and replica in `name_server`.
pub(crate) fn cluster_of(name_server: &NameServer) -> Reply {
    Reply::meta(&to_cluster_response(name_server.cluster()))
}

/// The cluster's groups as the native protocol carries them.
pub(crate) fn to_cluster_response(groups: Vec<GroupView>) -> pb::GetClusterResponse {
    pb::GetClusterResponse {
        groups: groups
            .into_iter()
            .map(|g| pb::ClusterGroup {
                cluster: g.cluster,
                broker_name: g.broker_name,
                replicas: g.replicas.into_iter().map(replica_info).collect(),
                topics: g
                    .topics
                    .into_iter()
                    .map(|(name, queue_count)| pb::TopicRegistration { name, queue_count })
                    .collect(),
            })
            .collect(),
    }
}

fn replica_info(r: ReplicaView) -> pb::ReplicaInfo {
    pb::ReplicaInfo {
        node_id: r.node_id,
        broker_addr: r.addr,
        role: r.role.to_owned(),
        term: r.term,
        commit_index: r.commit_index,
        last_log_index: r.last_log_index,
        applied_index: r.applied_index,
        http_addr: r.http_addr.unwrap_or_default(),
        kafka_addr: r.kafka_addr.unwrap_or_default(),
        last_seen_ms: r.last_seen_ms,
        leader_id: r.leader_id.unwrap_or(0),
        leader_id_known: r.leader_id.is_some(),
    }
}

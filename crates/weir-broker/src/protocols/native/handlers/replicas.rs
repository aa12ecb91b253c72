//! `ChangeReplicas`: a broker group's leader adds or removes a replica.

use weir_proto::pb;
use weir_proto::pb::change_replicas_request::Action;

use crate::core::membership::MembershipView;
use crate::error::RequestError;
use crate::ops;
use crate::protocols::native::handlers::Reply;
use crate::state::BrokerState;

/// Adds or removes the replica the request names.
pub(crate) async fn change(
    state: &BrokerState,
    request: pb::ChangeReplicasRequest,
) -> Result<Reply, RequestError> {
    let view = match request.action() {
        Action::Add => ops::replicas::add(state, request.node_id, request.raft_addr).await?,
        Action::Remove => ops::replicas::remove(state, request.node_id).await?,
    };
    Ok(Reply::meta(&to_response(view)))
}

fn to_response(view: MembershipView) -> pb::ChangeReplicasResponse {
    pb::ChangeReplicasResponse {
        voters: view.voters,
        learners: view.learners,
        done: view.done,
        matched_index: view.matched_index,
        leader_index: view.leader_index,
    }
}

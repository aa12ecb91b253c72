//! Adding and removing replicas of this broker group, for the native `ChangeReplicas` request
//! and the HTTP admin API. Only the group's leader changes its membership.

use weir_proto::ErrorCode;

use crate::core::membership::MembershipView;
use crate::error::RequestError;
use crate::state::BrokerState;

/// Adds `node_id` (its Raft listener at `raft_addr`) as a replica; see
/// [`crate::core::membership::Membership::add_replica`].
pub(crate) async fn add(
    state: &BrokerState,
    node_id: u64,
    raft_addr: String,
) -> Result<MembershipView, RequestError> {
    if node_id == 0 {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "node ids start at 1",
        ));
    }
    Ok(membership(state)?.add_replica(node_id, raft_addr).await?)
}

/// Removes `node_id` from the group.
pub(crate) async fn remove(
    state: &BrokerState,
    node_id: u64,
) -> Result<MembershipView, RequestError> {
    Ok(membership(state)?.remove_replica(node_id).await?)
}

fn membership(
    state: &BrokerState,
) -> Result<&dyn crate::core::membership::Membership, RequestError> {
    state.membership.as_deref().ok_or_else(|| {
        RequestError::new(
            ErrorCode::InvalidArgument,
            "this broker is standalone (node_id = 0): it has no replicas to change",
        )
    })
}

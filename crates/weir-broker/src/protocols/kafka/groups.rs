//! Placeholder until the classic group coordinator lands: every group API answers
//! COORDINATOR_NOT_AVAILABLE.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;

use crate::state::BrokerState;

const NA: i16 = ResponseError::CoordinatorNotAvailable.code();

pub(crate) async fn join_group(
    _: &Arc<BrokerState>,
    _: JoinGroupRequest,
    _: i16,
    _: &str,
    _: &str,
) -> JoinGroupResponse {
    JoinGroupResponse::default().with_error_code(NA)
}
pub(crate) async fn sync_group(
    _: &Arc<BrokerState>,
    _: SyncGroupRequest,
    _: i16,
) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(NA)
}
pub(crate) async fn heartbeat(
    _: &Arc<BrokerState>,
    _: HeartbeatRequest,
    _: i16,
) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(NA)
}
pub(crate) async fn leave_group(
    _: &Arc<BrokerState>,
    _: LeaveGroupRequest,
    _: i16,
) -> LeaveGroupResponse {
    LeaveGroupResponse::default().with_error_code(NA)
}
pub(crate) async fn offset_commit(
    _: &Arc<BrokerState>,
    _: OffsetCommitRequest,
    _: i16,
) -> OffsetCommitResponse {
    OffsetCommitResponse::default()
}
pub(crate) async fn offset_fetch(
    _: &Arc<BrokerState>,
    _: OffsetFetchRequest,
    _: i16,
) -> OffsetFetchResponse {
    OffsetFetchResponse::default().with_error_code(NA)
}
pub(crate) async fn list_groups(
    _: &Arc<BrokerState>,
    _: ListGroupsRequest,
    _: i16,
) -> ListGroupsResponse {
    ListGroupsResponse::default()
}
pub(crate) async fn describe_groups(
    _: &Arc<BrokerState>,
    _: DescribeGroupsRequest,
    _: i16,
) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default()
}

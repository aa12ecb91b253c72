//! Consumer groups: heartbeats, leaving, offsets, listing, describing, resetting.

use weir_proto::{ErrorCode, pb};

use crate::core::state_change::StateChange;
use crate::error::RequestError;
use crate::features::groups::coordinator::{Heartbeat, Mode, QueueKey};
use crate::ops;
use crate::ops::group::{GroupMode, ResetTarget};
use crate::protocols::native::handlers::{Reply, RequestContext, require};
use crate::state::BrokerState;

fn queue_ref((topic, queue_id): QueueKey) -> pb::QueueRef {
    pb::QueueRef { topic, queue_id }
}

/// A member's heartbeat: records it and answers with the queues the member owns now.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, member = %request.member_id))]
pub(crate) fn heartbeat(
    state: &BrokerState,
    ctx: RequestContext,
    request: pb::GroupHeartbeatRequest,
) -> Result<Reply, RequestError> {
    weir_proto::validate_group_name(&request.group)?;
    require("member_id", &request.member_id)?;
    if state.classic_groups.has_members(&request.group) {
        return Err(RequestError::new(
            ErrorCode::GroupInUseByOtherProtocol,
            format!(
                "group {:?} is in use by Kafka consumers; a group name is used by one protocol \
                 at a time",
                request.group
            ),
        ));
    }
    let mode = match pb::ConsumeMode::try_from(request.mode) {
        Ok(pb::ConsumeMode::Clustering) => Mode::Clustering,
        Ok(pb::ConsumeMode::Broadcast) => Mode::Broadcast,
        Ok(pb::ConsumeMode::Shared) => {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                "shared groups do not heartbeat: their members use Receive and Ack",
            ));
        }
        Err(_) => {
            return Err(RequestError::new(
                ErrorCode::MalformedRequest,
                format!("unknown consume mode {}", request.mode),
            ));
        }
    };
    // A clustering member subscribes to its group's retry topic: create it on demand.
    let retry_topic = weir_proto::names::retry_topic(&request.group);
    if mode == Mode::Clustering && request.topics.contains(&retry_topic) {
        state.topics.ensure_internal(&retry_topic)?;
    }
    let assignment = state.groups.heartbeat(
        Heartbeat {
            group: request.group,
            member_id: request.member_id,
            mode,
            topics: request.topics.into_iter().collect(),
            held: request
                .held
                .into_iter()
                .map(|q| (q.topic, q.queue_id))
                .collect(),
            connection: ctx.connection,
            client_addr: ctx.peer.to_string(),
        },
        &|topic| state.queues_of(topic),
    );
    Ok(Reply::meta(&pb::GroupHeartbeatResponse {
        assigned: assignment.assigned.into_iter().map(queue_ref).collect(),
        heartbeat_interval_ms: u32::try_from(state.config.group_heartbeat_interval_ms)
            .unwrap_or(u32::MAX),
        generation: assignment.generation,
        session_timeout_ms: u32::try_from(state.config.group_session_timeout_ms)
            .unwrap_or(u32::MAX),
    }))
}

/// A member leaves; its queues go to the others at once.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, member = %request.member_id))]
pub(crate) fn leave(
    state: &BrokerState,
    request: pb::LeaveGroupRequest,
) -> Result<Reply, RequestError> {
    state
        .groups
        .leave(&request.group, &request.member_id, &|topic| {
            state.queues_of(topic)
        });
    Ok(Reply::meta(&pb::Empty {}))
}

/// Stores a group's offsets, skipping queues another live member owns and unknown queues.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, member = %request.member_id, count = request.offsets.len()))]
pub(crate) async fn commit(
    state: &BrokerState,
    request: pb::CommitOffsetsRequest,
) -> Result<Reply, RequestError> {
    weir_proto::validate_group_name(&request.group)?;
    let mut accepted = Vec::with_capacity(request.offsets.len());
    for entry in request.offsets {
        if state
            .topics
            .check_queue(&entry.topic, entry.queue_id)
            .is_err()
        {
            tracing::debug!(topic = %entry.topic, queue = entry.queue_id, "commit for an unknown queue ignored");
            continue;
        }
        if !state.groups.may_commit(
            &request.group,
            &request.member_id,
            &entry.topic,
            entry.queue_id,
        ) {
            tracing::debug!(topic = %entry.topic, queue = entry.queue_id, "commit by a non-owner ignored");
            continue;
        }
        accepted.push((entry.topic, entry.queue_id, entry.offset));
    }
    if state.log.is_replicated() {
        // Through the group's log: a new leader starts from these offsets.
        let change = StateChange::OffsetsCommitted {
            group: request.group,
            offsets: accepted,
        };
        state.log.propose(change).await?;
    } else {
        // On disk before the answer, and before anyone reads them: a crash right after never
        // rewinds the group, and no reader sees an offset a crash could take back.
        let offsets = state.offsets.clone();
        let group = request.group;
        let commits: Vec<_> = accepted
            .into_iter()
            .map(|(topic, queue_id, offset)| (topic, queue_id, offset, String::new()))
            .collect();
        tokio::task::spawn_blocking(move || offsets.set_durably(&group, &commits))
            .await
            .map_err(|e| RequestError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))?;
    }
    Ok(Reply::meta(&pb::Empty {}))
}

/// The committed offset of a queue, or its minimum or maximum when there is none.
pub(crate) fn fetch(
    state: &BrokerState,
    request: pb::FetchOffsetRequest,
) -> Result<Reply, RequestError> {
    state.topics.check_queue(&request.topic, request.queue_id)?;
    let response = match state
        .offsets
        .get(&request.group, &request.topic, request.queue_id)
    {
        Some(offset) => pb::FetchOffsetResponse {
            offset,
            committed: true,
        },
        None => {
            let offsets = state.log.queue_offsets(&request.topic, request.queue_id);
            let offset = match pb::StartFrom::try_from(request.start_from) {
                Ok(pb::StartFrom::Earliest) => offsets.min,
                Ok(pb::StartFrom::Latest) => offsets.max,
                Err(_) => {
                    return Err(RequestError::new(
                        ErrorCode::MalformedRequest,
                        format!("unknown start_from {}", request.start_from),
                    ));
                }
            };
            pb::FetchOffsetResponse {
                offset,
                committed: false,
            }
        }
    };
    Ok(Reply::meta(&response))
}

fn mode(mode: GroupMode) -> i32 {
    let mode = match mode {
        GroupMode::Clustering => pb::ConsumeMode::Clustering,
        GroupMode::Broadcast => pb::ConsumeMode::Broadcast,
        GroupMode::Shared => pb::ConsumeMode::Shared,
    };
    mode as i32
}

/// Groups with live members, committed offsets or shared-group state, with their modes.
pub(crate) fn list(state: &BrokerState) -> Result<Reply, RequestError> {
    let listings: Vec<pb::GroupListing> = ops::group::list(state)
        .into_iter()
        .map(|l| pb::GroupListing {
            group: l.group,
            modes: l.modes.into_iter().map(mode).collect(),
        })
        .collect();
    Ok(Reply::meta(&pb::ListGroupsResponse {
        groups: listings.iter().map(|l| l.group.clone()).collect(),
        listings,
    }))
}

/// A group's modes, members, and per queue its max offset, committed offset (a shared group:
/// its acked low-water mark), lag and owner, and a shared group's progress.
pub(crate) fn describe(
    state: &BrokerState,
    request: pb::DescribeGroupRequest,
) -> Result<Reply, RequestError> {
    let description = ops::group::describe(state, &request.group)?;
    let queues = description
        .queues
        .into_iter()
        .map(|q| pb::GroupQueueInfo {
            max_offset: q.offsets.max,
            committed_offset: q.committed.or(q.shared.map(|s| s.low_water)).unwrap_or(0),
            lag: q.lag,
            owner: q.owner,
            topic: q.topic,
            queue_id: q.queue_id,
            mode: mode(q.mode),
            shared: q.shared.map(|s| pb::SharedQueueProgress {
                low_water: s.low_water,
                cursor: s.cursor,
                in_flight: s.in_flight,
                acked_above: s.acked_above,
            }),
        })
        .collect();
    let members = description
        .members
        .into_iter()
        .map(|m| pb::GroupMember {
            member_id: m.member_id,
            client_addr: m.client_addr,
            mode: mode(m.mode.into()),
            assigned: m.assigned.into_iter().map(queue_ref).collect(),
        })
        .chain(
            description
                .kafka_members
                .into_iter()
                .map(|m| pb::GroupMember {
                    member_id: m.member_id,
                    client_addr: m.client_host,
                    mode: mode(GroupMode::Clustering),
                    assigned: m.assigned.into_iter().map(queue_ref).collect(),
                }),
        )
        .collect();
    Ok(Reply::meta(&pb::DescribeGroupResponse {
        group: request.group,
        members,
        queues,
        modes: description.modes.into_iter().map(mode).collect(),
    }))
}

/// Sets a group's offsets on every queue of a topic; refused while the group has live members.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, topic = %request.topic))]
pub(crate) fn reset(
    state: &BrokerState,
    request: pb::ResetOffsetsRequest,
) -> Result<Reply, RequestError> {
    use pb::reset_offsets_request::To;
    let to = match request.to {
        Some(To::Earliest(_)) => ResetTarget::Earliest,
        Some(To::Latest(_)) => ResetTarget::Latest,
        Some(To::TimestampMs(ts)) => ResetTarget::Timestamp(ts),
        None => {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                "say where to reset to: earliest, latest or timestamp_ms",
            ));
        }
    };
    let offsets = ops::group::reset(state, &request.group, &request.topic, to)?
        .into_iter()
        .map(|(queue_id, offset)| pb::OffsetEntry {
            topic: request.topic.clone(),
            queue_id,
            offset,
        })
        .collect();
    Ok(Reply::meta(&pb::ResetOffsetsResponse { offsets }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::features::groups::classic::{JoinRequest, Protocol};
    use crate::{Broker, BrokerConfig};

    #[tokio::test]
    async fn a_group_kafka_consumers_use_refuses_native_members()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let broker = Broker::start(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".to_owned(),
            segment_size: 8 << 20,
            ..BrokerConfig::default()
        })
        .await?;
        let state = broker.state().clone();
        state.topics.create("t", 1)?;
        state
            .classic_groups
            .join(JoinRequest {
                group: "kafka-only".to_owned(),
                member_id: String::new(),
                instance_id: None,
                client_id: "k".to_owned(),
                client_host: "/127.0.0.1".to_owned(),
                session_timeout: Duration::from_secs(10),
                rebalance_timeout: Duration::from_secs(10),
                protocol_type: "consumer".to_owned(),
                protocols: vec![Protocol {
                    name: "range".to_owned(),
                    metadata: Bytes::new(),
                }],
                require_known_member_id: false,
            })
            .await?;
        let request = |group: &str| pb::GroupHeartbeatRequest {
            group: group.to_owned(),
            member_id: "native-1".to_owned(),
            mode: pb::ConsumeMode::Clustering as i32,
            topics: vec!["t".to_owned()],
            held: Vec::new(),
        };
        let ctx = || RequestContext {
            connection: 1,
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 5000)),
        };
        let refused = heartbeat(&state, ctx(), request("kafka-only")).err();
        assert_eq!(
            refused.as_ref().map(|e| e.code),
            Some(ErrorCode::GroupInUseByOtherProtocol),
            "{refused:?}"
        );
        assert!(!state.groups.has_members("kafka-only"));
        // Another group is fine.
        assert!(heartbeat(&state, ctx(), request("native-only")).is_ok());
        drop(state);
        broker.shutdown().await?;
        Ok(())
    }
}

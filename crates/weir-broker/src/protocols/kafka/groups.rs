//! Kafka's consumer-group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup (the classic
//! group protocol, on [`ClassicGroups`]), OffsetCommit and OffsetFetch (on the offset table
//! the native protocol uses too), ListGroups and DescribeGroups.
//!
//! Each handler takes the decoded request and its version and returns the response for that
//! version: fields a version does not carry are left at their defaults, since the codec
//! refuses some of them set. A Kafka partition is the Weir queue of the same index, a topic
//! name maps to a Weir topic as [`names`] says, a Kafka offset is the queue offset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::names;
use crate::core::state_change::StateChange;
use crate::features::groups::classic::{
    ClassicError, GroupState, JoinRequest, Joined, Protocol, SyncRequest,
};
use crate::features::groups::offsets::QueueCommit;
use crate::state::BrokerState;

/// Longest commit metadata string stored, bytes (Kafka's `offset.metadata.max.bytes`).
const MAX_COMMIT_METADATA: usize = 4096;

/// The protocol type of consumer groups.
const CONSUMER: &str = "consumer";

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Kafka's error code for a refusal.
fn error_code(error: &ClassicError) -> i16 {
    let kafka = match error {
        ClassicError::UnknownMember(_) => ResponseError::UnknownMemberId,
        ClassicError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        ClassicError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        ClassicError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        ClassicError::FencedInstance(_) => ResponseError::FencedInstanceId,
        ClassicError::InconsistentProtocol(_) | ClassicError::InUseByNative(_) => {
            ResponseError::InconsistentGroupProtocol
        }
        ClassicError::InvalidGroupId(_) => ResponseError::InvalidGroupId,
        ClassicError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        ClassicError::GroupFull(_) => ResponseError::GroupMaxSizeReached,
        // Retriable: the client backs off and tries again.
        ClassicError::TooManyGroups(_) => ResponseError::CoordinatorNotAvailable,
        ClassicError::TooLarge { .. } => ResponseError::InvalidRequest,
    };
    kafka.code()
}

/// Logs a refusal (the group APIs' responses carry no message) and returns its code.
fn refused(api: &str, group: &str, error: &ClassicError) -> i16 {
    match error {
        ClassicError::RebalanceInProgress | ClassicError::MemberIdRequired(_) => {
            tracing::debug!(api, group, %error, "group request refused");
        }
        _ => tracing::info!(api, group, %error, "group request refused"),
    }
    error_code(error)
}

/// JoinGroup (v0–9): answers once the group's rebalance completes.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group_id.as_str(), member = %request.member_id.as_str()))]
pub(crate) async fn join_group(
    state: &Arc<BrokerState>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let group = request.group_id.as_str().to_owned();
    let member_id = request.member_id.as_str().to_owned();
    let join = JoinRequest {
        group: group.clone(),
        member_id: member_id.clone(),
        instance_id: if version >= 5 {
            request.group_instance_id.as_deref().map(str::to_owned)
        } else {
            None
        },
        client_id: client_id.to_owned(),
        client_host: client_host.to_owned(),
        session_timeout: millis(request.session_timeout_ms),
        rebalance_timeout: millis(if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        }),
        protocol_type: request.protocol_type.as_str().to_owned(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.as_str().to_owned(),
                metadata: p.metadata,
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    match state.classic_groups.join(join).await {
        Ok(joined) => {
            tracing::debug!(
                group,
                member = joined.member_id.as_str(),
                generation = joined.generation,
                leader = joined.leader.as_str(),
                "JoinGroup answered"
            );
            join_response(joined, version)
        }
        Err(error) => {
            let code = refused("JoinGroup", &group, &error);
            let member_id = match error {
                ClassicError::MemberIdRequired(id) => id,
                _ => member_id,
            };
            join_error(code, &member_id, version)
        }
    }
}

/// A completed join, as the version carries it.
fn join_response(joined: Joined, version: i16) -> JoinGroupResponse {
    let members = joined
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_group_instance_id(if version >= 5 {
                    m.instance_id.map(StrBytes::from_string)
                } else {
                    None
                })
                .with_metadata(m.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_generation_id(joined.generation)
        .with_protocol_type(if version >= 7 {
            Some(StrBytes::from_string(joined.protocol_type))
        } else {
            None
        })
        .with_protocol_name(Some(StrBytes::from_string(joined.protocol)))
        .with_leader(StrBytes::from_string(joined.leader))
        .with_skip_assignment(version >= 9 && joined.skip_assignment)
        .with_member_id(StrBytes::from_string(joined.member_id))
        .with_members(members)
}

/// A refused join: generation -1, no leader, no members.
fn join_error(code: i16, member_id: &str, version: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        // Nullable only from v7 on.
        .with_protocol_name(if version >= 7 {
            None
        } else {
            Some(StrBytes::new())
        })
        .with_member_id(text(member_id))
}

/// SyncGroup (v0–5): the leader hands in the assignment; every member gets its part.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group_id.as_str(), member = %request.member_id.as_str()))]
pub(crate) async fn sync_group(
    state: &Arc<BrokerState>,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = request.group_id.as_str().to_owned();
    let sync = SyncRequest {
        group: group.clone(),
        generation: request.generation_id,
        member_id: request.member_id.as_str().to_owned(),
        instance_id: if version >= 3 {
            request.group_instance_id.as_deref().map(str::to_owned)
        } else {
            None
        },
        protocol_type: if version >= 5 {
            request.protocol_type.as_deref().map(str::to_owned)
        } else {
            None
        },
        protocol: if version >= 5 {
            request.protocol_name.as_deref().map(str::to_owned)
        } else {
            None
        },
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
            .collect(),
    };
    let (generation, member) = (sync.generation, sync.member_id.clone());
    match state.classic_groups.sync(sync).await {
        Ok(synced) => {
            tracing::debug!(
                group,
                member,
                generation,
                assignment_bytes = synced.assignment.len(),
                "SyncGroup answered"
            );
            let response = SyncGroupResponse::default().with_assignment(synced.assignment);
            if version >= 5 {
                response
                    .with_protocol_type(Some(StrBytes::from_string(synced.protocol_type)))
                    .with_protocol_name(Some(StrBytes::from_string(synced.protocol)))
            } else {
                response
            }
        }
        Err(error) => {
            SyncGroupResponse::default().with_error_code(refused("SyncGroup", &group, &error))
        }
    }
}

/// Heartbeat (v0–4): `REBALANCE_IN_PROGRESS` tells the member to join again.
#[tracing::instrument(level = "trace", skip_all, fields(group = %request.group_id.as_str(), member = %request.member_id.as_str()))]
pub(crate) async fn heartbeat(
    state: &Arc<BrokerState>,
    request: HeartbeatRequest,
    version: i16,
) -> HeartbeatResponse {
    let group = request.group_id.as_str();
    let instance_id = if version >= 3 {
        request.group_instance_id.as_deref()
    } else {
        None
    };
    let code = match state.classic_groups.heartbeat(
        group,
        request.generation_id,
        request.member_id.as_str(),
        instance_id,
    ) {
        Ok(()) => 0,
        Err(error) => refused("Heartbeat", group, &error),
    };
    HeartbeatResponse::default().with_error_code(code)
}

/// LeaveGroup (v0–5): one member (v0–2) or a batch by member or instance id (v3+); the rest
/// of the group rebalances.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group_id.as_str()))]
pub(crate) async fn leave_group(
    state: &Arc<BrokerState>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = request.group_id.as_str();
    if version < 3 {
        let code = match state
            .classic_groups
            .leave(group, request.member_id.as_str(), None)
        {
            Ok(_) => 0,
            Err(error) => refused("LeaveGroup", group, &error),
        };
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = request
        .members
        .into_iter()
        .map(|m| {
            let code = match state.classic_groups.leave(
                group,
                m.member_id.as_str(),
                m.group_instance_id.as_deref(),
            ) {
                Ok(_) => 0,
                Err(error) => refused("LeaveGroup", group, &error),
            };
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// OffsetCommit (v2–8): stores offsets (and their metadata strings) in the offset table the
/// native protocol uses, after Kafka's member and generation checks.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group_id.as_str(), member = %request.member_id.as_str()))]
pub(crate) async fn offset_commit(
    state: &Arc<BrokerState>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = request.group_id.as_str();
    let instance_id = if version >= 7 {
        request.group_instance_id.as_deref()
    } else {
        None
    };
    let check = weir_proto::validate_group_name(group)
        .map_err(|e| ClassicError::InvalidGroupId(e.to_string()))
        .and_then(|()| {
            state.classic_groups.check_commit(
                group,
                request.generation_id_or_member_epoch,
                request.member_id.as_str(),
                instance_id,
            )
        });
    let refusal = check
        .err()
        .map(|error| refused("OffsetCommit", group, &error));
    tracing::debug!(
        group,
        member = request.member_id.as_str(),
        generation = request.generation_id_or_member_epoch,
        ?refusal,
        commits = ?request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.committed_offset)))
            .collect::<Vec<_>>(),
        "OffsetCommit"
    );
    // Each partition's outcome: an error code, or the offset to store.
    let mut accepted = Vec::new();
    let mut outcomes: Vec<(TopicName, Vec<Outcome>)> = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let checked = match refusal {
                Some(code) => Err(code),
                None => check_commit(
                    state,
                    topic.name.as_str(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_metadata.as_deref().unwrap_or(""),
                ),
            };
            let outcome = checked.map(|commit| accepted.push(commit));
            partitions.push((p.partition_index, outcome));
        }
        outcomes.push((topic.name, partitions));
    }
    // One write for the whole request; in a broker group, one entry of the group's log.
    let stored = store_commits(state, group, accepted).await;
    let topics = outcomes
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, outcome)| {
                    let code = match outcome.and(stored) {
                        Ok(()) => 0,
                        Err(code) => code,
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's commit outcome: (partition, stored or its error code).
type Outcome = (i32, Result<(), i16>);

/// One accepted commit: (Weir topic, queue, offset, metadata).
type Commit = QueueCommit;

/// Checks one partition's commit; the commit to store, or the partition's error code.
fn check_commit(
    state: &BrokerState,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: &str,
) -> Result<Commit, i16> {
    let Ok(queue_id) = u32::try_from(partition) else {
        return Err(ResponseError::UnknownTopicOrPartition.code());
    };
    let topic = names::to_weir(topic).into_owned();
    if state.topics.check_queue(&topic, queue_id).is_err() {
        return Err(ResponseError::UnknownTopicOrPartition.code());
    }
    let Ok(offset) = u64::try_from(offset) else {
        return Err(ResponseError::InvalidCommitOffsetSize.code());
    };
    if metadata.len() > MAX_COMMIT_METADATA {
        return Err(ResponseError::OffsetMetadataTooLarge.code());
    }
    Ok((topic, queue_id, offset, metadata.to_owned()))
}

/// Stores accepted commits: standalone, in the offset table's file before the table and the
/// answer (a crash never takes back an answered commit; a failed write answers
/// KAFKA_STORAGE_ERROR); in a broker group, through the group's log (a new leader has them).
/// A replica that no longer leads answers NOT_COORDINATOR, and the client finds the
/// coordinator again.
async fn store_commits(state: &BrokerState, group: &str, commits: Vec<Commit>) -> Result<(), i16> {
    if commits.is_empty() {
        return Ok(());
    }
    if !state.log.is_replicated() {
        let offsets = state.offsets.clone();
        let owned = group.to_owned();
        let written =
            tokio::task::spawn_blocking(move || offsets.set_durably(&owned, &commits)).await;
        return match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(group, error = %e, "kafka offset commit not written");
                Err(ResponseError::KafkaStorageError.code())
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "kafka offset commit not written");
                Err(ResponseError::UnknownServerError.code())
            }
        };
    }
    let change = StateChange::OffsetsCommittedWithMetadata {
        group: group.to_owned(),
        offsets: commits,
    };
    state.log.propose(change).await.map(|_| ()).map_err(|e| {
        tracing::debug!(group, error = %e, "kafka offset commit not replicated");
        match e {
            weir_store::StoreError::NotLeader { .. } => ResponseError::NotCoordinator.code(),
            _ => ResponseError::RequestTimedOut.code(),
        }
    })
}

/// One partition's committed offset as OffsetFetch answers it: (partition, offset or -1,
/// metadata).
type Fetched = (i32, i64, String);

/// A group's committed offsets for the listed partitions, or for every partition it committed
/// (`None`), by topic.
fn fetch_offsets(
    state: &BrokerState,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<(TopicName, Vec<Fetched>)> {
    let fetched = committed_offsets(state, group, topics);
    tracing::debug!(
        group,
        offsets = ?fetched
            .iter()
            .flat_map(|(_, partitions)| partitions.iter().map(|(p, offset, _)| (*p, *offset)))
            .collect::<Vec<_>>(),
        "OffsetFetch"
    );
    fetched
}

/// What [`fetch_offsets`] answers, before it is logged.
fn committed_offsets(
    state: &BrokerState,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<(TopicName, Vec<Fetched>)> {
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(name, partitions)| {
                let fetched = partitions
                    .into_iter()
                    .map(|partition| {
                        let topic = names::to_weir(name.as_str());
                        let committed = u32::try_from(partition).ok().and_then(|queue_id| {
                            state.offsets.get_with_metadata(group, &topic, queue_id)
                        });
                        match committed {
                            Some((offset, metadata)) => (
                                partition,
                                i64::try_from(offset).unwrap_or(i64::MAX),
                                metadata,
                            ),
                            None => (partition, -1, String::new()),
                        }
                    })
                    .collect();
                (name, fetched)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<Fetched>> = BTreeMap::new();
            for (topic, queue_id, offset, metadata) in
                state.offsets.group_offsets_with_metadata(group)
            {
                // Internal topics Kafka clients never see are left out.
                let Some(topic) = names::to_kafka(&topic).map(|t| t.into_owned()) else {
                    continue;
                };
                by_topic.entry(topic).or_default().push((
                    i32::try_from(queue_id).unwrap_or(i32::MAX),
                    i64::try_from(offset).unwrap_or(i64::MAX),
                    metadata,
                ));
            }
            by_topic
                .into_iter()
                .map(|(topic, fetched)| (TopicName(StrBytes::from_string(topic)), fetched))
                .collect()
        }
    }
}

/// OffsetFetch (v1–8): committed offsets (-1 where none) with their metadata, for listed
/// partitions or (v2+, topics null) all of a group's; v8 asks for several groups at once.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn offset_fetch(
    state: &Arc<BrokerState>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let response =
                    OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                if let Err(e) = weir_proto::validate_group_name(g.group_id.as_str()) {
                    tracing::info!(group = %g.group_id.as_str(), error = %e, "OffsetFetch refused");
                    return response.with_error_code(ResponseError::InvalidGroupId.code());
                }
                let topics = fetch_offsets(state, g.group_id.as_str(), topics)
                    .into_iter()
                    .map(|(name, fetched)| {
                        let partitions = fetched
                            .into_iter()
                            .map(|(partition, offset, metadata)| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(partition)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(-1)
                                    .with_metadata(Some(StrBytes::from_string(metadata)))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(partitions)
                    })
                    .collect();
                response.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group = request.group_id.as_str();
    if let Err(e) = weir_proto::validate_group_name(group) {
        tracing::info!(group, error = %e, "OffsetFetch refused");
        // v1 has no top-level error: put it on each partition asked for.
        return offset_fetch_legacy(
            request
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let fetched = t.partition_indexes.iter().map(|p| (*p, -1, String::new()));
                    (t.name, fetched.collect())
                })
                .collect(),
            ResponseError::InvalidGroupId.code(),
            version,
        );
    }
    let topics = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    offset_fetch_legacy(fetch_offsets(state, group, topics), 0, version)
}

/// The v1–7 answer: topics at the top, the group's error at the top (v2+) or on each
/// partition (v1).
fn offset_fetch_legacy(
    topics: Vec<(TopicName, Vec<Fetched>)>,
    group_error: i16,
    version: i16,
) -> OffsetFetchResponse {
    let partition_error = if version < 2 { group_error } else { 0 };
    let topics = topics
        .into_iter()
        .map(|(name, fetched)| {
            let partitions = fetched
                .into_iter()
                .map(|(partition, offset, metadata)| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(StrBytes::from_string(metadata)))
                        .with_error_code(partition_error)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(group_error)
    } else {
        response
    }
}

/// Groups ListGroups and DescribeGroups know: the live classic groups, and the groups with
/// committed offsets and no live members of either protocol (shown `Empty`).
fn listed_groups(state: &BrokerState) -> Vec<(String, String, GroupState)> {
    let mut groups: BTreeMap<String, (String, GroupState)> = state
        .classic_groups
        .list()
        .into_iter()
        .map(|g| (g.group, (g.protocol_type, g.state)))
        .collect();
    for group in state.offsets.groups() {
        if !groups.contains_key(&group) && !state.groups.has_members(&group) {
            groups.insert(group, (CONSUMER.to_owned(), GroupState::Empty));
        }
    }
    groups
        .into_iter()
        .map(|(group, (protocol_type, state))| (group, protocol_type, state))
        .collect()
}

/// ListGroups (v0–4; v4 filters by state names, case-insensitively).
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn list_groups(
    state: &Arc<BrokerState>,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let filter: Vec<String> = if version >= 4 {
        request
            .states_filter
            .iter()
            .map(|s| s.as_str().to_ascii_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    let groups = listed_groups(state)
        .into_iter()
        .filter(|(_, _, group_state)| {
            filter.is_empty() || filter.contains(&group_state.name().to_ascii_lowercase())
        })
        .map(|(group, protocol_type, group_state)| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            if version >= 4 {
                listed.with_group_state(text(group_state.name()))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups (v0–5): state, protocol and members (with metadata and assignment once
/// stable); an unknown group is `Dead`, one with only committed offsets `Empty`.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn describe_groups(
    state: &Arc<BrokerState>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let name = group_id.as_str();
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            if let Err(e) = weir_proto::validate_group_name(name) {
                return described
                    .with_error_code(ResponseError::InvalidGroupId.code())
                    .with_error_message(if version >= 6 {
                        Some(StrBytes::from_string(e.to_string()))
                    } else {
                        None
                    })
                    .with_group_state(text(GroupState::Dead.name()));
            }
            match state.classic_groups.describe(name) {
                Some(d) => {
                    let members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(m.member_id))
                                .with_group_instance_id(if version >= 4 {
                                    m.instance_id.map(StrBytes::from_string)
                                } else {
                                    None
                                })
                                .with_client_id(StrBytes::from_string(m.client_id))
                                .with_client_host(StrBytes::from_string(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect();
                    described
                        .with_group_state(text(d.state.name()))
                        .with_protocol_type(StrBytes::from_string(d.protocol_type))
                        .with_protocol_data(StrBytes::from_string(d.protocol))
                        .with_members(members)
                }
                None if !state.offsets.group_offsets(name).is_empty() => described
                    .with_group_state(text(GroupState::Empty.name()))
                    .with_protocol_type(text(CONSUMER)),
                None => described.with_group_state(text(GroupState::Dead.name())),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests;

//! The group handlers on a real broker (a fresh data directory, no Kafka listener needed):
//! what each API answers, and that every answer encodes at every version the listener
//! advertises.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::protocol::Encodable;

use super::*;
use crate::Broker;
use crate::config::BrokerConfig;
use crate::features::groups::coordinator::{Heartbeat, Mode};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

async fn start(dir: &std::path::Path) -> Result<Broker, Box<dyn std::error::Error>> {
    Ok(Broker::start(BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".to_owned(),
        segment_size: 8 << 20,
        ..BrokerConfig::default()
    })
    .await?)
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn group_id(name: &str) -> GroupId {
    GroupId(s(name))
}

fn encodes(message: &impl Encodable, version: i16) -> Result<(), String> {
    let mut buf = BytesMut::new();
    message
        .encode(&mut buf, version)
        .map_err(|e| format!("v{version}: {e}"))
}

fn join(group: &str, member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(5_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"subscription")),
        ])
}

fn sync(group: &str, joined: &JoinGroupResponse, assignment: &[u8]) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(joined.member_id.clone())
                .with_assignment(Bytes::copy_from_slice(assignment)),
        ])
}

fn commit(
    group: &str,
    generation: i32,
    member_id: &str,
    entries: &[(&str, i32, i64, &str)],
) -> OffsetCommitRequest {
    let topics = entries
        .iter()
        .map(|(topic, partition, offset, metadata)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(*partition)
                        .with_committed_offset(*offset)
                        .with_committed_metadata(Some(s(metadata))),
                ])
        })
        .collect();
    OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_topics(topics)
}

/// (partition, offset, metadata) of a v1–7 answer.
fn fetched(response: &OffsetFetchResponse) -> Vec<(String, i32, i64, String)> {
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.as_str().to_owned(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn a_member_joins_syncs_commits_and_its_metadata_survives_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let state = broker.state().clone();
    state.topics.create("orders", 2)?;

    // v5: the first join is asked to come back with a member id.
    let first = join_group(&state, join("g", ""), 5, "app", "/127.0.0.1").await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(first.member_id.as_str().starts_with("app-"));
    encodes(&first, 5)?;
    let joined = join_group(
        &state,
        join("g", first.member_id.as_str()),
        5,
        "app",
        "/127.0.0.1",
    )
    .await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    assert_eq!(
        joined.members[0].metadata,
        Bytes::from_static(b"subscription")
    );
    encodes(&joined, 5)?;
    let synced = sync_group(&state, sync("g", &joined, b"orders:0,1"), 3).await;
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from_static(b"orders:0,1"));
    let beat = heartbeat(
        &state,
        HeartbeatRequest::default()
            .with_group_id(group_id("g"))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone()),
        3,
    )
    .await;
    assert_eq!(beat.error_code, 0);

    let committed = offset_commit(
        &state,
        commit(
            "g",
            joined.generation_id,
            joined.member_id.as_str(),
            &[
                ("orders", 0, 42, "{\"epoch\":1}"),
                ("orders", 1, 7, ""),
                ("orders", 9, 1, ""),
                ("nowhere", 0, 1, ""),
            ],
        ),
        8,
    )
    .await;
    let codes: Vec<i16> = committed
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(
        codes,
        vec![0, 0, UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_OR_PARTITION]
    );
    // A stale generation is refused on every partition.
    let stale = offset_commit(
        &state,
        commit("g", 9, joined.member_id.as_str(), &[("orders", 0, 1, "")]),
        8,
    )
    .await;
    assert_eq!(stale.topics[0].partitions[0].error_code, 22);
    // The same numbers the native protocol reads.
    assert_eq!(state.offsets.get("g", "orders", 0), Some(42));

    let describe = describe_groups(
        &state,
        DescribeGroupsRequest::default().with_groups(vec![group_id("g"), group_id("nobody")]),
        5,
    )
    .await;
    encodes(&describe, 5)?;
    assert_eq!(describe.groups[0].group_state.as_str(), "Stable");
    assert_eq!(describe.groups[0].protocol_data.as_str(), "range");
    assert_eq!(describe.groups[0].members[0].client_id.as_str(), "app");
    assert_eq!(
        describe.groups[0].members[0].member_assignment,
        Bytes::from_static(b"orders:0,1")
    );
    assert_eq!(describe.groups[1].group_state.as_str(), "Dead");
    let listed = list_groups(
        &state,
        ListGroupsRequest::default().with_states_filter(vec![s("stable")]),
        4,
    )
    .await;
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].group_state.as_str(), "Stable");
    let listed = list_groups(
        &state,
        ListGroupsRequest::default().with_states_filter(vec![s("Empty")]),
        4,
    )
    .await;
    assert!(listed.groups.is_empty());

    // The member leaves (v3 batch): the group is empty, its offsets stay.
    let left = leave_group(
        &state,
        LeaveGroupRequest::default()
            .with_group_id(group_id("g"))
            .with_members(vec![
                MemberIdentity::default().with_member_id(joined.member_id.clone()),
                MemberIdentity::default().with_member_id(s("ghost")),
            ]),
        3,
    )
    .await;
    let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, UNKNOWN_MEMBER_ID]);
    encodes(&left, 3)?;
    let listed = list_groups(&state, ListGroupsRequest::default(), 4).await;
    assert_eq!(listed.groups[0].group_state.as_str(), "Empty");

    drop(state);
    broker.shutdown().await?;
    let broker = start(dir.path()).await?;
    let state = broker.state().clone();
    let all = offset_fetch(
        &state,
        OffsetFetchRequest::default()
            .with_group_id(group_id("g"))
            .with_topics(None),
        7,
    )
    .await;
    assert_eq!(all.error_code, 0);
    assert_eq!(
        fetched(&all),
        vec![
            ("orders".to_owned(), 0, 42, "{\"epoch\":1}".to_owned()),
            ("orders".to_owned(), 1, 7, String::new()),
        ]
    );
    let listed = offset_fetch(
        &state,
        OffsetFetchRequest::default()
            .with_group_id(group_id("g"))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("orders")))
                    .with_partition_indexes(vec![0, 5]),
            ])),
        1,
    )
    .await;
    encodes(&listed, 1)?;
    assert_eq!(
        fetched(&listed),
        vec![
            ("orders".to_owned(), 0, 42, "{\"epoch\":1}".to_owned()),
            ("orders".to_owned(), 5, -1, String::new()),
        ]
    );
    // v8: several groups at once.
    let v8 = offset_fetch(
        &state,
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group_id("g"))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("orders")))
                        .with_partition_indexes(vec![0]),
                ])),
            OffsetFetchRequestGroup::default().with_group_id(group_id("other")),
        ]),
        8,
    )
    .await;
    encodes(&v8, 8)?;
    assert_eq!(v8.groups.len(), 2);
    assert_eq!(v8.groups[0].topics[0].partitions[0].committed_offset, 42);
    assert_eq!(
        v8.groups[0].topics[0].partitions[0].metadata.as_deref(),
        Some("{\"epoch\":1}")
    );
    assert!(v8.groups[1].topics.is_empty());
    drop(state);
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn old_clients_join_at_once_and_heartbeats_announce_a_rebalance() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let state = broker.state().clone();
    // v0–3 clients get their member id on the first join.
    let first = join_group(&state, join("g", ""), 2, "py", "/10.0.0.1").await;
    assert_eq!(first.error_code, 0);
    assert_eq!(first.generation_id, 1);
    assert_eq!(
        sync_group(&state, sync("g", &first, b"a"), 0)
            .await
            .error_code,
        0
    );
    // A second member's join waits for the first to rejoin; the first learns it by heartbeat.
    let second = {
        let state = state.clone();
        tokio::spawn(async move { join_group(&state, join("g", ""), 2, "py", "/10.0.0.2").await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let beat = heartbeat(
        &state,
        HeartbeatRequest::default()
            .with_group_id(group_id("g"))
            .with_generation_id(first.generation_id)
            .with_member_id(first.member_id.clone()),
        0,
    )
    .await;
    assert_eq!(beat.error_code, REBALANCE_IN_PROGRESS);
    let again = join_group(
        &state,
        join("g", first.member_id.as_str()),
        2,
        "py",
        "/10.0.0.1",
    )
    .await;
    let second = second.await?;
    assert_eq!((again.generation_id, second.generation_id), (2, 2));
    assert_eq!(again.members.len(), 2);
    assert!(second.members.is_empty());
    let members: HashSet<&str> = again.members.iter().map(|m| m.member_id.as_str()).collect();
    assert!(members.contains(second.member_id.as_str()));
    // v0 leave of a single member.
    let left = leave_group(
        &state,
        LeaveGroupRequest::default()
            .with_group_id(group_id("g"))
            .with_member_id(second.member_id.clone()),
        0,
    )
    .await;
    assert_eq!(left.error_code, 0);
    encodes(&left, 0)?;
    drop(state);
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_group_with_native_members_refuses_kafka_members_and_the_reverse() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let state = broker.state().clone();
    state.topics.create("t", 1)?;
    state.groups.heartbeat(
        Heartbeat {
            group: "shared-name".to_owned(),
            member_id: "native-1".to_owned(),
            mode: Mode::Clustering,
            topics: ["t".to_owned()].into_iter().collect(),
            held: HashSet::new(),
            connection: 1,
            client_addr: String::new(),
        },
        &|_| 1,
    );
    let refused = join_group(&state, join("shared-name", ""), 9, "k", "/h").await;
    assert_eq!(refused.error_code, INCONSISTENT_GROUP_PROTOCOL);
    encodes(&refused, 9)?;
    let commit = offset_commit(&state, commit("shared-name", -1, "", &[("t", 0, 1, "")]), 2).await;
    assert_eq!(
        commit.topics[0].partitions[0].error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    // Kafka members in a group: the native side sees them (its heartbeat handler refuses
    // native members then; tested there).
    let joined = join_group(&state, join("kafka-only", ""), 3, "k", "/h").await;
    assert_eq!(joined.error_code, 0);
    assert!(state.classic_groups.has_members("kafka-only"));
    drop(state);
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn every_answer_encodes_at_every_advertised_version() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let state = broker.state().clone();
    state.topics.create("t", 1)?;
    for version in 0..=9 {
        let group = format!("g{version}");
        let mut request = join(&group, "");
        if version >= 5 {
            request = request.with_group_instance_id(Some(s("instance")));
        }
        let mut joined = join_group(&state, request.clone(), version, "c", "/h").await;
        if joined.error_code == MEMBER_ID_REQUIRED {
            encodes(&joined, version)?;
            let request = request.with_member_id(joined.member_id.clone());
            joined = join_group(&state, request, version, "c", "/h").await;
        }
        assert_eq!(joined.error_code, 0, "v{version}");
        encodes(&joined, version)?;
        let error = join_group(&state, join(&group, "ghost"), version, "c", "/h").await;
        assert_eq!(error.error_code, UNKNOWN_MEMBER_ID);
        encodes(&error, version)?;
        let sync_version = version.min(5);
        let mut request = sync(&group, &joined, b"x");
        if sync_version >= 5 {
            request = request
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")));
        }
        let synced = sync_group(&state, request, sync_version).await;
        assert_eq!(synced.error_code, 0, "v{version}");
        encodes(&synced, sync_version)?;
        if version <= 4 {
            let beat = heartbeat(
                &state,
                HeartbeatRequest::default()
                    .with_group_id(group_id(&group))
                    .with_generation_id(joined.generation_id)
                    .with_member_id(joined.member_id.clone()),
                version,
            )
            .await;
            encodes(&beat, version)?;
            let listed = list_groups(&state, ListGroupsRequest::default(), version).await;
            encodes(&listed, version)?;
        }
        if (2..=8).contains(&version) {
            let committed = offset_commit(
                &state,
                commit(
                    &group,
                    joined.generation_id,
                    joined.member_id.as_str(),
                    &[("t", 0, 3, "m")],
                ),
                version,
            )
            .await;
            assert_eq!(committed.topics[0].partitions[0].error_code, 0);
            encodes(&committed, version)?;
        }
        if (1..=7).contains(&version) {
            let fetched = offset_fetch(
                &state,
                OffsetFetchRequest::default()
                    .with_group_id(group_id(&group))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(s("t")))
                            .with_partition_indexes(vec![0]),
                    ])),
                version,
            )
            .await;
            encodes(&fetched, version)?;
        }
        if version <= 5 {
            let described = describe_groups(
                &state,
                DescribeGroupsRequest::default().with_groups(vec![group_id(&group)]),
                version,
            )
            .await;
            encodes(&described, version)?;
            let mut leave = LeaveGroupRequest::default().with_group_id(group_id(&group));
            leave = if version >= 3 {
                leave.with_members(vec![
                    MemberIdentity::default().with_member_id(joined.member_id.clone()),
                ])
            } else {
                leave.with_member_id(joined.member_id.clone())
            };
            let left = leave_group(&state, leave, version).await;
            encodes(&left, version)?;
        }
    }
    drop(state);
    broker.shutdown().await?;
    Ok(())
}

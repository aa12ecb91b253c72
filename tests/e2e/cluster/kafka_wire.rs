//! Single Kafka requests sent to one replica's Kafka listener, encoded and decoded with the
//! `kafka-protocol` crate, for what client libraries do not show: the leader and leader epoch
//! in Metadata, a follower's answer to JoinGroup and FindCoordinator, OffsetForLeaderEpoch,
//! ListOffsets' epochs and the fencing errors.
//!
//! ```text
//! request:  length:i32 | header (api key, version, correlation id, client id) | body
//! response: length:i32 | header (correlation id) | body
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FindCoordinatorRequest, GroupId, JoinGroupRequest,
    ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// Kafka's error codes these tests look for.
pub const NOT_COORDINATOR: i16 = 16;
/// The client's leader epoch is older than the broker's.
pub const FENCED_LEADER_EPOCH: i16 = 74;
/// The client's leader epoch is newer than the broker's.
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// ListOffsets' timestamp for the first offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets' timestamp for the log end.
pub const LATEST: i64 = -1;

const CORRELATION_ID: i32 = 7;

/// Sends `request` in `version` to the Kafka listener at `addr` on a new connection; its
/// response.
pub fn call<R: Request>(addr: &str, version: i16, request: &R) -> R::Response {
    let api = ApiKey::try_from(R::KEY).expect("a known API");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("weir-e2e")));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header
        .encode(&mut frame, api.request_header_version(version))
        .expect("request header encodes");
    request
        .encode(&mut frame, version)
        .expect("request encodes");
    let len = i32::try_from(frame.len() - 4).expect("a small request");
    frame[..4].copy_from_slice(&len.to_be_bytes());

    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream.write_all(&frame).expect("send request");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("response length");
    let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(len)).expect("a length")];
    stream.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
        .expect("response header decodes");
    assert_eq!(header.correlation_id, CORRELATION_ID);
    R::Response::decode(&mut body, version).expect("response decodes")
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Metadata (v9) of `topic`, asked at `addr`.
pub fn metadata(addr: &str, topic: &str) -> MetadataResponse {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    call(addr, 9, &request)
}

/// One partition as Metadata at `addr` gives it: (error, leader id, leader epoch).
pub fn partition_leader(addr: &str, topic: &str, partition: i32) -> (i16, i32, i32) {
    let response = metadata(addr, topic);
    let p = response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == partition)
        .unwrap_or_else(|| panic!("no partition {partition} in {response:?}"));
    (p.error_code, p.leader_id.0, p.leader_epoch)
}

/// OffsetForLeaderEpoch (v4) at `addr` for one partition, the client believing the leader is
/// in `current`: (error, leader epoch, end offset).
pub fn epoch_end(
    addr: &str,
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(epoch),
                ]),
        ]);
    let response = call(addr, 4, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// ListOffsets (v6) at `addr` for one partition at `timestamp` (or [`EARLIEST`], [`LATEST`]),
/// the client believing the leader is in `current`: (error, offset, leader epoch).
pub fn list_offset(
    addr: &str,
    topic: &str,
    partition: i32,
    current: i32,
    timestamp: i64,
) -> (i16, i64, i32) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_current_leader_epoch(current)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let response = call(addr, 6, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset, p.leader_epoch)
}

/// Fetch (v12, no wait) at `addr` of one partition from `offset`, the client believing the
/// leader is in `current`: (error, record bytes returned).
pub fn fetch(addr: &str, topic: &str, partition: i32, current: i32, offset: i64) -> (i16, usize) {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(current)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let response = call(addr, 12, &request);
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.records.as_ref().map_or(0, Bytes::len))
}

/// A new member's JoinGroup (v5, the consumer protocol, range) for `group` at `addr`: its
/// error code.
pub fn join_group(addr: &str, group: &str) -> i16 {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(StrBytes::from_static_str(""))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::new()),
        ]);
    call(addr, 5, &request).error_code
}

/// FindCoordinator (v2) for `group` at `addr`: (error, node id, "host:port").
pub fn find_coordinator(addr: &str, group: &str) -> (i16, i32, String) {
    let request =
        FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_owned()));
    let response = call(addr, 2, &request);
    (
        response.error_code,
        response.node_id.0,
        format!("{}:{}", response.host.as_str(), response.port),
    )
}

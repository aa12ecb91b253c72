//! The Kafka listener at the wire: each test starts a [`Broker`] with a Kafka listener on a
//! free port and speaks raw Kafka frames to it, encoded and decoded with the `kafka-protocol`
//! crate (the same codec a client library would use). Real clients are tested end to end in
//! `tests/e2e/`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_broker::{Broker, BrokerConfig};

async fn start(dir: &std::path::Path) -> Broker {
    Broker::start(BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".to_owned(),
        kafka_listen: Some("127.0.0.1:0".to_owned()),
        segment_size: 8 << 20,
        auto_create_topics: true,
        ..BrokerConfig::default()
    })
    .await
    .expect("broker starts")
}

/// A raw Kafka connection.
struct Conn {
    stream: TcpStream,
}

impl Conn {
    async fn open(broker: &Broker) -> Conn {
        let addr = broker.kafka_addr().expect("kafka listener");
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
        }
    }

    /// Sends `request` as `api` v`version` with `correlation_id`.
    async fn send(
        &mut self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        request: &RequestKind,
    ) {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("wire-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next response frame (header not yet decoded), or `None` when the broker closed the
    /// connection.
    async fn recv_raw(&mut self) -> Option<Bytes> {
        let read = async {
            let len = self.stream.read_i32().await.ok()?;
            let mut buf = vec![0u8; len as usize];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(Bytes::from(buf))
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a response within 10 s")
    }

    /// The next response, decoded as `api` v`version`: (correlation id, body).
    async fn recv(&mut self, api: ApiKey, version: i16) -> (i32, ResponseKind) {
        let mut frame = self.recv_raw().await.expect("a response");
        let header_version = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
        let body = ResponseKind::decode(api, &mut frame, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version} response does not decode: {e}"));
        assert!(
            !frame.has_remaining(),
            "{api:?} v{version}: bytes left over"
        );
        (header.correlation_id, body)
    }
}

use kafka_protocol::protocol::Decodable;

/// A Kafka record batch of `values` with keys `k<i>`, as a client library makes it.
fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::from([(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce(topic: &str, partition: i32, acks: i16, records: Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records)),
                    ]),
            ]),
    )
}

fn fetch(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    max_bytes: i32,
) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(max_bytes),
                    ]),
            ]),
    )
}

/// Every version of every API the broker advertises answers, in a response the crate decodes
/// with the request's correlation id (a field set outside its version would fail to encode).
#[tokio::test]
async fn every_advertised_version_answers_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut conn = Conn::open(&broker).await;
    conn.send(
        ApiKey::ApiVersions,
        3,
        1,
        &RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("wire-test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ),
    )
    .await;
    let (id, ResponseKind::ApiVersions(versions)) = conn.recv(ApiKey::ApiVersions, 3).await else {
        panic!("not an ApiVersions answer");
    };
    assert_eq!((id, versions.error_code), (1, 0));
    let mut correlation = 10;
    // A topic with a record, so the answers carry data.
    conn.send(
        ApiKey::Produce,
        9,
        2,
        &produce("wire", 0, -1, batch(&["a"])),
    )
    .await;
    let _ = conn.recv(ApiKey::Produce, 9).await;
    for api in &versions.api_keys {
        let key = ApiKey::try_from(api.api_key).unwrap();
        // Group APIs with default (empty) fields answer at once with an error; fine here.
        for version in api.min_version..=api.max_version {
            let request = match key {
                ApiKey::Produce => produce("wire", 0, 1, batch(&["b"])),
                ApiKey::Fetch => fetch("wire", 0, 0, 0, 1 << 20),
                ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
                other => default_request(other),
            };
            correlation += 1;
            conn.send(key, version, correlation, &request).await;
            let (id, _) = conn.recv(key, version).await;
            assert_eq!(id, correlation, "{key:?} v{version}");
        }
    }
    broker.shutdown().await.unwrap();
}

/// The default request of `api` (every field at its default).
fn default_request(api: ApiKey) -> RequestKind {
    use kafka_protocol::messages::*;
    match api {
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(FindCoordinatorRequest::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::OffsetForLeaderEpoch => {
            RequestKind::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default())
        }
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(DescribeConfigsRequest::default()),
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default())
        }
        other => panic!("advertised API {other:?} has no test request"),
    }
}

/// An ApiVersions of a version the broker does not know is answered in v0 with error 35 and
/// the supported list, so the client can fall back.
#[tokio::test]
async fn an_unknown_api_versions_version_gets_the_list_and_error_35() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut conn = Conn::open(&broker).await;
    // v9 does not exist: send a v0 body under a v9 header, as a newer client might.
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(9);
    body.put_i32(77);
    body.put_i16(-1);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    conn.stream.write_all(&frame).await.unwrap();
    let (id, ResponseKind::ApiVersions(answer)) = conn.recv(ApiKey::ApiVersions, 0).await else {
        panic!("not an ApiVersions answer");
    };
    assert_eq!((id, answer.error_code), (77, 35));
    assert!(
        answer
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Fetch as i16)
    );
    broker.shutdown().await.unwrap();
}

/// Responses leave in request order: a long-polling fetch sent first is answered before the
/// metadata request sent after it, though the metadata is ready at once; a produce with
/// acks=0 is never answered. A long poll alone waits; a request queued behind it on the
/// connection ends the wait (its answer has to follow), so that request is not held up.
#[tokio::test]
async fn responses_keep_request_order_and_acks_0_gets_none() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut conn = Conn::open(&broker).await;
    conn.send(
        ApiKey::Produce,
        9,
        1,
        &produce("order", 0, 1, batch(&["x"])),
    )
    .await;
    let (id, _) = conn.recv(ApiKey::Produce, 9).await;
    assert_eq!(id, 1);
    // Alone, it waits up to 700 ms: nothing at offset 1.
    conn.send(ApiKey::Fetch, 12, 2, &fetch("order", 0, 1, 700, 1 << 20))
        .await;
    let started = std::time::Instant::now();
    let (id, _) = conn.recv(ApiKey::Fetch, 12).await;
    assert_eq!(id, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the fetch waited"
    );
    // A poll of up to 15 s (the broker's cap), then two requests behind it.
    conn.send(ApiKey::Fetch, 12, 3, &fetch("order", 0, 1, 60_000, 1 << 20))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.send(
        ApiKey::Produce,
        9,
        4,
        &produce("order", 1, 0, batch(&["y"])),
    )
    .await;
    conn.send(
        ApiKey::Metadata,
        12,
        5,
        &RequestKind::Metadata(MetadataRequest::default()),
    )
    .await;
    // Within `recv`'s 10 s, so the poll did not wait out its 15 s; nothing came for it.
    let (id, ResponseKind::Fetch(answer)) = conn.recv(ApiKey::Fetch, 12).await else {
        panic!("not a fetch answer");
    };
    assert_eq!(id, 3);
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert!(
        partition.records.as_ref().is_none_or(Bytes::is_empty),
        "no records past offset 1"
    );
    // The acks=0 produce (4) has no answer: the metadata (5) comes next.
    let (id, _) = conn.recv(ApiKey::Metadata, 12).await;
    assert_eq!(id, 5);
    // And it was stored.
    conn.send(ApiKey::Fetch, 12, 6, &fetch("order", 1, 0, 0, 1 << 20))
        .await;
    let (_, ResponseKind::Fetch(answer)) = conn.recv(ApiKey::Fetch, 12).await else {
        panic!("not a fetch answer");
    };
    let mut records = answer.responses[0].partitions[0].records.clone().unwrap();
    let set = RecordBatchDecoder::decode(&mut records).unwrap();
    assert_eq!(set.records[0].value.as_deref(), Some(&b"y"[..]));
    broker.shutdown().await.unwrap();
}

/// A fetch from the middle of a batch returns that whole batch (the client skips what it did
/// not ask for), and a batch larger than the fetch's byte limits is still returned.
#[tokio::test]
async fn a_fetch_in_a_batch_returns_it_even_past_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut conn = Conn::open(&broker).await;
    let big = "v".repeat(2000);
    conn.send(
        ApiKey::Produce,
        9,
        1,
        &produce("mid", 0, -1, batch(&["a", "b", "c", &big])),
    )
    .await;
    let (_, ResponseKind::Produce(p)) = conn.recv(ApiKey::Produce, 9).await else {
        panic!("not a produce answer");
    };
    assert_eq!(p.responses[0].partition_responses[0].base_offset, 0);
    conn.send(ApiKey::Fetch, 12, 2, &fetch("mid", 0, 2, 0, 100))
        .await;
    let (_, ResponseKind::Fetch(answer)) = conn.recv(ApiKey::Fetch, 12).await else {
        panic!("not a fetch answer");
    };
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, 4);
    let mut records = partition.records.clone().unwrap();
    let set = RecordBatchDecoder::decode(&mut records).unwrap();
    let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert_eq!(set.records[1].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(set.records[3].value.as_deref().map(<[u8]>::len), Some(2000));
    broker.shutdown().await.unwrap();
}

/// An unknown API key closes that connection only; the broker keeps serving others.
#[tokio::test]
async fn an_unknown_api_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut bad = Conn::open(&broker).await;
    let mut frame = BytesMut::new();
    frame.put_i32(10);
    frame.put_i16(31_000);
    frame.put_i16(0);
    frame.put_i32(5);
    frame.put_i16(-1);
    bad.stream.write_all(&frame).await.unwrap();
    assert!(bad.recv_raw().await.is_none(), "the connection is closed");
    let mut good = Conn::open(&broker).await;
    good.send(
        ApiKey::Metadata,
        1,
        9,
        &RequestKind::Metadata(MetadataRequest::default()),
    )
    .await;
    let (id, _) = good.recv(ApiKey::Metadata, 1).await;
    assert_eq!(id, 9);
    broker.shutdown().await.unwrap();
}

/// Bad input gets Kafka's error codes per partition, and the connection goes on serving:
/// a batch over `max_message_size`, a damaged batch, an unknown topic or partition, an
/// internal topic, an offset past the end.
#[tokio::test]
async fn bad_produce_and_fetch_input_gets_typed_errors_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".to_owned(),
        kafka_listen: Some("127.0.0.1:0".to_owned()),
        segment_size: 8 << 20,
        max_message_size: 64 << 10,
        max_frame_size: 1 << 20,
        ..BrokerConfig::default()
    })
    .await
    .expect("broker starts");
    let mut conn = Conn::open(&broker).await;
    let code_of = |answer: ResponseKind| match answer {
        ResponseKind::Produce(p) => p.responses[0].partition_responses[0].error_code,
        ResponseKind::Fetch(f) => f.responses[0].partitions[0].error_code,
        other => panic!("unexpected answer {other:?}"),
    };
    let mut correlation = 0;
    let mut ask = async |conn: &mut Conn, api: ApiKey, request: RequestKind| {
        correlation += 1;
        let version = if api == ApiKey::CreateTopics { 7 } else { 9 };
        conn.send(api, version, correlation, &request).await;
        let (id, answer) = conn.recv(api, version).await;
        assert_eq!(id, correlation);
        answer
    };
    // Unknown topic (auto-creation off).
    let answer = ask(
        &mut conn,
        ApiKey::Produce,
        produce("nope", 0, 1, batch(&["a"])),
    )
    .await;
    assert_eq!(code_of(answer), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    // Create it natively through CreateTopics.
    let create = RequestKind::CreateTopics(
        kafka_protocol::messages::CreateTopicsRequest::default().with_topics(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("bad")))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]),
    );
    let ResponseKind::CreateTopics(created) = ask(&mut conn, ApiKey::CreateTopics, create).await
    else {
        panic!("not a CreateTopics answer");
    };
    assert_eq!(created.topics[0].error_code, 0);
    let big = "x".repeat(100 << 10);
    let mut damaged = BytesMut::from(&batch(&["hello"])[..]);
    let last = damaged.len() - 3;
    // One byte of a record flipped under the CRC.
    damaged[last] ^= 0xFF;
    let cases = [
        (
            "a partition the topic lacks",
            ApiKey::Produce,
            produce("bad", 7, 1, batch(&["a"])),
            3,
        ),
        (
            "over max_message_size",
            ApiKey::Produce,
            produce("bad", 0, 1, batch(&[&big])),
            10,
        ),
        (
            "a damaged batch",
            ApiKey::Produce,
            produce("bad", 0, 1, damaged.freeze()),
            2,
        ),
        (
            "an internal topic",
            ApiKey::Produce,
            produce("__weir_dlq.g", 0, 1, batch(&["a"])),
            17,
        ),
        (
            "past the end",
            ApiKey::Fetch,
            fetch("bad", 0, 5, 0, 1 << 20),
            1,
        ),
    ];
    for (what, api, request, code) in cases {
        assert_eq!(code_of(ask(&mut conn, api, request).await), code, "{what}");
    }
    // Nothing was stored, and the same connection still produces and fetches.
    let answer = ask(
        &mut conn,
        ApiKey::Produce,
        produce("bad", 0, 1, batch(&["ok"])),
    )
    .await;
    let ResponseKind::Produce(p) = answer else {
        panic!("not a produce answer")
    };
    assert_eq!(p.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(p.responses[0].partition_responses[0].base_offset, 0);
    let ResponseKind::Fetch(f) =
        ask(&mut conn, ApiKey::Fetch, fetch("bad", 0, 0, 0, 1 << 20)).await
    else {
        panic!("not a fetch answer")
    };
    let mut records = f.responses[0].partitions[0].records.clone().unwrap();
    let set = RecordBatchDecoder::decode(&mut records).unwrap();
    assert_eq!(set.records.len(), 1);
    assert_eq!(set.records[0].value.as_deref(), Some(&b"ok"[..]));
    broker.shutdown().await.unwrap();
}

/// A standalone broker is in leader epoch 0 for good, and says so everywhere: the batches it
/// stamps (whatever the producer wrote there), Metadata, ListOffsets and OffsetForLeaderEpoch;
/// a client that believes in a newer epoch is told `UNKNOWN_LEADER_EPOCH` (75).
#[tokio::test]
async fn a_standalone_broker_says_leader_epoch_0_everywhere() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{ListOffsetsRequest, OffsetForLeaderEpochRequest};

    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut conn = Conn::open(&broker).await;
    let name = || TopicName(StrBytes::from_static_str("epochs"));
    // Created by Metadata, which says epoch 0.
    let metadata = RequestKind::Metadata(
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name())),
            ]))
            .with_allow_auto_topic_creation(true),
    );
    conn.send(ApiKey::Metadata, 9, 1, &metadata).await;
    let (_, ResponseKind::Metadata(m)) = conn.recv(ApiKey::Metadata, 9).await else {
        panic!("not a metadata answer");
    };
    assert_eq!(m.topics[0].partitions[0].leader_epoch, 0);

    // A producer's batch claiming epoch 9 (outside the batch CRC) is stamped with 0.
    let mut claimed = BytesMut::from(&batch(&["a", "b", "c"])[..]);
    claimed[12..16].copy_from_slice(&9i32.to_be_bytes());
    conn.send(
        ApiKey::Produce,
        9,
        2,
        &produce("epochs", 0, -1, claimed.freeze()),
    )
    .await;
    let (_, ResponseKind::Produce(p)) = conn.recv(ApiKey::Produce, 9).await else {
        panic!("not a produce answer");
    };
    assert_eq!(p.responses[0].partition_responses[0].error_code, 0);
    conn.send(ApiKey::Fetch, 12, 3, &fetch("epochs", 0, 0, 0, 1 << 20))
        .await;
    let (_, ResponseKind::Fetch(f)) = conn.recv(ApiKey::Fetch, 12).await else {
        panic!("not a fetch answer");
    };
    let mut records = f.responses[0].partitions[0].records.clone().unwrap();
    let set = RecordBatchDecoder::decode(&mut records).unwrap();
    assert!(set.records.iter().all(|r| r.partition_leader_epoch == 0));

    // OffsetForLeaderEpoch: epoch 0 ends at the log end; epoch 1 is unknown; a client in
    // epoch 1 is ahead of the broker.
    let epoch_end = |current: i32, epoch: i32| {
        RequestKind::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default().with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(name())
                    .with_partitions(vec![
                        OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(current)
                            .with_leader_epoch(epoch),
                    ]),
            ]))
    };
    for (i, (current, epoch, want)) in [
        (-1, 0, (0, 0, 3)),
        (0, 0, (0, 0, 3)),
        (0, 1, (0, -1, -1)),
        (1, 0, (75, -1, -1)),
    ]
    .into_iter()
    .enumerate()
    {
        conn.send(
            ApiKey::OffsetForLeaderEpoch,
            4,
            10 + i as i32,
            &epoch_end(current, epoch),
        )
        .await;
        let (_, ResponseKind::OffsetForLeaderEpoch(o)) =
            conn.recv(ApiKey::OffsetForLeaderEpoch, 4).await
        else {
            panic!("not an OffsetForLeaderEpoch answer");
        };
        let p = &o.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            want,
            "current {current}, epoch {epoch}"
        );
    }

    // ListOffsets: the log end in epoch 0; a client in epoch 1 is ahead.
    let list = |current: i32| {
        RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_current_leader_epoch(current)
                            .with_timestamp(-1),
                    ]),
            ]))
    };
    conn.send(ApiKey::ListOffsets, 6, 20, &list(0)).await;
    let (_, ResponseKind::ListOffsets(l)) = conn.recv(ApiKey::ListOffsets, 6).await else {
        panic!("not a ListOffsets answer");
    };
    let p = &l.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset, p.leader_epoch), (0, 3, 0));
    conn.send(ApiKey::ListOffsets, 6, 21, &list(1)).await;
    let (_, ResponseKind::ListOffsets(l)) = conn.recv(ApiKey::ListOffsets, 6).await else {
        panic!("not a ListOffsets answer");
    };
    assert_eq!(l.topics[0].partitions[0].error_code, 75);

    // Fetch from a client in epoch 1: no records, UNKNOWN_LEADER_EPOCH.
    let RequestKind::Fetch(mut ahead) = fetch("epochs", 0, 0, 500, 1 << 20) else {
        unreachable!("fetch() makes a Fetch");
    };
    ahead.topics[0].partitions[0].current_leader_epoch = 1;
    conn.send(ApiKey::Fetch, 12, 30, &RequestKind::Fetch(ahead))
        .await;
    let (_, ResponseKind::Fetch(f)) = conn.recv(ApiKey::Fetch, 12).await else {
        panic!("not a fetch answer");
    };
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.error_code, 75);
    assert_eq!(p.records.as_ref().map_or(0, Bytes::len), 0);
    broker.shutdown().await.unwrap();
}

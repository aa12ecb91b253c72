//! End-to-end tests of the broker over real TCP connections: each test starts a [`Broker`] on
//! a free port with a fresh data directory and speaks the native protocol to it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use weir_broker::{Broker, BrokerConfig, BrokerError};
use weir_proto::batch::{BatchBuilder, BatchOptions, Compression, Message, RecordFields};
use weir_proto::frame::{encode_frame, flags};
use weir_proto::{ApiKey, ErrorCode, Frame, FrameCodec, Header, MessageId, pb};

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".to_owned(),
        segment_size: 8 << 20,
        ..BrokerConfig::default()
    }
}

async fn start(dir: &std::path::Path) -> Broker {
    Broker::start(config(dir)).await.expect("broker starts")
}

/// A client connection speaking raw frames.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    next_id: u32,
}

/// A decoded answer.
struct Answer {
    code: ErrorCode,
    meta: Bytes,
    payload: BytesMut,
}

impl Answer {
    fn ok<M: prost::Message + Default>(self) -> M {
        assert_eq!(self.code, ErrorCode::None, "error: {}", self.message());
        M::decode(self.meta).unwrap()
    }

    fn message(&self) -> String {
        pb::ErrorResponse::decode(self.meta.clone())
            .map(|e| e.message)
            .unwrap_or_default()
    }
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            codec: FrameCodec::default(),
            next_id: 1,
        }
    }

    async fn send_header(&mut self, header: Header, meta: &impl prost::Message, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_frame(&header, meta, payload, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send(&mut self, key: ApiKey, meta: &impl prost::Message, payload: &[u8]) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_header(Header::request(key, id), meta, payload)
            .await;
        id
    }

    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("answer in time")
                    .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    async fn recv_answer(&mut self) -> (u32, Answer) {
        let frame = self.recv().await.expect("connection open");
        assert!(frame.header.is_response());
        (
            frame.header.request_id,
            Answer {
                code: ErrorCode::from_u16(frame.header.error_code),
                meta: frame.meta,
                payload: frame.payload,
            },
        )
    }

    async fn call(&mut self, key: ApiKey, meta: &impl prost::Message, payload: &[u8]) -> Answer {
        let id = self.send(key, meta, payload).await;
        let (got, answer) = self.recv_answer().await;
        assert_eq!(got, id);
        answer
    }

    async fn create_topic(&mut self, name: &str, queues: u32) -> pb::TopicInfo {
        let request = pb::CreateTopicRequest {
            name: name.to_owned(),
            queues,
        };
        self.call(ApiKey::CreateTopic, &request, &[]).await.ok()
    }

    async fn produce(&mut self, topic: &str, queue_id: u32, batch: &[u8]) -> Answer {
        let request = pb::ProduceRequest {
            topic: topic.to_owned(),
            queue_id,
        };
        self.call(ApiKey::Produce, &request, batch).await
    }

    /// Pulls, and keeps what a consumer keeps of the whole batches that come back: the
    /// messages from the asked offset up to `next_offset` whose tag matches.
    async fn pull(&mut self, request: pb::PullRequest) -> (pb::PullResponse, Vec<Message>) {
        let answer = self.call(ApiKey::Pull, &request, &[]).await;
        let payload = answer.payload.clone().freeze();
        let response: pb::PullResponse = answer.ok();
        let tags: Vec<&str> = request
            .tag_expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "*")
            .collect();
        let messages = Message::decode_all(&payload)
            .unwrap()
            .into_iter()
            .filter(|m| m.queue_offset >= request.offset && m.queue_offset < response.next_offset)
            .filter(|m| tags.is_empty() || tags.contains(&m.tag()))
            .collect();
        (response, messages)
    }

    /// Waits until the store has dispatched `max` messages to a queue (dispatch follows the
    /// append asynchronously).
    async fn wait_dispatched(&mut self, topic: &str, queue_id: u32, max: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let request = pb::DescribeTopicRequest {
                name: topic.to_owned(),
            };
            let info: pb::TopicInfo = self.call(ApiKey::DescribeTopic, &request, &[]).await.ok();
            if info.queues[queue_id as usize].max_offset >= max {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}:{queue_id} never reached {max}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn heartbeat(&mut self, member: &str, held: &[u32]) -> Vec<u32> {
        let request = pb::GroupHeartbeatRequest {
            group: "g".to_owned(),
            member_id: member.to_owned(),
            mode: pb::ConsumeMode::Clustering as i32,
            topics: vec!["t".to_owned()],
            held: held
                .iter()
                .map(|q| pb::QueueRef {
                    topic: "t".to_owned(),
                    queue_id: *q,
                })
                .collect(),
        };
        let response: pb::GroupHeartbeatResponse =
            self.call(ApiKey::GroupHeartbeat, &request, &[]).await.ok();
        response.assigned.iter().map(|q| q.queue_id).collect()
    }
}

/// One entry of `(key, tag, body)` messages (empty key or tag for none).
fn batch(topic: &str, messages: &[(&str, &str, &str)]) -> BytesMut {
    let mut builder = BatchBuilder::new(topic, BatchOptions::default()).unwrap();
    for (key, tag, body) in messages {
        let fields = RecordFields {
            timestamp: 1,
            key: (!key.is_empty()).then_some(key.as_bytes()),
            value: Some(body.as_bytes()),
        };
        let tags = [("TAGS", Some(tag.as_bytes()))];
        let headers = if tag.is_empty() {
            &tags[..0]
        } else {
            &tags[..]
        };
        builder.push(&fields, headers.iter().copied()).unwrap();
    }
    builder.finish(Compression::None).unwrap()
}

fn pull_request(topic: &str, queue_id: u32, offset: u64, max_wait_ms: u32) -> pb::PullRequest {
    pb::PullRequest {
        topic: topic.to_owned(),
        queue_id,
        offset,
        max_messages: 100,
        max_wait_ms,
        ..pb::PullRequest::default()
    }
}

#[tokio::test]
async fn produce_then_pull_and_look_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Conn::connect(broker.local_addr()).await;
    c.create_topic("t", 2).await;

    let first: pb::ProduceResponse = c
        .produce(
            "t",
            1,
            &batch(
                "t",
                &[("k1", "A", "one"), ("k2", "B", "two"), ("k1", "A", "three")],
            ),
        )
        .await
        .ok();
    assert_eq!((first.queue_offset, first.count), (0, 3));
    assert_eq!(first.broker_name, "broker-a");
    let second: pb::ProduceResponse = c
        .produce("t", 1, &batch("t", &[("", "", "four")]))
        .await
        .ok();
    assert_eq!((second.queue_offset, second.count), (3, 1));

    c.wait_dispatched("t", 1, 4).await;
    let (response, messages) = c.pull(pull_request("t", 1, 0, 0)).await;
    assert_eq!(response.status, pb::PullStatus::Found as i32);
    assert_eq!(
        (response.count, response.next_offset, response.max_offset),
        (4, 4, 4)
    );
    let offsets: Vec<u64> = messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert_eq!(messages[2].body.as_deref(), Some(&b"three"[..]));
    assert_eq!(messages[2].index, 2);
    assert_eq!(messages[0].commit_log_offset, first.commit_log_offset);

    // Tag filter: skipped messages still advance next_offset.
    let mut filtered = pull_request("t", 1, 0, 0);
    filtered.tag_expression = "B".to_owned();
    let (response, messages) = c.pull(filtered).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body.as_deref(), Some(&b"two"[..]));
    assert!(response.next_offset >= 2);

    // A long poll whose read steps over messages the filter rejects, matching none, answers
    // at once with the offset past them (the consumer commits it) instead of waiting out the
    // poll (15 s here).
    let mut unmatched = pull_request("t", 1, 0, 60_000);
    unmatched.tag_expression = "C".to_owned();
    let (response, messages) = tokio::time::timeout(Duration::from_secs(5), c.pull(unmatched))
        .await
        .expect("answered without waiting out the long poll");
    assert!(messages.is_empty());
    assert_eq!((response.count, response.next_offset), (0, 4));

    // Nothing more, no wait: NO_NEW_MESSAGES at once.
    let (response, messages) = c.pull(pull_request("t", 1, 4, 0)).await;
    assert_eq!(response.status, pb::PullStatus::NoNewMessages as i32);
    assert!(messages.is_empty());
    let answer = c
        .call(ApiKey::Pull, &pull_request("t", 1, 99, 0), &[])
        .await;
    assert_eq!(answer.code, ErrorCode::OffsetOutOfRange);
    assert!(answer.message().contains('4'), "{}", answer.message());
    let answer = c.call(ApiKey::Pull, &pull_request("t", 2, 0, 0), &[]).await;
    assert_eq!(answer.code, ErrorCode::QueueNotFound);
    let answer = c
        .call(ApiKey::Pull, &pull_request("nope", 0, 0, 0), &[])
        .await;
    assert_eq!(answer.code, ErrorCode::TopicNotFound);

    // By id.
    let id = MessageId::new("broker-a".into(), first.commit_log_offset, 2);
    let answer = c
        .call(
            ApiKey::GetMessage,
            &pb::GetMessageRequest {
                message_id: id.to_string(),
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::None, "{}", answer.message());
    let found = Message::decode_all(&answer.payload.freeze()).unwrap();
    assert_eq!(
        found[id.index as usize].body.as_deref(),
        Some(&b"three"[..])
    );
    let elsewhere = MessageId::new("broker-b".into(), 0, 0);
    let answer = c
        .call(
            ApiKey::GetMessage,
            &pb::GetMessageRequest {
                message_id: elsewhere.to_string(),
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::MessageNotFound);
    let answer = c
        .call(
            ApiKey::GetMessage,
            &pb::GetMessageRequest {
                message_id: "zz".to_owned(),
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::InvalidArgument);

    // By key.
    let request = pb::FindByKeyRequest {
        topic: "t".to_owned(),
        key: "k1".to_owned(),
        max: 0,
    };
    let answer = c.call(ApiKey::FindByKey, &request, &[]).await;
    assert_eq!(answer.code, ErrorCode::None, "{}", answer.message());
    let found = Message::decode_all(&answer.payload.freeze()).unwrap();
    let mut bodies: Vec<&[u8]> = found
        .iter()
        .filter(|m| m.key_str() == "k1")
        .filter_map(|m| m.body.as_deref())
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec![&b"one"[..], &b"three"[..]]);
    let request = pb::FindByKeyRequest {
        topic: "t".to_owned(),
        key: "missing".to_owned(),
        max: 0,
    };
    assert_eq!(
        c.call(ApiKey::FindByKey, &request, &[]).await.code,
        ErrorCode::MessageNotFound
    );

    // By time: everything was stored after the epoch.
    let request = pb::OffsetForTimeRequest {
        topic: "t".to_owned(),
        queue_id: 1,
        timestamp_ms: 0,
    };
    let response: pb::OffsetForTimeResponse =
        c.call(ApiKey::OffsetForTime, &request, &[]).await.ok();
    assert_eq!(response.offset, 0);

    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn produce_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Conn::connect(broker.local_addr()).await;
    c.create_topic("t", 1).await;
    assert_eq!(
        c.produce("u", 0, &batch("u", &[("", "", "x")])).await.code,
        ErrorCode::TopicNotFound
    );
    assert_eq!(
        c.produce("t", 1, &batch("t", &[("", "", "x")])).await.code,
        ErrorCode::QueueNotFound
    );
    assert_eq!(
        c.produce("t", 0, &batch("other", &[("", "", "x")]))
            .await
            .code,
        ErrorCode::CorruptMessage
    );
    let mut corrupt = batch("t", &[("", "", "x")]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    assert_eq!(
        c.produce("t", 0, &corrupt).await.code,
        ErrorCode::CorruptMessage
    );
    assert_eq!(
        c.produce("t", 0, &[]).await.code,
        ErrorCode::InvalidArgument
    );
    // One-way produce: stored, no answer (the next answer is the describe's).
    let request = pb::ProduceRequest {
        topic: "t".to_owned(),
        queue_id: 0,
    };
    let mut header = Header::request(ApiKey::Produce, 777);
    header.flags = flags::ONEWAY;
    c.send_header(header, &request, &batch("t", &[("", "", "y")]))
        .await;
    let info: pb::TopicInfo = c
        .call(
            ApiKey::DescribeTopic,
            &pb::DescribeTopicRequest {
                name: "t".to_owned(),
            },
            &[],
        )
        .await
        .ok();
    assert!(info.queues[0].max_offset <= 1);
    c.wait_dispatched("t", 0, 1).await;
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn auto_create_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        auto_create_topics: true,
        default_queues: 3,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let mut c = Conn::connect(broker.local_addr()).await;
    let response: pb::ProduceResponse = c
        .produce("fresh", 2, &batch("fresh", &[("", "", "x")]))
        .await
        .ok();
    assert_eq!(response.count, 1);
    let route: pb::GetRouteResponse = c
        .call(
            ApiKey::GetRoute,
            &pb::GetRouteRequest {
                topic: "fresh".to_owned(),
            },
            &[],
        )
        .await
        .ok();
    assert_eq!(route.queues.len(), 3);
    assert_eq!(
        c.produce("bad name", 0, &batch("bad name", &[("", "", "x")]))
            .await
            .code,
        ErrorCode::InvalidTopicName
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn long_poll_wakes_on_produce_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut consumer = Conn::connect(broker.local_addr()).await;
    let mut producer = Conn::connect(broker.local_addr()).await;
    consumer.create_topic("t", 1).await;

    // Times out with NO_NEW_MESSAGES.
    let started = Instant::now();
    let (response, _) = consumer.pull(pull_request("t", 0, 0, 300)).await;
    assert_eq!(response.status, pb::PullStatus::NoNewMessages as i32);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // Answered promptly when a message arrives during the wait.
    consumer
        .send(ApiKey::Pull, &pull_request("t", 0, 0, 10_000), &[])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let produced = Instant::now();
    producer
        .produce("t", 0, &batch("t", &[("", "", "wake")]))
        .await
        .ok::<pb::ProduceResponse>();
    let (_, answer) = consumer.recv_answer().await;
    let latency = produced.elapsed();
    let response: pb::PullResponse = answer.ok();
    assert_eq!(response.count, 1);
    assert!(
        latency < Duration::from_millis(50),
        "long poll answered after {latency:?}"
    );

    // The wait is capped by long_poll_max_ms.
    broker.shutdown().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        long_poll_max_ms: 100,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let mut c = Conn::connect(broker.local_addr()).await;
    c.create_topic("t", 1).await;
    let started = Instant::now();
    let (response, _) = c.pull(pull_request("t", 0, 0, 60_000)).await;
    assert_eq!(response.status, pb::PullStatus::NoNewMessages as i32);
    assert!(started.elapsed() < Duration::from_secs(2));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_answers_pending_long_polls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        flush: "sync".to_owned(),
        ..config(dir.path())
    })
    .await
    .unwrap();
    let mut c = Conn::connect(broker.local_addr()).await;
    c.create_topic("t", 1).await;
    // Sync flush: pipelined produces are acknowledged in order once durable.
    let one = batch("t", &[("", "", "durable")]);
    let request = pb::ProduceRequest {
        topic: "t".to_owned(),
        queue_id: 0,
    };
    for _ in 0..20 {
        c.send(ApiKey::Produce, &request, &one).await;
    }
    let mut offsets = Vec::new();
    for _ in 0..20 {
        let (id, answer) = c.recv_answer().await;
        offsets.push((id, answer.ok::<pb::ProduceResponse>().queue_offset));
    }
    offsets.sort();
    assert!(
        offsets
            .iter()
            .all(|(id, offset)| u64::from(*id) == offset + 2),
        "{offsets:?}"
    );
    c.wait_dispatched("t", 0, 20).await;

    let poll_id = c
        .send(ApiKey::Pull, &pull_request("t", 0, 20, 30_000), &[])
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(broker.shutdown());
    let (id, answer) = c.recv_answer().await;
    assert_eq!(id, poll_id);
    assert_eq!(
        answer.ok::<pb::PullResponse>().status,
        pb::PullStatus::NoNewMessages as i32
    );
    stopping.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(c.recv().await.is_none());
}

#[tokio::test]
async fn many_requests_in_flight_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Conn::connect(broker.local_addr()).await;
    c.create_topic("t", 2).await;

    // A long poll first, then a describe: the describe is answered while the poll waits.
    let poll_id = c
        .send(ApiKey::Pull, &pull_request("t", 0, 0, 5_000), &[])
        .await;
    let describe_id = c
        .send(
            ApiKey::DescribeTopic,
            &pb::DescribeTopicRequest {
                name: "t".to_owned(),
            },
            &[],
        )
        .await;
    let (id, answer) = c.recv_answer().await;
    assert_eq!(id, describe_id);
    answer.ok::<pb::TopicInfo>();

    // 200 produces pipelined without waiting: all answered, each by its id, in queue order.
    let one = batch("t", &[("", "", "m")]);
    let request = pb::ProduceRequest {
        topic: "t".to_owned(),
        queue_id: 1,
    };
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(c.send(ApiKey::Produce, &request, &one).await);
    }
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 200 {
        let (id, answer) = c.recv_answer().await;
        assert_ne!(id, poll_id);
        answers.insert(id, answer.ok::<pb::ProduceResponse>().queue_offset);
    }
    let offsets: Vec<u64> = ids.iter().map(|id| answers[id]).collect();
    assert_eq!(offsets, (0..200).collect::<Vec<u64>>());

    // The long poll is still pending; a produce to its queue answers it.
    c.send(
        ApiKey::Produce,
        &pb::ProduceRequest {
            topic: "t".to_owned(),
            queue_id: 0,
        },
        &one,
    )
    .await;
    let mut got_poll = false;
    for _ in 0..2 {
        let (id, answer) = c.recv_answer().await;
        if id == poll_id {
            assert_eq!(answer.ok::<pb::PullResponse>().count, 1);
            got_poll = true;
        }
    }
    assert!(got_poll);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Conn::connect(broker.local_addr()).await;
    let header = Header {
        api_key: 999,
        request_id: 5,
        ..Header::default()
    };
    c.send_header(header, &pb::Empty {}, &[]).await;
    let (id, answer) = c.recv_answer().await;
    assert_eq!((id, answer.code), (5, ErrorCode::UnsupportedApi));

    let header = Header {
        api_version: 7,
        ..Header::request(ApiKey::ListTopics, 6)
    };
    c.send_header(header, &pb::Empty {}, &[]).await;
    let (id, answer) = c.recv_answer().await;
    assert_eq!((id, answer.code), (6, ErrorCode::UnsupportedVersion));

    // A body that does not decode (a truncated varint).
    let mut out = BytesMut::new();
    out.put_u32(16 + 2);
    out.put_u16(ApiKey::CreateTopic as u16);
    out.put_u16(0);
    out.put_u32(8);
    out.put_u16(0);
    out.put_u16(0);
    out.put_u32(2);
    out.put_slice(&[0x0A, 0xFF]);
    c.stream.write_all(&out).await.unwrap();
    let (id, answer) = c.recv_answer().await;
    assert_eq!((id, answer.code), (8, ErrorCode::MalformedRequest));

    let topics: pb::ListTopicsResponse = c.call(ApiKey::ListTopics, &pb::Empty {}, &[]).await.ok();
    assert!(topics.topics.is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn framing_errors_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut good = Conn::connect(broker.local_addr()).await;
    for garbage in [
        &[0xFFu8, 0xFF, 0xFF, 0xFF, 1, 2, 3][..],
        &[0, 0, 0, 3, 1, 2, 3],
        &[0, 0, 0, 16, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9],
    ] {
        let mut bad = Conn::connect(broker.local_addr()).await;
        bad.stream.write_all(garbage).await.unwrap();
        assert!(
            bad.recv().await.is_none(),
            "connection closed after {garbage:?}"
        );
        let topics: pb::ListTopicsResponse =
            good.call(ApiKey::ListTopics, &pb::Empty {}, &[]).await.ok();
        assert!(topics.topics.is_empty());
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn topic_administration() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Conn::connect(broker.local_addr()).await;
    assert_eq!(c.create_topic("orders", 0).await.queues.len(), 4);
    assert_eq!(c.create_topic("a.b_c-1", 2).await.queues.len(), 2);
    for bad in ["", "has space", "%RETRY%g", "slash/y"] {
        let answer = c
            .call(
                ApiKey::CreateTopic,
                &pb::CreateTopicRequest {
                    name: bad.to_owned(),
                    queues: 1,
                },
                &[],
            )
            .await;
        assert_eq!(answer.code, ErrorCode::InvalidTopicName, "{bad:?}");
    }
    let long = "x".repeat(128);
    let answer = c
        .call(
            ApiKey::CreateTopic,
            &pb::CreateTopicRequest {
                name: long,
                queues: 1,
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::InvalidTopicName);
    let answer = c
        .call(
            ApiKey::CreateTopic,
            &pb::CreateTopicRequest {
                name: "orders".to_owned(),
                queues: 1,
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::TopicAlreadyExists);

    c.produce(
        "orders",
        3,
        &batch("orders", &[("", "", "x"), ("", "", "y")]),
    )
    .await
    .ok::<pb::ProduceResponse>();
    c.wait_dispatched("orders", 3, 2).await;
    let list: pb::ListTopicsResponse = c.call(ApiKey::ListTopics, &pb::Empty {}, &[]).await.ok();
    let names: Vec<&str> = list.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["a.b_c-1", "orders"]);
    assert_eq!(list.topics[1].queues[3].max_offset, 2);

    let info: pb::TopicInfo = c
        .call(
            ApiKey::AddQueues,
            &pb::AddQueuesRequest {
                name: "orders".to_owned(),
                queues: 6,
            },
            &[],
        )
        .await
        .ok();
    assert_eq!(info.queues.len(), 6);
    let answer = c
        .call(
            ApiKey::AddQueues,
            &pb::AddQueuesRequest {
                name: "orders".to_owned(),
                queues: 5,
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::InvalidArgument);
    let answer = c
        .call(
            ApiKey::AddQueues,
            &pb::AddQueuesRequest {
                name: "none".to_owned(),
                queues: 5,
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::TopicNotFound);

    let route: pb::GetRouteResponse = c
        .call(
            ApiKey::GetRoute,
            &pb::GetRouteRequest {
                topic: "orders".to_owned(),
            },
            &[],
        )
        .await
        .ok();
    assert_eq!(route.queues.len(), 6);
    assert!(
        route.queues.iter().all(
            |q| q.broker_addr == broker.local_addr().to_string() && q.broker_name == "broker-a"
        )
    );

    c.call(
        ApiKey::DeleteTopic,
        &pb::DeleteTopicRequest {
            name: "orders".to_owned(),
        },
        &[],
    )
    .await
    .ok::<pb::Empty>();
    let answer = c
        .call(
            ApiKey::DescribeTopic,
            &pb::DescribeTopicRequest {
                name: "orders".to_owned(),
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::TopicNotFound);
    let answer = c
        .call(
            ApiKey::DeleteTopic,
            &pb::DeleteTopicRequest {
                name: "orders".to_owned(),
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::TopicNotFound);
    let answer = c
        .call(
            ApiKey::GetRoute,
            &pb::GetRouteRequest {
                topic: "orders".to_owned(),
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::TopicNotFound);

    // Topics survive a restart.
    broker.shutdown().await.unwrap();
    let broker = start(dir.path()).await;
    let mut c = Conn::connect(broker.local_addr()).await;
    let list: pb::ListTopicsResponse = c.call(ApiKey::ListTopics, &pb::Empty {}, &[]).await.ok();
    assert_eq!(list.topics.len(), 1);
    let route: pb::GetRouteResponse = c
        .call(
            ApiKey::GetRoute,
            &pb::GetRouteRequest {
                topic: "a.b_c-1".to_owned(),
            },
            &[],
        )
        .await
        .ok();
    assert_eq!(route.queues.len(), 2);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn clustering_assignment_hands_off_safely() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.local_addr();
    let mut admin = Conn::connect(addr).await;
    admin.create_topic("t", 6).await;
    let (mut a, mut b, mut cc) = (
        Conn::connect(addr).await,
        Conn::connect(addr).await,
        Conn::connect(addr).await,
    );

    assert_eq!(a.heartbeat("a", &[]).await, vec![0, 1, 2, 3, 4, 5]);
    // b joins: a still holds everything, so b waits.
    assert_eq!(b.heartbeat("b", &[]).await, Vec::<u32>::new());
    let mut owner_pull = pull_request("t", 4, 0, 0);
    owner_pull.group = "g".to_owned();
    owner_pull.member_id = "b".to_owned();
    assert_eq!(
        b.call(ApiKey::Pull, &owner_pull, &[]).await.code,
        ErrorCode::NotQueueOwner
    );
    // a is told to keep 0..3 and drops 3..6 on its next heartbeat.
    assert_eq!(a.heartbeat("a", &[0, 1, 2, 3, 4, 5]).await, vec![0, 1, 2]);
    assert_eq!(b.heartbeat("b", &[]).await, Vec::<u32>::new());
    assert_eq!(a.heartbeat("a", &[0, 1, 2]).await, vec![0, 1, 2]);
    assert_eq!(b.heartbeat("b", &[]).await, vec![3, 4, 5]);
    assert_eq!(
        b.call(ApiKey::Pull, &owner_pull, &[]).await.code,
        ErrorCode::None
    );

    // c joins: 0,1 / 2,3 / 4,5, each hand-off after the previous owner let go.
    assert_eq!(cc.heartbeat("c", &[]).await, Vec::<u32>::new());
    assert_eq!(a.heartbeat("a", &[0, 1, 2]).await, vec![0, 1]);
    assert_eq!(b.heartbeat("b", &[3, 4, 5]).await, vec![3]);
    assert_eq!(a.heartbeat("a", &[0, 1]).await, vec![0, 1]);
    assert_eq!(b.heartbeat("b", &[3]).await, vec![2, 3]);
    assert_eq!(cc.heartbeat("c", &[]).await, vec![4, 5]);
    let mut owners = std::collections::HashMap::new();
    let describe: pb::DescribeGroupResponse = admin
        .call(
            ApiKey::DescribeGroup,
            &pb::DescribeGroupRequest {
                group: "g".to_owned(),
            },
            &[],
        )
        .await
        .ok();
    assert_eq!(describe.members.len(), 3);
    for q in &describe.queues {
        owners.insert(q.queue_id, q.owner.clone());
    }
    assert_eq!(owners.len(), 6);
    assert_eq!(owners[&0], "a");
    assert_eq!(owners[&2], "b");
    assert_eq!(owners[&5], "c");

    // a's connection closes: its queues go to the others at once.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = b.heartbeat("b", &[2, 3]).await;
        if got == vec![0, 1, 2] {
            break;
        }
        assert!(Instant::now() < deadline, "b never got a's queues: {got:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // b had to give up 3; once it does, c gets 3..6.
    assert_eq!(b.heartbeat("b", &[0, 1, 2]).await, vec![0, 1, 2]);
    assert_eq!(cc.heartbeat("c", &[4, 5]).await, vec![3, 4, 5]);

    // LeaveGroup: c's queues go to b.
    cc.call(
        ApiKey::LeaveGroup,
        &pb::LeaveGroupRequest {
            group: "g".to_owned(),
            member_id: "c".to_owned(),
        },
        &[],
    )
    .await
    .ok::<pb::Empty>();
    assert_eq!(b.heartbeat("b", &[0, 1, 2]).await, vec![0, 1, 2, 3, 4, 5]);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn offsets_persist_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.local_addr();
    let mut c = Conn::connect(addr).await;
    c.create_topic("t", 2).await;
    c.produce(
        "t",
        0,
        &batch("t", &[("", "", "1"), ("", "", "2"), ("", "", "3")]),
    )
    .await
    .ok::<pb::ProduceResponse>();
    c.wait_dispatched("t", 0, 3).await;

    let fetch = |queue_id, start_from: pb::StartFrom| pb::FetchOffsetRequest {
        group: "g".to_owned(),
        topic: "t".to_owned(),
        queue_id,
        start_from: start_from as i32,
    };
    let r: pb::FetchOffsetResponse = c
        .call(ApiKey::FetchOffset, &fetch(0, pb::StartFrom::Latest), &[])
        .await
        .ok();
    assert_eq!((r.offset, r.committed), (3, false));
    let r: pb::FetchOffsetResponse = c
        .call(ApiKey::FetchOffset, &fetch(0, pb::StartFrom::Earliest), &[])
        .await
        .ok();
    assert_eq!((r.offset, r.committed), (0, false));

    let mut member = Conn::connect(addr).await;
    member.heartbeat("m", &[]).await;
    let commit = pb::CommitOffsetsRequest {
        group: "g".to_owned(),
        member_id: "m".to_owned(),
        offsets: vec![pb::OffsetEntry {
            topic: "t".to_owned(),
            queue_id: 0,
            offset: 2,
        }],
    };
    member
        .call(ApiKey::CommitOffsets, &commit, &[])
        .await
        .ok::<pb::Empty>();
    // Another member's commit for a queue m owns is ignored.
    let foreign = pb::CommitOffsetsRequest {
        member_id: "x".to_owned(),
        offsets: vec![pb::OffsetEntry {
            topic: "t".to_owned(),
            queue_id: 0,
            offset: 1,
        }],
        ..commit.clone()
    };
    c.call(ApiKey::CommitOffsets, &foreign, &[])
        .await
        .ok::<pb::Empty>();
    let r: pb::FetchOffsetResponse = c
        .call(ApiKey::FetchOffset, &fetch(0, pb::StartFrom::Latest), &[])
        .await
        .ok();
    assert_eq!((r.offset, r.committed), (2, true));

    let describe: pb::DescribeGroupResponse = c
        .call(
            ApiKey::DescribeGroup,
            &pb::DescribeGroupRequest {
                group: "g".to_owned(),
            },
            &[],
        )
        .await
        .ok();
    let q0 = describe.queues.iter().find(|q| q.queue_id == 0).unwrap();
    assert_eq!(
        (
            q0.max_offset,
            q0.committed_offset,
            q0.lag,
            q0.owner.as_str()
        ),
        (3, 2, 1, "m")
    );
    let groups: pb::ListGroupsResponse = c.call(ApiKey::ListGroups, &pb::Empty {}, &[]).await.ok();
    assert_eq!(groups.groups, vec!["g".to_owned()]);
    let answer = c
        .call(
            ApiKey::DescribeGroup,
            &pb::DescribeGroupRequest {
                group: "none".to_owned(),
            },
            &[],
        )
        .await;
    assert_eq!(answer.code, ErrorCode::GroupNotFound);

    // Reset is refused while the group has live members.
    let reset = pb::ResetOffsetsRequest {
        group: "g".to_owned(),
        topic: "t".to_owned(),
        to: Some(pb::reset_offsets_request::To::Earliest(true)),
    };
    assert_eq!(
        c.call(ApiKey::ResetOffsets, &reset, &[]).await.code,
        ErrorCode::InvalidArgument
    );
    drop(member);
    let deadline = Instant::now() + Duration::from_secs(5);
    let reset_response: pb::ResetOffsetsResponse = loop {
        let answer = c.call(ApiKey::ResetOffsets, &reset, &[]).await;
        if answer.code == ErrorCode::None {
            break answer.ok();
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(reset_response.offsets.len(), 2);
    assert!(reset_response.offsets.iter().all(|e| e.offset == 0));
    let latest = pb::ResetOffsetsRequest {
        to: Some(pb::reset_offsets_request::To::Latest(true)),
        ..reset.clone()
    };
    let r: pb::ResetOffsetsResponse = c.call(ApiKey::ResetOffsets, &latest, &[]).await.ok();
    assert_eq!(r.offsets[0].offset, 3);
    let by_time = pb::ResetOffsetsRequest {
        to: Some(pb::reset_offsets_request::To::TimestampMs(0)),
        ..reset.clone()
    };
    let r: pb::ResetOffsetsResponse = c.call(ApiKey::ResetOffsets, &by_time, &[]).await.ok();
    assert_eq!(r.offsets[0].offset, 0);
    let commit = pb::CommitOffsetsRequest {
        offsets: vec![
            pb::OffsetEntry {
                topic: "t".to_owned(),
                queue_id: 1,
                offset: 0,
            },
            pb::OffsetEntry {
                topic: "t".to_owned(),
                queue_id: 0,
                offset: 2,
            },
        ],
        ..commit
    };
    c.call(ApiKey::CommitOffsets, &commit, &[])
        .await
        .ok::<pb::Empty>();

    // A second broker on the same directory is refused.
    let err = Broker::start(config(dir.path())).await.unwrap_err();
    assert!(matches!(err, BrokerError::DataDirLocked { .. }), "{err:?}");
    assert!(err.to_string().contains("another weir process"), "{err}");

    // Offsets survive a restart.
    broker.shutdown().await.unwrap();
    let broker = start(dir.path()).await;
    let mut c = Conn::connect(broker.local_addr()).await;
    let r: pb::FetchOffsetResponse = c
        .call(ApiKey::FetchOffset, &fetch(0, pb::StartFrom::Latest), &[])
        .await
        .ok();
    assert_eq!((r.offset, r.committed), (2, true));
    c.wait_dispatched("t", 0, 3).await;
    let (response, messages) = c.pull(pull_request("t", 0, 2, 0)).await;
    assert_eq!(
        (response.count, messages[0].body.as_deref()),
        (1, Some(&b"3"[..]))
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn registers_with_a_remote_name_server() {
    let ns_dir = tempfile::tempdir().unwrap();
    let name_server = start(ns_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        name_servers: vec![name_server.local_addr().to_string()],
        broker_name: "broker-b".to_owned(),
        ..config(dir.path())
    })
    .await
    .unwrap();
    let mut c = Conn::connect(broker.local_addr()).await;
    c.create_topic("remote", 3).await;
    let mut ns = Conn::connect(name_server.local_addr()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let route: pb::GetRouteResponse = loop {
        let answer = ns
            .call(
                ApiKey::GetRoute,
                &pb::GetRouteRequest {
                    topic: "remote".to_owned(),
                },
                &[],
            )
            .await;
        if answer.code == ErrorCode::None {
            break answer.ok();
        }
        assert!(Instant::now() < deadline, "route never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(route.queues.len(), 3);
    assert_eq!(route.queues[0].broker_name, "broker-b");
    assert_eq!(route.queues[0].broker_addr, broker.local_addr().to_string());
    broker.shutdown().await.unwrap();
    name_server.shutdown().await.unwrap();
}

/// Produce throughput over one connection: 100-byte messages in batches of 1000, 32 batches
/// in flight. Run with `cargo test -p weir-broker --release -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn produce_throughput_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        segment_size: 256 << 20,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let mut c = Conn::connect(broker.local_addr()).await;
    c.create_topic("bench", 1).await;
    let body = "x".repeat(100);
    let messages: Vec<(&str, &str, &str)> = (0..1000).map(|_| ("", "", body.as_str())).collect();
    let one = batch("bench", &messages);
    let request = pb::ProduceRequest {
        topic: "bench".to_owned(),
        queue_id: 0,
    };
    let mut frame = BytesMut::new();
    let batches = 2000u32;
    let window = 32u32;
    let started = Instant::now();
    let (mut sent, mut received) = (0u32, 0u32);
    while received < batches {
        frame.clear();
        while sent < batches && sent - received < window {
            encode_frame(
                &Header::request(ApiKey::Produce, sent),
                &request,
                &one,
                &mut frame,
            );
            sent += 1;
        }
        if !frame.is_empty() {
            c.stream.write_all(&frame).await.unwrap();
        }
        let (_, answer) = c.recv_answer().await;
        assert_eq!(answer.code, ErrorCode::None);
        received += 1;
    }
    let elapsed = started.elapsed();
    let rate = f64::from(batches) * 1000.0 / elapsed.as_secs_f64();
    eprintln!(
        "{} messages in {elapsed:?}: {rate:.0} msgs/s",
        batches * 1000
    );
    broker.shutdown().await.unwrap();
}

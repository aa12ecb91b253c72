//! The client against a scripted fake server: request matching, connection failure, batching.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder};
use weir_client::connection::{Connection, ConnectionConfig};
use weir_client::{ClientError, Compression, ErrorCode, Message, Producer, ProducerConfig};
use weir_proto::batch::Entry;
use weir_proto::frame::Frame;
use weir_proto::{ApiKey, FrameCodec, OutFrame, pb};

/// Reads frames from `socket` until it closes or `n` frames came.
async fn read_frames(socket: &mut TcpStream, n: usize) -> Vec<Frame> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    while frames.len() < n {
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        if frames.len() >= n || socket.read_buf(&mut buf).await.unwrap() == 0 {
            break;
        }
    }
    frames
}

async fn write_frame(socket: &mut TcpStream, frame: OutFrame) {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(frame, &mut buf).unwrap();
    socket.write_all(&buf).await.unwrap();
}

#[tokio::test]
async fn responses_out_of_order_reach_their_requests() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let frames = read_frames(&mut socket, 3).await;
        // Answer in reverse order; the second request gets an error.
        for frame in frames.iter().rev() {
            let name = format!("{}", String::from_utf8_lossy(&frame.payload));
            let out = if name == "b" {
                let header = frame.header.response(ErrorCode::TopicNotFound);
                OutFrame::new(
                    header,
                    &pb::ErrorResponse {
                        message: "no b".into(),
                    },
                    Bytes::new(),
                )
            } else {
                let header = frame.header.response(ErrorCode::None);
                OutFrame::new(
                    header,
                    &pb::TopicInfo {
                        name,
                        queues: vec![],
                    },
                    Bytes::new(),
                )
            };
            write_frame(&mut socket, out).await;
        }
        // Keep the connection open until the client is done.
        let _ = read_frames(&mut socket, 1).await;
    });
    let conn = Connection::connect(&addr, ConnectionConfig::default())
        .await
        .unwrap();
    let ask = |name: &'static str| {
        let conn = conn.clone();
        async move {
            conn.call::<_, pb::TopicInfo>(
                ApiKey::DescribeTopic,
                &pb::DescribeTopicRequest { name: name.into() },
                Bytes::from_static(name.as_bytes()),
                None,
            )
            .await
            .map(|(info, _)| info.name)
        }
    };
    let (a, b, c) = tokio::join!(ask("a"), ask("b"), ask("c"));
    assert_eq!(a.unwrap(), "a");
    assert_eq!(c.unwrap(), "c");
    match b {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::TopicNotFound);
            assert_eq!(message, "no b");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lost_connection_fails_pending_requests_retriably() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = read_frames(&mut socket, 2).await;
        drop(socket);
    });
    let conn = Connection::connect(&addr, ConnectionConfig::default())
        .await
        .unwrap();
    let one = conn.request(ApiKey::ListTopics, Bytes::new(), Bytes::new());
    let two = conn.request(ApiKey::ListGroups, Bytes::new(), Bytes::new());
    let (one, two) = tokio::join!(one, two);
    for result in [one, two] {
        let e = result.unwrap_err();
        assert!(matches!(e, ClientError::ConnectionLost { .. }), "{e:?}");
        assert!(e.is_retriable());
    }
    assert!(conn.is_closed());
}

#[tokio::test]
async fn requests_time_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = read_frames(&mut socket, 100).await;
    });
    let config = ConnectionConfig {
        request_timeout: Duration::from_millis(100),
        ..ConnectionConfig::default()
    };
    let conn = Connection::connect(&addr, config).await.unwrap();
    let e = conn
        .request(ApiKey::ListTopics, Bytes::new(), Bytes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout { .. }) && e.is_retriable(),
        "{e:?}"
    );
}

/// The message counts of the entries a fake broker received.
fn counts(entries: &Mutex<Vec<Bytes>>) -> Vec<usize> {
    entries
        .lock()
        .iter()
        .map(|e| Entry::parse(e).unwrap().record_count() as usize)
        .collect()
}

/// A fake broker and name server: one topic with one queue; answers produce requests and
/// keeps the entry each carried (checked: exactly one entry, its batch CRC right).
async fn fake_broker(batches: Arc<Mutex<Vec<Bytes>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let own = addr.clone();
    tokio::spawn(async move {
        let mut log_end = 1000u64;
        let mut queue_end = 0u64;
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        loop {
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                let header = frame.header.response(ErrorCode::None);
                let out = match ApiKey::from_u16(frame.header.api_key) {
                    Some(ApiKey::GetRoute) => OutFrame::new(
                        header,
                        &pb::GetRouteResponse {
                            groups: vec![],
                            topic: "t".into(),
                            queues: vec![pb::QueueRoute {
                                queue_id: 0,
                                broker_name: "b".into(),
                                broker_addr: own.clone(),
                            }],
                        },
                        Bytes::new(),
                    ),
                    Some(ApiKey::Produce) => {
                        let entry = Entry::parse(&frame.payload).unwrap();
                        assert_eq!(entry.len(), frame.payload.len(), "one entry per request");
                        entry.verify_batch().unwrap();
                        let count = entry.record_count() as usize;
                        batches.lock().push(frame.payload.clone().freeze());
                        let response = pb::ProduceResponse {
                            queue_offset: queue_end,
                            commit_log_offset: log_end,
                            count: count as u32,
                            store_timestamp: 1,
                            broker_name: "b".into(),
                            ..pb::ProduceResponse::default()
                        };
                        queue_end += count as u64;
                        log_end += frame.payload.len() as u64;
                        OutFrame::new(header, &response, Bytes::new())
                    }
                    _ => panic!("unexpected request {}", frame.header.api_key),
                };
                let mut wire = BytesMut::new();
                codec.encode(out, &mut wire).unwrap();
                socket.write_all(&wire).await.unwrap();
            }
            if socket.read_buf(&mut buf).await.unwrap() == 0 {
                return;
            }
        }
    });
    addr
}

#[tokio::test]
async fn concurrent_sends_share_batches_one_frame_each() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let addr = fake_broker(batches.clone()).await;
    let mut config = ProducerConfig::new([addr]);
    config.batch_max_messages = 10;
    config.linger = Duration::from_millis(200);
    let producer = Producer::new(config).unwrap();
    producer.route("t").await.unwrap();
    let handles: Vec<_> = (0..100)
        .map(|i| producer.send_async(Message::new("t", format!("message {i:03}"))))
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    assert_eq!(counts(&batches), vec![10; 10], "ten frames of ten messages");
    // Queue offsets follow the send order; an id names its batch's entry and its index.
    let entry_len = batches.lock()[0].len() as u64;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.queue_offset, i as u64);
        assert_eq!(result.queue_id, 0);
        assert_eq!(result.message_id.index, (i % 10) as u32);
    }
    assert_eq!(results[0].message_id.commit_log_offset, 1000);
    assert_eq!(results[9].message_id.commit_log_offset, 1000);
    assert_eq!(results[10].message_id.commit_log_offset, 1000 + entry_len);
    producer.close().await;
}

#[tokio::test]
async fn a_batch_send_is_one_entry_with_one_completion() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let addr = fake_broker(batches.clone()).await;
    let mut config = ProducerConfig::new([addr]);
    config.linger = Duration::from_secs(5);
    let producer = Producer::new(config).unwrap();
    producer.route("t").await.unwrap();
    // A message waiting in the queue's open batch is sent first: order is kept.
    let single = producer.send_async(Message::new("t", "before"));
    // Over 16 KiB: the entry is written to the socket from its own buffer.
    let padding = "x".repeat(40);
    let messages: Vec<Message> = (0..500)
        .map(|i| Message::new("t", format!("batch {i:03} {padding}")))
        .collect();
    let sent = producer.send_batch(&messages).await.unwrap();
    assert_eq!(single.await.unwrap().queue_offset, 0);
    assert_eq!(counts(&batches), vec![1, 500]);
    assert!(batches.lock()[1].len() > 16 * 1024);
    let stored = weir_proto::batch::Message::decode_entry(&batches.lock()[1]).unwrap();
    assert_eq!(stored[499].body.as_deref(), messages[499].body().get(..));
    assert_eq!(sent.len(), 500);
    assert_eq!(sent.queue_offset(), 1);
    let last = sent.get(499).unwrap();
    assert_eq!(last.queue_offset, 500);
    assert_eq!(last.message_id.index, 499);
    assert_eq!(last.message_id.commit_log_offset, sent.commit_log_offset());
    assert!(sent.get(500).is_none());
    assert_eq!(
        producer.sent_bytes(),
        batches.lock().iter().map(|e| e.len() as u64).sum::<u64>()
    );
    // Messages of another topic cannot join the batch.
    let mixed = [Message::new("t", "a"), Message::new("u", "b")];
    assert!(producer.send_batch(&mixed).await.is_err());
    producer.close().await;
}

#[tokio::test]
async fn every_codec_compresses_the_batch_the_broker_gets() {
    for codec in Compression::ALL {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let addr = fake_broker(batches.clone()).await;
        let producer = Producer::new(ProducerConfig::new([addr]).with_compression(codec)).unwrap();
        producer.route("t").await.unwrap();
        let body = "{\"level\":\"info\",\"message\":\"a compressible log line\"}";
        let messages: Vec<Message> = (0..200).map(|_| Message::new("t", body)).collect();
        producer.send_batch(&messages).await.unwrap();
        let entry = batches.lock()[0].clone();
        let parsed = Entry::parse(&entry).unwrap();
        assert_eq!(parsed.compression(), codec);
        if codec != Compression::None {
            assert!(
                entry.len() < 200 * body.len() / 2,
                "{codec}: {} bytes",
                entry.len()
            );
        }
        let decoded = weir_proto::batch::Message::decode_entry(&entry).unwrap();
        assert_eq!(decoded.len(), 200);
        assert!(
            decoded
                .iter()
                .all(|m| m.body.as_deref() == Some(body.as_bytes()))
        );
        producer.close().await;
    }
}

#[tokio::test]
async fn linger_sends_a_partial_batch() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let addr = fake_broker(batches.clone()).await;
    let mut config = ProducerConfig::new([addr]);
    config.linger = Duration::from_millis(20);
    let producer = Producer::new(config).unwrap();
    let sent = producer.send(Message::new("t", "one")).await.unwrap();
    assert_eq!(sent.queue_offset, 0);
    assert_eq!(counts(&batches), vec![1]);
}

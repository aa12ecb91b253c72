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
use weir_client::{ClientError, ErrorCode, Message, Producer, ProducerConfig};
use weir_proto::frame::Frame;
use weir_proto::record::Records;
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

/// A fake broker and name server: one topic with one queue; answers produce requests and
/// records how many records each carried.
async fn fake_broker(batches: Arc<Mutex<Vec<usize>>>) -> String {
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
                        let count = Records::new(&frame.payload).filter(|r| r.is_ok()).count();
                        batches.lock().push(count);
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
    assert_eq!(*batches.lock(), vec![10; 10], "ten frames of ten records");
    // Queue offsets follow the send order; ids advance by each record's length.
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.queue_offset, i as u64);
        assert_eq!(result.queue_id, 0);
    }
    let record_len =
        results[1].message_id.commit_log_offset - results[0].message_id.commit_log_offset;
    assert!(record_len > 0);
    for pair in results.windows(2) {
        assert_eq!(
            pair[1].message_id.commit_log_offset - pair[0].message_id.commit_log_offset,
            record_len
        );
    }
    assert_eq!(results[0].message_id.commit_log_offset, 1000);
    producer.close().await;
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
    assert_eq!(*batches.lock(), vec![1]);
}

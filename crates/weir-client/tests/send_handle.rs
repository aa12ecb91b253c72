//! `send_async` handles against a scripted fake broker: a batch that fails retriably is sent
//! again by the handle, and every message of an acknowledged batch gets its own id.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::{Decoder, Encoder};
use weir_client::{ErrorCode, Message, Producer, ProducerConfig};
use weir_proto::batch::Entry;
use weir_proto::{ApiKey, FrameCodec, OutFrame, pb};

/// A fake broker with one queue that answers the first `fail_first` produce requests with
/// `Busy` (retriable) and stores the rest; counts produce requests in `produces`.
async fn flaky_broker(fail_first: usize, produces: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let own = addr.clone();
    tokio::spawn(async move {
        let mut queue_end = 0u64;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            'conn: loop {
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    let ok = frame.header.response(ErrorCode::None);
                    let out = match ApiKey::from_u16(frame.header.api_key) {
                        Some(ApiKey::GetRoute) => OutFrame::new(
                            ok,
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
                        Some(ApiKey::Produce)
                            if produces.fetch_add(1, Ordering::SeqCst) < fail_first =>
                        {
                            OutFrame::new(
                                frame.header.response(ErrorCode::Busy),
                                &pb::ErrorResponse {
                                    message: "busy".into(),
                                },
                                Bytes::new(),
                            )
                        }
                        Some(ApiKey::Produce) => {
                            let count = Entry::parse(&frame.payload).unwrap().record_count();
                            let response = pb::ProduceResponse {
                                queue_offset: queue_end,
                                commit_log_offset: 5000 + queue_end * 1000,
                                count,
                                store_timestamp: 1,
                                broker_name: "b".into(),
                                ..pb::ProduceResponse::default()
                            };
                            queue_end += count as u64;
                            OutFrame::new(ok, &response, Bytes::new())
                        }
                        _ => panic!("unexpected request {}", frame.header.api_key),
                    };
                    let mut wire = BytesMut::new();
                    codec.encode(out, &mut wire).unwrap();
                    if socket.write_all(&wire).await.is_err() {
                        break 'conn;
                    }
                }
                match socket.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(_) => {}
                }
            }
        }
    });
    addr
}

fn config(addr: String) -> ProducerConfig {
    let mut config = ProducerConfig::new([addr]);
    config.retry_backoff = Duration::from_millis(10);
    config.linger = Duration::from_millis(20);
    config
}

#[tokio::test]
async fn a_batch_refused_as_busy_is_retried_by_its_handles() {
    let produces = Arc::new(AtomicUsize::new(0));
    let addr = flaky_broker(1, produces.clone()).await;
    let producer = Producer::new(config(addr)).unwrap();
    producer.route("t").await.unwrap();
    let handles: Vec<_> = (0..5)
        .map(|i| producer.send_async(Message::new("t", format!("m{i}"))))
        .collect();
    let mut offsets = Vec::new();
    for handle in handles {
        offsets.push(handle.await.expect("sent after a retry").queue_offset);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4], "each message stored once");
    assert!(
        produces.load(Ordering::SeqCst) >= 2,
        "the refused batch went again"
    );
    producer.close().await;
}

#[tokio::test]
async fn handles_of_one_batch_get_consecutive_offsets_and_distinct_ids() {
    let produces = Arc::new(AtomicUsize::new(0));
    let addr = flaky_broker(0, produces.clone()).await;
    let producer = Producer::new(config(addr)).unwrap();
    producer.route("t").await.unwrap();
    let handles: Vec<_> = (0..50)
        .map(|i| producer.send_async(Message::new("t", format!("message {i:02}"))))
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    assert_eq!(produces.load(Ordering::SeqCst), 1, "one batch");
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.queue_offset, i as u64);
        assert_eq!(result.topic, "t");
    }
    // One entry: every id names it, each with the message's index in the batch.
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.message_id.commit_log_offset, 5000);
        assert_eq!(result.message_id.index, i as u32);
    }
    producer.close().await;
}

#[tokio::test]
async fn a_dropped_handle_still_sends_its_message() {
    let produces = Arc::new(AtomicUsize::new(0));
    let addr = flaky_broker(0, produces.clone()).await;
    let producer = Producer::new(config(addr)).unwrap();
    producer.route("t").await.unwrap();
    drop(producer.send_async(Message::new("t", "fire and forget")));
    producer.flush().await;
    assert_eq!(produces.load(Ordering::SeqCst), 1);
    producer.close().await;
}

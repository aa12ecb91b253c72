//! A producer whose route names a follower of the broker group: the follower answers
//! `NOT_LEADER` naming the leader; the batch goes there at once with the same producer id and
//! sequence, and so do the batches after it.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::{Decoder, Encoder};
use weir_client::{ErrorCode, Message, Producer, ProducerConfig};
use weir_proto::batch::Entry;
use weir_proto::{ApiKey, FrameCodec, OutFrame, pb};

/// What a fake replica saw: (api key, producer id, base sequence) of each request.
type Seen = Arc<Mutex<Vec<(u16, i64, i32)>>>;

/// A fake replica of group `g` with one topic `t` of one queue. As `leader` it stores
/// produce requests; otherwise it answers them `NOT_LEADER` with `hint` as the message. Its
/// routes name `route_to` (or itself).
async fn replica(
    leader: bool,
    hint: Arc<Mutex<String>>,
    route_to: Arc<Mutex<Option<String>>>,
) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let own = addr.clone();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let hint = hint.clone();
            let own = own.clone();
            let route_to = route_to.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut codec = FrameCodec::default();
                let mut buf = BytesMut::new();
                let mut queue_end = 0u64;
                loop {
                    while let Some(frame) = codec.decode(&mut buf).unwrap() {
                        let ok = frame.header.response(ErrorCode::None);
                        let out = match ApiKey::from_u16(frame.header.api_key) {
                            Some(ApiKey::GetRoute) => OutFrame::new(
                                ok,
                                &pb::GetRouteResponse {
                                    topic: "t".into(),
                                    queues: vec![pb::QueueRoute {
                                        queue_id: 0,
                                        broker_name: "g".into(),
                                        broker_addr: route_to
                                            .lock()
                                            .clone()
                                            .unwrap_or_else(|| own.clone()),
                                    }],
                                    groups: vec![],
                                },
                                Bytes::new(),
                            ),
                            Some(ApiKey::InitProducerId) => OutFrame::new(
                                ok,
                                &pb::InitProducerIdResponse { producer_id: 7 },
                                Bytes::new(),
                            ),
                            Some(ApiKey::Produce) => {
                                let entry = Entry::parse(&frame.payload).unwrap();
                                log.lock().push((
                                    frame.header.api_key,
                                    entry.producer_id(),
                                    entry.base_sequence(),
                                ));
                                if leader {
                                    let count = entry.record_count();
                                    let response = pb::ProduceResponse {
                                        queue_offset: queue_end,
                                        commit_log_offset: 0,
                                        count,
                                        store_timestamp: 1,
                                        broker_name: "g".into(),
                                        ..pb::ProduceResponse::default()
                                    };
                                    queue_end += u64::from(count);
                                    OutFrame::new(ok, &response, Bytes::new())
                                } else {
                                    OutFrame::new(
                                        frame.header.response(ErrorCode::NotLeader),
                                        &pb::ErrorResponse {
                                            message: hint.lock().clone(),
                                        },
                                        Bytes::new(),
                                    )
                                }
                            }
                            other => panic!("unexpected request {other:?}"),
                        };
                        let mut wire = BytesMut::new();
                        codec.encode(out, &mut wire).unwrap();
                        if socket.write_all(&wire).await.is_err() {
                            return;
                        }
                    }
                    match socket.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_not_leader_answer_sends_the_batch_to_the_named_leader_with_its_sequence() {
    let (leader, at_leader) = replica(true, Arc::default(), Arc::default()).await;
    let hint = Arc::new(Mutex::new(format!("not the leader; leader={leader}")));
    let (follower, at_follower) = replica(false, hint, Arc::default()).await;
    let mut config = ProducerConfig::new([follower.clone()]);
    config.idempotent = true;
    let producer = Producer::new(config).unwrap();
    let first = producer.send(Message::new("t", "one")).await.unwrap();
    assert_eq!(first.queue_offset, 0);
    // Refused by the follower once, stored by the leader with the same id and sequence.
    assert_eq!(at_follower.lock().as_slice(), &[(1, 7, 0)]);
    assert_eq!(at_leader.lock().as_slice(), &[(1, 7, 0)]);
    // The route now names the leader: later sends go there directly.
    let route = producer.route("t").await.unwrap();
    assert_eq!(route.queues[0].broker_addr, leader);
    producer.send(Message::new("t", "two")).await.unwrap();
    assert_eq!(
        at_follower.lock().len(),
        1,
        "the follower is not asked again"
    );
    assert_eq!(at_leader.lock().len(), 2);
    producer.close().await;
}

#[tokio::test]
async fn a_not_leader_answer_without_a_name_asks_the_name_servers_again() {
    let (leader, at_leader) = replica(true, Arc::default(), Arc::default()).await;
    let no_hint = Arc::new(Mutex::new("not the leader; leader unknown".to_owned()));
    let (follower, at_follower) = replica(false, no_hint, Arc::default()).await;
    // A fake name server routing to the follower first, then (after an election) the leader.
    let route_to = Arc::new(Mutex::new(Some(follower.clone())));
    let (name_server, _) = replica(false, Arc::default(), route_to.clone()).await;
    let mut config = ProducerConfig::new([name_server]);
    config.retry_backoff = std::time::Duration::from_millis(10);
    let producer = Producer::new(config).unwrap();
    assert_eq!(
        producer.route("t").await.unwrap().queues[0].broker_addr,
        follower
    );
    *route_to.lock() = Some(leader.clone());
    producer.send(Message::new("t", "one")).await.unwrap();
    assert_eq!(at_follower.lock().len(), 1, "refused once by the follower");
    assert_eq!(at_leader.lock().len(), 1, "then stored by the leader");
    assert_eq!(
        producer.route("t").await.unwrap().queues[0].broker_addr,
        leader
    );
    producer.close().await;
}

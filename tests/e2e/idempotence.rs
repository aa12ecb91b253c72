//! The idempotent producer against the real binary: a batch sent again with the same producer
//! id and sequences (as after a lost acknowledgement) is stored once and answered with the
//! original position, also after a broker crash between the two sends; a gap in sequences is
//! refused; the client's idempotent mode stamps ids and sequences.

use bytes::Bytes;
use weir_client::connection::{Connection, ConnectionConfig};
use weir_client::{ClientError, ErrorCode, Message, Producer, ProducerConfig, ReceivedMessage};
use weir_proto::batch::{self, BatchBuilder, BatchOptions, Compression, RecordFields};
use weir_proto::{ApiKey, pb};

use crate::harness::Node;

async fn connect(node: &Node) -> Connection {
    Connection::connect(&node.addr, ConnectionConfig::default())
        .await
        .unwrap()
}

/// A batch of `bodies` from `producer_id`, sequences counting up from `first_seq`.
fn batch(topic: &str, producer_id: u64, first_seq: u32, bodies: &[&str]) -> Bytes {
    batch_due(topic, producer_id, first_seq, bodies, 0)
}

/// Like [`batch`], each record due at `deliver_at` (ms since the epoch; 0 for at once).
fn batch_due(
    topic: &str,
    producer_id: u64,
    first_seq: u32,
    bodies: &[&str],
    deliver_at: i64,
) -> Bytes {
    let options = BatchOptions {
        producer_id: producer_id as i64,
        producer_epoch: 0,
        base_sequence: first_seq as i32,
        flags: 0,
    };
    let mut builder = BatchBuilder::new(topic, options).unwrap();
    let at = deliver_at.to_string();
    let due = [(batch::HEADER_DELIVER_MS, Some(at.as_bytes()))];
    let headers = if deliver_at == 0 { &due[..0] } else { &due[..] };
    for body in bodies {
        let fields = RecordFields {
            timestamp: 1,
            key: None,
            value: Some(body.as_bytes()),
        };
        builder.push(&fields, headers.iter().copied()).unwrap();
    }
    builder.finish(Compression::None).unwrap().freeze()
}

async fn produce(
    conn: &Connection,
    topic: &str,
    payload: Bytes,
) -> Result<pb::ProduceResponse, ClientError> {
    let request = pb::ProduceRequest {
        topic: topic.to_owned(),
        queue_id: 0,
    };
    conn.call::<_, pb::ProduceResponse>(ApiKey::Produce, &request, payload, None)
        .await
        .map(|(response, _)| response)
}

/// A fresh producer id from the broker.
pub(crate) async fn init_producer_id(conn: &Connection) -> u64 {
    let (response, _) = conn
        .call::<_, pb::InitProducerIdResponse>(
            ApiKey::InitProducerId,
            &pb::Empty {},
            Bytes::new(),
            None,
        )
        .await
        .unwrap();
    response.producer_id
}

async fn read_queue(conn: &Connection, topic: &str) -> Vec<ReceivedMessage> {
    ReceivedMessage::decode_all(&pull(conn, topic).await, "").unwrap()
}

/// The records of queue 0 of `topic`, as the broker sends them.
async fn pull(conn: &Connection, topic: &str) -> Bytes {
    let request = pb::PullRequest {
        topic: topic.to_owned(),
        queue_id: 0,
        max_messages: 1000,
        max_bytes: 4 << 20,
        ..Default::default()
    };
    let (_, payload) = conn
        .call::<_, pb::PullResponse>(ApiKey::Pull, &request, Bytes::new(), None)
        .await
        .unwrap();
    payload
}

/// The raw records of queue 0 of `topic` (with their producer ids and sequences).
async fn read_records(conn: &Connection, topic: &str) -> Vec<batch::Message> {
    batch::Message::decode_all(&pull(conn, topic).await).unwrap()
}

fn position(r: &pb::ProduceResponse) -> (u64, u64, u32) {
    (r.queue_offset, r.commit_log_offset, r.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_is_stored_once_even_across_a_broker_crash() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "ledger", "--queues", "1"]);
    let plain = node
        .client_command(&["produce", "ledger", "--body", "plain"])
        .output()
        .unwrap();
    assert!(plain.status.success(), "{plain:?}");
    let conn = connect(&node).await;
    let producer_id = init_producer_id(&conn).await;
    assert_ne!(producer_id, 0);

    let first = batch("ledger", producer_id, 0, &["a", "b", "c"]);
    let stored = produce(&conn, "ledger", first.clone()).await.unwrap();
    assert_eq!(position(&stored), (1, stored.commit_log_offset, 3));
    // The acknowledgement was "lost": the same bytes again.
    let again = produce(&conn, "ledger", first.clone()).await.unwrap();
    assert_eq!(position(&again), position(&stored));
    // A retry of part of the batch gets the position of its own first record.
    let tail = batch("ledger", producer_id, 2, &["c"]);
    let tail_again = produce(&conn, "ledger", tail.clone()).await.unwrap();
    assert_eq!(tail_again.queue_offset, 3);

    // The broker crashes before the producer hears back; the producer resends after it is up.
    drop(conn);
    node.kill();
    node.restart();
    let conn = connect(&node).await;
    let after_crash = produce(&conn, "ledger", first).await.unwrap();
    assert_eq!(position(&after_crash), position(&stored));
    let tail_after_crash = produce(&conn, "ledger", tail).await.unwrap();
    assert_eq!(position(&tail_after_crash), position(&tail_again));

    // The next batch goes on; a gap is refused with a typed error.
    let next = produce(&conn, "ledger", batch("ledger", producer_id, 3, &["d"]))
        .await
        .unwrap();
    assert_eq!(next.queue_offset, 4);
    let gap = produce(&conn, "ledger", batch("ledger", producer_id, 9, &["x"])).await;
    match gap {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::OutOfOrderSequence), "{e}"),
        Ok(r) => panic!("a gap was stored: {r:?}"),
    }

    let bodies: Vec<_> = read_queue(&conn, "ledger")
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(bodies, ["plain", "a", "b", "c", "d"]);
    // Ids are never handed out twice, also across the crash.
    assert!(init_producer_id(&conn).await > producer_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_older_than_the_window_is_never_stored_again() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "ledger", "--queues", "1"]);
    let conn = connect(&node).await;
    let producer_id = init_producer_id(&conn).await;
    for seq in 0..8 {
        produce(&conn, "ledger", batch("ledger", producer_id, seq, &["m"]))
            .await
            .unwrap();
    }
    // Within the last five batches: the original position.
    let recent = produce(&conn, "ledger", batch("ledger", producer_id, 6, &["m"]))
        .await
        .unwrap();
    assert_eq!(recent.queue_offset, 6);
    // Older: refused with a typed error.
    let old = produce(&conn, "ledger", batch("ledger", producer_id, 0, &["m"])).await;
    match old {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::DuplicateSequence), "{e}"),
        Ok(r) => panic!("an old duplicate was stored: {r:?}"),
    }

    drop(conn);
    node.stop();
    node.restart();
    let conn = connect(&node).await;
    let recent = produce(&conn, "ledger", batch("ledger", producer_id, 6, &["m"]))
        .await
        .unwrap();
    assert_eq!(recent.queue_offset, 6);
    // After a restart, batches stored back to back are remembered as one run, so an old
    // duplicate may be recognised with its original position; either way it is not stored.
    match produce(&conn, "ledger", batch("ledger", producer_id, 0, &["m"])).await {
        Ok(r) => assert_eq!(r.queue_offset, 0),
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::DuplicateSequence), "{e}"),
    }
    assert_eq!(read_queue(&conn, "ledger").await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_stamps_ids_and_sequences() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "events", "--queues", "1"]);
    let mut config = ProducerConfig::new([node.addr.clone()]);
    config.idempotent = true;
    let producer = Producer::new(config).unwrap();
    let mut handles = Vec::new();
    for i in 0..50 {
        handles.push(producer.send_async(Message::new("events", format!("e{i}"))));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    producer.close().await;

    let conn = connect(&node).await;
    let stored = read_queue(&conn, "events").await;
    assert_eq!(stored.len(), 50);
    let raw = {
        let request = pb::PullRequest {
            topic: "events".to_owned(),
            queue_id: 0,
            max_messages: 1000,
            max_bytes: 4 << 20,
            ..Default::default()
        };
        conn.call::<_, pb::PullResponse>(ApiKey::Pull, &request, Bytes::new(), None)
            .await
            .unwrap()
            .1
    };
    let records = batch::Message::decode_all(&raw).unwrap();
    let producer_id = records[0].producer_id;
    assert!(producer_id >= 0);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.producer_id, producer_id);
        assert_eq!(r.sequence, i as i32);
    }
}

/// Like [`batch`], each record due `delay_ms` from now.
fn delayed_batch(
    topic: &str,
    producer_id: u64,
    first_seq: u32,
    bodies: &[&str],
    delay_ms: i64,
) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    batch_due(topic, producer_id, first_seq, bodies, now + delay_ms)
}

/// Pulls queue 0 of `topic` until it holds `count` messages or 10 s pass.
async fn wait_for(conn: &Connection, topic: &str, count: usize) -> Vec<ReceivedMessage> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = read_queue(conn, topic).await;
        if got.len() >= count || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_delayed_batch_is_delivered_once_and_the_producer_goes_on_after_a_crash() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "later", "--queues", "1"]);
    let conn = connect(&node).await;
    let producer_id = init_producer_id(&conn).await;
    let first = delayed_batch("later", producer_id, 0, &["a", "b"], 1_500);
    let stored = produce(&conn, "later", first.clone()).await.unwrap();
    let again = produce(&conn, "later", first.clone()).await.unwrap();
    assert_eq!(position(&again), position(&stored));
    // Sequences go on with a plain batch; a delivered copy must not disturb them later.
    let plain = produce(&conn, "later", batch("later", producer_id, 2, &["c"]))
        .await
        .unwrap();
    assert_eq!(plain.queue_offset, 0);
    let bodies = |messages: &[ReceivedMessage]| -> Vec<String> {
        messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    };
    let delivered = wait_for(&conn, "later", 3).await;
    assert_eq!(bodies(&delivered), ["c", "a", "b"]);
    let identities: Vec<(i64, i32)> = read_records(&conn, "later")
        .await
        .iter()
        .map(|m| (m.producer_id, m.sequence))
        .collect();
    // The producer's own write keeps its identity, the broker's delivered copies carry none.
    assert_eq!(identities, [(producer_id as i64, 2), (-1, -1), (-1, -1)]);

    // After a crash the table is rebuilt from the log: the resent delayed batch is still a
    // duplicate, the delivered copies are not taken for the producer's writes, and the next
    // batch is stored. (Delivery progress is saved every 500 ms; a crash right after a delivery
    // may repeat it, at least once: let it be saved first.)
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    drop(conn);
    node.kill();
    node.restart();
    let conn = connect(&node).await;
    let after_crash = produce(&conn, "later", first).await;
    match after_crash {
        Ok(r) => assert_eq!(position(&r), position(&stored)),
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::DuplicateSequence), "{e}"),
    }
    let next = produce(&conn, "later", batch("later", producer_id, 3, &["d"]))
        .await
        .unwrap();
    assert_eq!(next.queue_offset, 3);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        bodies(&read_queue(&conn, "later").await),
        ["c", "a", "b", "d"]
    );
}

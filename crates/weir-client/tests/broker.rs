//! The client against a real in-process broker: produce, push consumers sharing a group,
//! per-key order, broadcast, pull consumer and admin; headers, compression and batches
//! read from their middle.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_broker::{Broker, BrokerConfig};
use weir_client::consumer::ConsumerConfig;
use weir_client::{
    Admin, Compression, ConsumeMode, ConsumeResult, Message, Producer, ProducerConfig,
    PullConsumer, PushConsumer, ReceivedMessage, ResetTo, SharedConsumer, SharedConsumerConfig,
    StartFrom,
};

struct TestBroker {
    broker: Broker,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn broker() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let addr = broker.local_addr().to_string();
    TestBroker {
        broker,
        addr,
        _dir: dir,
    }
}

fn consumer_config(addr: &str, group: &str, topic: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new([addr], group, topic);
    config.start_from = StartFrom::Earliest;
    config.max_wait = Duration::from_millis(500);
    config.commit_interval = Duration::from_millis(200);
    config
}

/// Waits until `done` holds, up to `secs` seconds.
async fn wait_until(secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `per_key` messages for each of `keys` keys, bodies "key:seq", in order per key.
async fn produce_keyed(producer: &Producer, topic: &str, keys: usize, per_key: usize) {
    let mut handles = Vec::new();
    for seq in 0..per_key {
        for key in 0..keys {
            let message = Message::new(topic, format!("k{key}:{seq}")).with_key(format!("k{key}"));
            handles.push(producer.send_async(message));
        }
    }
    for handle in handles {
        handle.await.unwrap();
    }
}

fn parse(body: &[u8]) -> (String, usize) {
    let text = std::str::from_utf8(body).unwrap();
    let (key, seq) = text.split_once(':').unwrap();
    (key.to_owned(), seq.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_share_a_topic_in_key_order() {
    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    admin.create_topic("orders", 4).await.unwrap();
    let producer = Producer::new(ProducerConfig::new([b.addr.clone()])).unwrap();
    produce_keyed(&producer, "orders", 10, 30).await;

    // Every message as received, in receipt order: (member, key, seq).
    let seen: Arc<Mutex<Vec<(usize, String, usize)>>> = Arc::default();
    let start = |member: usize| {
        let seen = seen.clone();
        PushConsumer::start(
            consumer_config(&b.addr, "g", "orders"),
            move |m: &ReceivedMessage| {
                let (key, seq) = parse(&m.body);
                seen.lock().push((member, key, seq));
                ConsumeResult::Success
            },
        )
    };
    let first = start(0).await.unwrap();
    wait_until(10, || seen.lock().len() >= 50).await;
    let second = start(1).await.unwrap();
    // More messages while the group rebalances.
    produce_keyed(&producer, "orders", 10, 30).await;
    // Queues of "orders" only: push consumers also hold their group's retry queue.
    let orders = |c: &PushConsumer| {
        c.assigned()
            .into_iter()
            .filter(|q| q.topic == "orders")
            .count()
    };
    wait_until(20, || {
        orders(&first) > 0 && orders(&second) > 0 && orders(&first) + orders(&second) == 4
    })
    .await;
    // And more once the queues are split between the two.
    produce_keyed(&producer, "orders", 10, 30).await;
    wait_until(20, || seen.lock().len() >= 900).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 900, "each message exactly once");
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (_, key, seq) in &seen {
        per_key.entry(key.clone()).or_default().push(*seq);
    }
    assert_eq!(per_key.len(), 10);
    for (key, seqs) in per_key {
        // Three rounds of 0..30 per key, each in order.
        let expected: Vec<usize> = (0..30).chain(0..30).chain(0..30).collect();
        assert_eq!(seqs, expected, "order of key {key}");
    }
    assert!(
        seen.iter().any(|(m, ..)| *m == 1),
        "the second member consumed too"
    );

    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    let description = admin.describe_group("g").await.unwrap();
    assert!(description.members.is_empty());
    let lag: u64 = description.queues.iter().map(|q| q.lag).sum();
    assert_eq!(lag, 0, "everything committed: {description:?}");
    producer.close().await;
    b.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcast_members_each_get_everything() {
    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    admin.create_topic("news", 3).await.unwrap();
    let producer = Producer::new(ProducerConfig::new([b.addr.clone()])).unwrap();
    for i in 0..90 {
        producer.send_async(Message::new("news", format!("n{i}")));
    }
    producer.flush().await;

    let counts: Arc<Mutex<BTreeMap<usize, usize>>> = Arc::default();
    let mut members = Vec::new();
    for member in 0..2 {
        let counts = counts.clone();
        let mut config = consumer_config(&b.addr, "bc", "news");
        config.mode = ConsumeMode::Broadcast;
        let consumer = PushConsumer::start_batch(config, move |batch: &[ReceivedMessage]| {
            *counts.lock().entry(member).or_default() += batch.len();
            ConsumeResult::Success
        })
        .await
        .unwrap();
        members.push(consumer);
    }
    wait_until(10, || counts.lock().values().sum::<usize>() >= 180).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*counts.lock(), BTreeMap::from([(0, 90), (1, 90)]));
    for member in members {
        member.shutdown().await.unwrap();
    }
    b.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_consumer_commits_only_what_was_polled() {
    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    admin.create_topic("jobs", 1).await.unwrap();
    let producer = Producer::new(ProducerConfig::new([b.addr.clone()])).unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let sent = producer
            .send(
                Message::new("jobs", format!("j{i}"))
                    .with_key("same")
                    .with_tag("T"),
            )
            .await
            .unwrap();
        ids.push(sent.message_id);
    }

    let mut consumer = PullConsumer::subscribe(consumer_config(&b.addr, "pc", "jobs"))
        .await
        .unwrap();
    let first = consumer.poll_max(Duration::from_secs(5), 7).await.unwrap();
    assert_eq!(first.len(), 7);
    assert_eq!(first[0].id.as_ref(), Some(&ids[0]));
    consumer.close().await.unwrap();
    let description = admin.describe_group("pc").await.unwrap();
    assert_eq!(description.queues[0].committed_offset, 7);

    // The next member continues where the first stopped.
    let mut consumer = PullConsumer::subscribe(consumer_config(&b.addr, "pc", "jobs"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    while rest.len() < 13 {
        rest.extend(consumer.poll(Duration::from_secs(5)).await.unwrap());
    }
    assert_eq!(rest[0].body, "j7");
    assert_eq!(rest.len(), 13);
    let low = consumer.pull("jobs", 0, 3, 2).await.unwrap();
    assert_eq!(low.messages.len(), 2);
    assert_eq!(low.messages[0].body, "j3");
    consumer.close().await.unwrap();

    // Admin lookups.
    let message = admin.get_message(&ids[4]).await.unwrap();
    assert_eq!(message.body, "j4");
    assert_eq!(message.tag, "T");
    let found = admin.find_by_key("jobs", "same", 0).await.unwrap();
    assert_eq!(found.len(), 20);
    let reset = admin
        .reset_offsets("pc", "jobs", ResetTo::Earliest)
        .await
        .unwrap();
    assert_eq!(reset[0].offset, 0);
    // One-way sends are stored though nobody waits for them.
    producer
        .send_oneway(Message::new("jobs", "fire-and-forget"))
        .unwrap();
    let mut stored = 0;
    for _ in 0..100 {
        stored = admin.describe_topic("jobs").await.unwrap().queues[0].max_offset;
        if stored == 21 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored, 21);
    let e = admin.describe_topic("missing").await.unwrap_err();
    assert_eq!(e.code(), Some(weir_client::ErrorCode::TopicNotFound));
    b.broker.shutdown().await.unwrap();
}

/// Polls `consumer` until `n` messages came (or 10 s passed).
async fn poll_n(consumer: &mut PullConsumer, n: usize) -> Vec<ReceivedMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        got.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_binary_and_null_headers_survive_produce_and_consume() {
    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    admin.create_topic("h", 1).await.unwrap();
    let producer = Producer::new(ProducerConfig::new([b.addr.clone()])).unwrap();
    let binary = Bytes::from_static(&[0xFF, 0x00, 0xC3, 0x28]);
    let message = Message::new("h", "body")
        .with_key_bytes(Bytes::from_static(&[0x80, 0x81]))
        .with_tag("T")
        .with_property("trace", "one")
        .with_header("trace", Some(binary.clone()))
        .with_header("gone", None)
        .with_property("trace", "three");
    let sent = producer.send(message).await.unwrap();

    let mut consumer = PullConsumer::subscribe(consumer_config(&b.addr, "hg", "h"))
        .await
        .unwrap();
    let got = poll_n(&mut consumer, 1).await;
    consumer.close().await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.id.as_ref(), Some(&sent.message_id));
    assert_eq!(m.key_bytes.as_deref(), Some(&[0x80, 0x81][..]));
    assert_eq!(m.tag, "T");
    let headers: Vec<(&str, Option<&[u8]>)> = m
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    assert_eq!(
        headers,
        [
            ("TAGS", Some(&b"T"[..])),
            ("trace", Some(&b"one"[..])),
            ("trace", Some(&binary[..])),
            ("gone", None),
            ("trace", Some(&b"three"[..])),
        ]
    );
    assert_eq!(m.property("trace"), Some("one"));
    // The same through a lookup by id.
    let looked_up = admin.get_message(&sent.message_id).await.unwrap();
    assert_eq!(looked_up.headers, m.headers);
    producer.close().await;
    b.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_end_to_end() {
    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    for codec in Compression::ALL {
        let topic = format!("c-{codec}");
        admin.create_topic(&topic, 1).await.unwrap();
        let config = ProducerConfig::new([b.addr.clone()]).with_compression(codec);
        let producer = Producer::new(config).unwrap();
        let messages: Vec<Message> = (0..300)
            .map(|i| {
                Message::new(
                    topic.as_str(),
                    format!("{{\"n\":{i},\"log\":\"compressible\"}}"),
                )
                .with_key(format!("k{}", i % 7))
                .with_tag(if i % 2 == 0 { "even" } else { "odd" })
            })
            .collect();
        let sent = producer.send_batch(&messages).await.unwrap();
        assert_eq!(sent.len(), 300);
        // Single sends too, batched by the accumulator.
        for i in 300..310 {
            producer.send_async(Message::new(topic.as_str(), format!("{{\"n\":{i}}}")));
        }
        producer.flush().await;

        let mut consumer = PullConsumer::subscribe(consumer_config(&b.addr, "cg", &topic))
            .await
            .unwrap();
        let got = poll_n(&mut consumer, 310).await;
        consumer.close().await.unwrap();
        assert_eq!(got.len(), 310, "{codec}");
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.queue_offset, i as u64, "{codec}");
            assert!(
                std::str::from_utf8(&m.body)
                    .unwrap()
                    .starts_with(&format!("{{\"n\":{i}")),
                "{codec}"
            );
        }
        assert_eq!(got[7].key, "k0");
        assert_eq!(got[3].tag, "odd");
        // Lookups read the compressed entries too.
        let third = sent.get(3).unwrap();
        let m = admin.get_message(&third.message_id).await.unwrap();
        assert_eq!(m.queue_offset, 3, "{codec}");
        let found = admin.find_by_key(&topic, "k3", 0).await.unwrap();
        assert!(
            !found.is_empty() && found.iter().all(|m| m.key == "k3"),
            "{codec}"
        );
        producer.close().await;
    }
    b.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_from_the_middle_of_a_batch_starts_at_that_offset() {
    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    admin.create_topic("mid", 1).await.unwrap();
    let producer = Producer::new(ProducerConfig::new([b.addr.clone()])).unwrap();
    let messages: Vec<Message> = (0..10)
        .map(|i| Message::new("mid", format!("m{i}")).with_tag(if i % 3 == 0 { "A" } else { "B" }))
        .collect();
    producer.send_batch(&messages).await.unwrap();

    let page = admin.pull("mid", 0, 4, 32).await.unwrap();
    let bodies: Vec<&[u8]> = page.messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"m4"[..], b"m5", b"m6", b"m7", b"m8", b"m9"]);
    assert_eq!(page.messages[0].queue_offset, 4);
    assert_eq!(page.messages[0].id.as_ref().unwrap().index, 4);
    assert_eq!(page.next_offset, 10);

    // A tag filter keeps exactly the matching messages of a batch that mixes tags.
    let mut config = consumer_config(&b.addr, "tags", "mid");
    config.tag_expression = "A".into();
    let mut consumer = PullConsumer::subscribe(config).await.unwrap();
    let got = poll_n(&mut consumer, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut more = consumer.poll(Duration::from_millis(300)).await.unwrap();
    consumer.close().await.unwrap();
    let mut all = got;
    all.append(&mut more);
    let offsets: Vec<u64> = all.iter().map(|m| m.queue_offset).collect();
    assert_eq!(offsets, [0, 3, 6, 9]);
    assert!(all.iter().all(|m| m.tag == "A"));
    producer.close().await;
    b.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_receivers_get_each_message_of_a_batch_once() {
    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    admin.create_topic("work", 1).await.unwrap();
    let producer = Producer::new(ProducerConfig::new([b.addr.clone()])).unwrap();
    let messages: Vec<Message> = (0..10)
        .map(|i| Message::new("work", format!("w{i}")).with_key(format!("k{i}")))
        .collect();
    producer.send_batch(&messages).await.unwrap();

    let mut config = SharedConsumerConfig::new([b.addr.clone()], "workers", "work");
    config.max_wait = Duration::from_millis(300);
    let consumer = SharedConsumer::new(config).unwrap();
    // Deliveries of one batch, a few at a time: each names its message, which the client
    // picks out of the batch's entry.
    let mut got = Vec::new();
    for _ in 0..20 {
        let received = consumer.receive(3, Duration::from_secs(30)).await.unwrap();
        assert!(received.len() <= 3);
        for m in &received {
            assert_eq!(m.attempt, 1);
            let body = String::from_utf8_lossy(&m.message.body).into_owned();
            assert_eq!(m.message.key, format!("k{}", &body[1..]));
            got.push((m.message.queue_offset, body));
        }
        consumer.ack(&received).await.unwrap();
        if got.len() >= 10 {
            break;
        }
    }
    got.sort();
    let expected: Vec<(u64, String)> = (0..10).map(|i| (i, format!("w{i}"))).collect();
    assert_eq!(got, expected);
    producer.close().await;
    b.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_sequences_batches_from_their_first_message() {
    use weir_client::connection::{Connection, ConnectionConfig};
    use weir_proto::{ApiKey, pb};

    let b = broker().await;
    let admin = Admin::new([b.addr.clone()]).unwrap();
    admin.create_topic("seq", 1).await.unwrap();
    let mut config = ProducerConfig::new([b.addr.clone()]);
    config.idempotent = true;
    let producer = Producer::new(config).unwrap();
    let messages: Vec<Message> = (0..10)
        .map(|i| Message::new("seq", format!("b{i}")))
        .collect();
    producer.send_batch(&messages).await.unwrap();
    for i in 0..5 {
        producer.send_async(Message::new("seq", format!("s{i}")));
    }
    producer.flush().await;
    producer.send_batch(&messages[..3]).await.unwrap();

    let conn = Connection::connect(&b.addr, ConnectionConfig::default())
        .await
        .unwrap();
    let request = pb::PullRequest {
        topic: "seq".into(),
        queue_id: 0,
        offset: 0,
        max_messages: 100,
        ..pb::PullRequest::default()
    };
    let (_, payload) = conn
        .call::<_, pb::PullResponse>(ApiKey::Pull, &request, Bytes::new(), None)
        .await
        .unwrap();
    let stored = weir_proto::batch::Message::decode_all(&payload).unwrap();
    assert_eq!(stored.len(), 18);
    let producer_id = stored[0].producer_id;
    assert!(producer_id >= 0);
    for (i, m) in stored.iter().enumerate() {
        assert_eq!(m.producer_id, producer_id);
        assert_eq!(m.sequence, i as i32, "message {i}");
        assert_eq!(m.queue_offset, i as u64);
    }
    producer.close().await;
    b.broker.shutdown().await.unwrap();
}

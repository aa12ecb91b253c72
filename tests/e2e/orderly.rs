//! Orderly consumption: keyed messages processed in order per key across a consumer crash, and
//! a failing message retried in place, then dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, StartFrom};

use crate::harness::Node;

const KEYS: u32 = 20;
const SEQS: u32 = 200;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// (key, seq) lines printed by one consumer process, in the order it printed them.
type Seen = Arc<Mutex<Vec<(u32, u32)>>>;

fn spawn_consumer(node: &Node) -> (Child, Seen) {
    let mut child = node
        .client_command(&[
            "consume",
            "ordered",
            "--group",
            "og",
            "--orderly",
            "--from",
            "earliest",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen: Seen = Arc::default();
    let out = child.stdout.take().unwrap();
    let sink = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            let v: Value = serde_json::from_str(&line).unwrap();
            let body = v["body"].as_str().unwrap();
            let (k, s) = body.split_once(':').unwrap();
            sink.lock()
                .unwrap()
                .push((k.parse().unwrap(), s.parse().unwrap()));
        }
    });
    (child, seen)
}

#[test]
fn keyed_messages_stay_in_order_across_a_consumer_kill() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "ordered", "--queues", "4"]);
    let mut consumers: Vec<(Child, Seen)> = (0..3).map(|_| spawn_consumer(&node)).collect();
    // Let the three settle their queues before messages flow.
    std::thread::sleep(Duration::from_secs(2));

    let addr = node.addr.clone();
    let producer = std::thread::spawn(move || {
        runtime().block_on(async {
            let mut config = ProducerConfig::new([addr]);
            config.linger = Duration::ZERO;
            let producer = Producer::new(config).unwrap();
            for seq in 0..SEQS {
                for key in 0..KEYS {
                    let message = Message::new("ordered", format!("{key}:{seq}"))
                        .with_key(format!("key-{key}"));
                    producer.send(message).await.unwrap();
                }
                // About 4 s of sending, so the kill lands mid-stream.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            producer.close().await;
        });
    });

    let total = |consumers: &[(Child, Seen)]| -> usize {
        consumers.iter().map(|(_, s)| s.lock().unwrap().len()).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while total(&consumers) < 1000 {
        assert!(Instant::now() < deadline, "consumers too slow to start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL one that has work, mid-stream.
    let victim = consumers
        .iter()
        .position(|(_, s)| !s.lock().unwrap().is_empty())
        .unwrap();
    assert!(!producer.is_finished(), "the kill must land mid-stream");
    consumers[victim].0.kill().unwrap();
    consumers[victim].0.wait().unwrap();
    producer.join().unwrap();

    let distinct = |consumers: &[(Child, Seen)]| -> BTreeSet<(u32, u32)> {
        consumers
            .iter()
            .flat_map(|(_, s)| s.lock().unwrap().clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(25);
    while distinct(&consumers).len() < (KEYS * SEQS) as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {} messages arrived",
            distinct(&consumers).len(),
            KEYS * SEQS
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut processors_per_key: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, (_, seen)) in consumers.iter().enumerate() {
        let seen = seen.lock().unwrap();
        let mut last: BTreeMap<u32, u32> = BTreeMap::new();
        for &(key, seq) in seen.iter() {
            if let Some(prev) = last.insert(key, seq) {
                assert!(
                    seq > prev,
                    "consumer {i} processed key {key} seq {seq} after {prev}"
                );
            } else {
                *processors_per_key.entry(key).or_default() += 1;
            }
        }
    }
    // Duplicates are only the killed consumer's uncommitted suffix, processed again.
    let all: usize = total(&consumers);
    assert!(
        all - (KEYS * SEQS) as usize <= 32 * 4 * 2,
        "too many duplicates: {all}"
    );
    assert!(
        processors_per_key.values().any(|n| *n > 1),
        "the killed consumer's keys moved to another"
    );
    for (mut child, _) in consumers {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn a_failing_message_is_retried_in_place_then_dead_lettered() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "steps", "--queues", "1"]);
    let rt = runtime();
    rt.block_on(async {
        let mut config = ProducerConfig::new([node.addr.clone()]);
        config.linger = Duration::ZERO;
        let producer = Producer::new(config).unwrap();
        for i in 0..8 {
            producer
                .send(Message::new("steps", format!("m{i}")).with_key("k"))
                .await
                .unwrap();
        }
        producer.close().await;

        let calls: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let log = calls.clone();
        let mut config = ConsumerConfig::new([node.addr.clone()], "steps-g", "steps");
        config.orderly = true;
        config.start_from = StartFrom::Earliest;
        config.orderly_retry_pause = Duration::from_millis(300);
        config.orderly_max_attempts = 3;
        let consumer = PushConsumer::start(config, move |m| {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let mut log = log.lock().unwrap();
            let tries = log.iter().filter(|(b, _)| *b == body).count();
            log.push((body.clone(), Instant::now()));
            match body.as_str() {
                // Fails twice, then succeeds.
                "m2" if tries < 2 => ConsumeResult::Retry,
                // Always fails: dead-lettered after 3 calls.
                "m5" => ConsumeResult::Retry,
                _ => ConsumeResult::Success,
            }
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !calls.lock().unwrap().iter().any(|(b, _)| b == "m7") {
            assert!(Instant::now() < deadline, "{:?}", calls.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        consumer.shutdown().await.unwrap();
        let calls = calls.lock().unwrap().clone();
        let order: Vec<&str> = calls.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(
            order,
            [
                "m0", "m1", "m2", "m2", "m2", "m3", "m4", "m5", "m5", "m5", "m6", "m7"
            ]
        );
        // Each retry waited for the pause.
        for pair in calls.windows(2).filter(|w| w[0].0 == w[1].0) {
            assert!(pair[1].1 - pair[0].1 >= Duration::from_millis(250));
        }
    });
    let dead = node.ok(&[
        "consume",
        "%DLQ%steps-g",
        "--group",
        "dlq-reader",
        "--from",
        "earliest",
        "-n",
        "1",
        "--format",
        "json",
        "--idle-timeout",
        "10s",
    ]);
    let v: Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(v["body"], "m5");
    assert_eq!(v["key"], "k");
    assert_eq!(v["properties"]["ORIGIN_TOPIC"], "steps");
    assert_eq!(v["properties"]["RECONSUME_TIMES"], "3");
}

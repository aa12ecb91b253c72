//! Orderly consumption: keyed messages processed in order per key across a consumer crash, and
//! a failing message retried in place, then dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, StartFrom};

use crate::harness::{Background, Node};

const KEYS: u32 = 20;
const SEQS: u32 = 200;
/// How long a processed message may stay uncommitted: the consumers' commit interval (1 s) plus
/// slack for a busy machine.
const UNCOMMITTED_WINDOW_US: u64 = 2_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One message processed by one consumer process.
#[derive(Debug, Clone, Copy)]
struct Processed {
    /// Which consumer (index of its process).
    consumer: usize,
    key: u32,
    seq: u32,
    /// When its handler printed it (`consumed_at_us`, the same wall clock for every process).
    at_us: u64,
}

fn spawn_consumer(node: &Node) -> Background {
    node.background(&[
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
}

/// What `consumers[consumer]` processed so far, in the order it printed it.
fn processed(consumer: usize, process: &Background) -> Vec<Processed> {
    process
        .lines()
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let (key, seq) = v["body"].as_str().unwrap().split_once(':').unwrap();
            Processed {
                consumer,
                key: key.parse().unwrap(),
                seq: seq.parse().unwrap(),
                at_us: v["consumed_at_us"].as_u64().unwrap(),
            }
        })
        .collect()
}

/// Waits until the group's queues of `ordered` have `n` distinct owners.
fn wait_for_owners(node: &Node, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Until the first member joins, the group does not exist.
        let out = node.cli(&["group", "describe", "og"]);
        let table = String::from_utf8_lossy(&out.stdout);
        let owners: BTreeSet<&str> = table
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("ordered "))
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|owner| *owner != "-")
            .collect();
        if owners.len() == n {
            return;
        }
        assert!(Instant::now() < deadline, "group never settled:\n{table}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks one key's processings, merged from every consumer in time order: the first owner
/// starts at seq 0; an owner processes the key's messages one after the other, each once; the
/// key moves to another owner only after its owner's last processing (no two consumers hold it
/// at overlapping times) and never back; the next owner goes on with the first message not
/// processed, or, only when the previous owner was the killed one, with a suffix of what it
/// processed (its offset not yet committed) and then everything after it again in order. That
/// suffix is only what the killed one processed in its last commit interval (plus slack for a
/// busy machine) before it died at `died_us`. Returns the owners in turn.
fn check_key_order(key: u32, history: &[Processed], victim: usize, died_us: u64) -> Vec<usize> {
    let mut owners: Vec<usize> = Vec::new();
    let mut last: Option<Processed> = None;
    for &p in history {
        match last {
            None => assert_eq!(p.seq, 0, "key {key} starts at seq {}", p.seq),
            Some(prev) if prev.consumer == p.consumer => assert_eq!(
                p.seq,
                prev.seq + 1,
                "key {key}: consumer {} processed seq {} after {}",
                p.consumer,
                p.seq,
                prev.seq
            ),
            Some(prev) => {
                assert!(
                    !owners.contains(&p.consumer),
                    "key {key}: consumer {} processed it again after consumer {} (seq {} at {} µs, \
                     after seq {} at {} µs): two consumers held the key at once",
                    p.consumer,
                    prev.consumer,
                    p.seq,
                    p.at_us,
                    prev.seq,
                    prev.at_us
                );
                assert!(
                    p.at_us > prev.at_us,
                    "key {key}: consumers {} and {} processed it at the same time",
                    prev.consumer,
                    p.consumer
                );
                if prev.consumer == victim {
                    assert!(
                        p.seq <= prev.seq + 1,
                        "key {key}: seq {} skipped to {} after the kill",
                        prev.seq,
                        p.seq
                    );
                    if let Some(first_again) = history
                        .iter()
                        .find(|q| q.consumer == victim && q.seq == p.seq)
                    {
                        assert!(
                            died_us - first_again.at_us <= UNCOMMITTED_WINDOW_US,
                            "key {key}: seq {} was processed {} ms before the kill, yet not \
                             committed",
                            p.seq,
                            (died_us - first_again.at_us) / 1000
                        );
                    }
                } else {
                    assert_eq!(
                        p.seq,
                        prev.seq + 1,
                        "key {key}: a live owner handed seq {} over, the next took {}",
                        prev.seq,
                        p.seq
                    );
                }
            }
        }
        if owners.last() != Some(&p.consumer) {
            owners.push(p.consumer);
        }
        last = Some(p);
    }
    assert_eq!(last.map(|p| p.seq), Some(SEQS - 1), "key {key} incomplete");
    owners
}

#[test]
fn keyed_messages_stay_in_order_across_a_consumer_kill() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "ordered", "--queues", "4"]);
    let mut consumers: Vec<Background> = (0..3).map(|_| spawn_consumer(&node)).collect();
    // The three share the queues before messages flow.
    wait_for_owners(&node, 3);

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

    let total =
        |consumers: &[Background]| -> usize { consumers.iter().map(Background::line_count).sum() };
    let deadline = Instant::now() + Duration::from_secs(20);
    while total(&consumers) < 1000 {
        assert!(Instant::now() < deadline, "consumers too slow to start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL one that has work, mid-stream.
    let victim = consumers.iter().position(|c| c.line_count() > 0).unwrap();
    assert!(!producer.is_finished(), "the kill must land mid-stream");
    consumers[victim].kill();
    producer.join().unwrap();

    let all = |consumers: &[Background]| -> Vec<Processed> {
        consumers
            .iter()
            .enumerate()
            .flat_map(|(i, c)| processed(i, c))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let distinct: BTreeSet<(u32, u32)> =
            all(&consumers).iter().map(|p| (p.key, p.seq)).collect();
        if distinct.len() == (KEYS * SEQS) as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} messages arrived",
            distinct.len(),
            KEYS * SEQS
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a late duplicate show up, if one were coming.
    std::thread::sleep(Duration::from_millis(500));

    // Every consumer's processing log merged in time order (a stable sort keeps each
    // consumer's own order among equal times).
    let mut merged = all(&consumers);
    merged.sort_by_key(|p| p.at_us);
    let mut per_key: BTreeMap<u32, Vec<Processed>> = BTreeMap::new();
    for p in merged.iter().copied() {
        per_key.entry(p.key).or_default().push(p);
    }
    assert_eq!(per_key.len(), KEYS as usize);
    let died_us = merged
        .iter()
        .filter(|p| p.consumer == victim)
        .map(|p| p.at_us)
        .max()
        .unwrap();
    let mut moved_from_victim = 0;
    for (key, history) in &per_key {
        let owners = check_key_order(*key, history, victim, died_us);
        if owners.len() > 1 && owners[0] == victim {
            moved_from_victim += 1;
        }
    }
    assert!(
        moved_from_victim > 0,
        "the killed consumer's keys moved to another"
    );
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
    let v = crate::shared::dead_letter(&node, "steps-g");
    assert_eq!(v["body"], "m5");
    assert_eq!(v["key"], "k");
    assert_eq!(v["properties"]["ORIGIN_TOPIC"], "steps");
    assert_eq!(v["properties"]["RECONSUME_TIMES"], "3");
}

//! Consumer groups against a real node, through the client crate and the CLI: exactly-once
//! delivery in a stable group, per-key order, takeover after a consumer is killed, broadcast,
//! and long-polling latency.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_client::{
    Admin, ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, PushConsumerConfig,
    StartFrom,
};

use crate::harness::{Node, signal};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// (queue, offset, key, sequence within the key) of one delivered message.
type Delivery = (u32, u64, String, u64);

async fn start_collector(
    addr: &str,
    group: &str,
    topic: &str,
    sink: Arc<Mutex<Vec<Delivery>>>,
) -> PushConsumer {
    let mut config = PushConsumerConfig::new([addr], group, topic);
    config.start_from = StartFrom::Earliest;
    config.commit_interval = Duration::from_millis(200);
    PushConsumer::start(config, move |m| {
        let body = String::from_utf8_lossy(&m.body);
        let seq = body
            .rsplit(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        sink.lock()
            .expect("sink")
            .push((m.queue_id, m.queue_offset, m.key.clone(), seq));
        ConsumeResult::Success
    })
    .await
    .expect("start consumer")
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_stable_group_of_three_gets_every_message_exactly_once_in_key_order() {
    const MESSAGES: u64 = 100_000;
    const KEYS: u64 = 50;
    let node = Node::start(&[]);
    let addr = node.addr.clone();
    runtime().block_on(async move {
        let admin = Admin::new([addr.as_str()]).expect("admin");
        admin.create_topic("orders", 4).await.expect("create topic");
        let sink = Arc::new(Mutex::new(Vec::new()));
        let mut consumers = Vec::new();
        for _ in 0..3 {
            consumers.push(start_collector(&addr, "billing", "orders", Arc::clone(&sink)).await);
        }
        // Let the group settle: every queue owned by exactly one member, every member busy.
        wait_for(
            "the queues spread over the group",
            Duration::from_secs(30),
            || {
                // The group's own %RETRY% queue is assigned too; count the topic's queues.
                let orders = |c: &PushConsumer| -> Vec<u32> {
                    c.assigned()
                        .into_iter()
                        .filter(|q| q.topic == "orders")
                        .map(|q| q.queue_id)
                        .collect()
                };
                let owned: Vec<u32> = consumers.iter().flat_map(orders).collect();
                owned.len() == 4
                    && owned.iter().collect::<BTreeSet<_>>().len() == 4
                    && consumers.iter().all(|c| !orders(c).is_empty())
            },
        )
        .await;

        let producer = Producer::new(ProducerConfig::new([addr.as_str()])).expect("producer");
        let mut handles = Vec::with_capacity(MESSAGES as usize);
        for i in 0..MESSAGES {
            let key = format!("customer-{}", i % KEYS);
            let body = format!("{key}:{}", i / KEYS);
            handles.push(producer.send_async(Message::new("orders", body).with_key(key)));
        }
        for h in handles {
            h.await.expect("acknowledged");
        }
        wait_for("every message delivered", Duration::from_secs(120), || {
            sink.lock().expect("sink").len() as u64 >= MESSAGES
        })
        .await;
        // Anything extra would arrive right behind; give it a moment to show up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for c in consumers {
            c.shutdown().await.expect("shutdown");
        }

        let delivered = sink.lock().expect("sink").clone();
        assert_eq!(delivered.len() as u64, MESSAGES, "exactly once in total");
        let mut per_queue: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (queue, offset, key, seq) in &delivered {
            per_queue.entry(*queue).or_default().push(*offset);
            per_key.entry(key.clone()).or_default().push(*seq);
        }
        for (queue, mut offsets) in per_queue {
            offsets.sort_unstable();
            let contiguous = offsets.iter().enumerate().all(|(i, o)| *o == i as u64);
            assert!(contiguous, "queue {queue} has gaps or duplicates");
        }
        assert_eq!(per_key.len() as u64, KEYS);
        for (key, seqs) in per_key {
            let in_order = seqs.iter().enumerate().all(|(i, s)| *s == i as u64);
            assert!(
                in_order && seqs.len() as u64 == MESSAGES / KEYS,
                "key {key}: {} messages, in order: {in_order}",
                seqs.len()
            );
        }
        let described = admin.describe_group("billing").await.expect("describe");
        assert!(described.queues.iter().all(|q| q.lag == 0), "{described:?}");
    });
}

/// Reads a child's stdout lines into a shared list, in a thread.
/// Collects a child's stdout lines as they come; the reader ends at end of file, so joining
/// it after the child exited means every line it printed is in.
fn collect_lines(
    child: &mut std::process::Child,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    (lines, reader)
}

fn queue_and_offset(line: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(line).expect("json line");
    (
        v["queue"].as_u64().expect("queue"),
        v["offset"].as_u64().expect("offset"),
    )
}

#[test]
fn a_killed_consumer_has_its_queues_taken_over() {
    const MESSAGES: usize = 30_000;
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "tasks", "--queues", "4"]);
    let spawn_consumer = || {
        let mut child = node
            .client_command(&[
                "consume",
                "tasks",
                "--group",
                "workers",
                "--from",
                "earliest",
                "--format",
                "json",
                "--idle-timeout",
                "6s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn consumer");
        let (lines, reader) = collect_lines(&mut child);
        (child, lines, reader)
    };
    let mut consumers: Vec<_> = (0..3).map(|_| spawn_consumer()).collect();
    std::thread::sleep(Duration::from_secs(2));

    let producer_node = &node;
    std::thread::scope(|s| {
        s.spawn(|| {
            let input: String = (0..MESSAGES).map(|i| format!("task-{i}\n")).collect();
            let out = producer_node.cli_with_stdin(&["produce", "tasks"], Some(input.as_bytes()));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
        // Kill one consumer once it is busy.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (victim, victim_lines, victim_reader) = loop {
            if let Some(i) = consumers
                .iter()
                .position(|(_, lines, _)| lines.lock().expect("lines").len() > 200)
            {
                break consumers.swap_remove(i);
            }
            assert!(Instant::now() < deadline, "no consumer got messages");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut victim = victim;
        signal(victim.id(), "KILL");
        let _ = victim.wait();
        // Lines it printed (and committed) before the kill may still be in the pipe.
        victim_reader.join().expect("victim's reader");
        let victim_seen: BTreeSet<(u64, u64)> = victim_lines
            .lock()
            .expect("lines")
            .iter()
            .map(|l| queue_and_offset(l))
            .collect();
        let victim_queues: BTreeSet<u64> = victim_seen.iter().map(|(q, _)| *q).collect();

        let mut survivors_lines = Vec::new();
        for (mut child, lines, reader) in consumers.drain(..) {
            let status = crate::harness::wait_timeout(&mut child, Duration::from_secs(120))
                .expect("survivor exits after its idle timeout");
            assert!(status.success());
            reader.join().expect("survivor's reader");
            survivors_lines.push(lines);
        }
        let survivors: Vec<(u64, u64)> = survivors_lines
            .iter()
            .flat_map(|lines| {
                lines
                    .lock()
                    .expect("lines")
                    .iter()
                    .map(|l| queue_and_offset(l))
                    .collect::<Vec<_>>()
            })
            .collect();
        let survivor_set: BTreeSet<(u64, u64)> = survivors.iter().copied().collect();
        assert_eq!(
            survivor_set.len(),
            survivors.len(),
            "survivors never share a message"
        );

        let all: BTreeSet<(u64, u64)> = survivor_set.union(&victim_seen).copied().collect();
        assert_eq!(all.len(), MESSAGES, "every message delivered at least once");
        let mut per_queue: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (q, o) in &all {
            per_queue.entry(*q).or_default().push(*o);
        }
        for (q, offsets) in per_queue {
            let contiguous = offsets.iter().enumerate().all(|(i, o)| *o == i as u64);
            assert!(contiguous, "gap in queue {q}");
        }
        for q in victim_queues {
            assert!(
                survivors.iter().any(|(sq, _)| *sq == q),
                "queue {q} of the killed consumer was not taken over"
            );
        }
    });
}

#[test]
fn broadcast_delivers_everything_to_every_member() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "config-updates", "--queues", "3"]);
    let input: String = (0..300).map(|i| format!("update-{i}\n")).collect();
    let out = node.cli_with_stdin(&["produce", "config-updates"], Some(input.as_bytes()));
    assert!(out.status.success());
    let args = [
        "consume",
        "config-updates",
        "--group",
        "caches",
        "--mode",
        "broadcast",
        "--from",
        "earliest",
        "--count",
        "300",
        "--idle-timeout",
        "10s",
    ];
    let children: Vec<_> = (0..2)
        .map(|_| {
            node.client_command(&args)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success());
        let got: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(got.len(), 300, "each member gets every message");
    }
}

#[test]
fn a_long_polling_consumer_gets_a_message_within_50_ms_of_the_send() {
    let node = Node::start(&[]);
    let addr = node.addr.clone();
    runtime().block_on(async move {
        let admin = Admin::new([addr.as_str()]).expect("admin");
        admin.create_topic("alerts", 1).await.expect("create");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let config = PushConsumerConfig::new([addr.as_str()], "pager", "alerts");
        let consumer = PushConsumer::start(config, move |_| {
            let _ = tx.send(Instant::now());
            ConsumeResult::Success
        })
        .await
        .expect("consumer");
        wait_for("queue assigned", Duration::from_secs(20), || {
            !consumer.assigned().is_empty()
        })
        .await;
        let producer = Producer::new(ProducerConfig::new([addr.as_str()])).expect("producer");
        producer
            .send(Message::new("alerts", "warm-up"))
            .await
            .expect("send");
        rx.recv().await.expect("warm-up received");
        let mut delays = Vec::new();
        for i in 0..10 {
            // Let the consumer's pull park on the broker first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent = Instant::now();
            producer
                .send(Message::new("alerts", format!("alert-{i}")))
                .await
                .expect("send");
            let received = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("received in time")
                .expect("channel open");
            delays.push(received - sent);
        }
        consumer.shutdown().await.expect("shutdown");
        let within = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(50))
            .count();
        assert!(within >= 9, "delays from send to receipt: {delays:?}");
    });
}

//! Shared groups across a leader failover: the leader sends its shared groups' changes
//! through the group's log every 500 ms, so a new leader does not deliver again what was
//! acked, keeps in-flight messages hidden, and takes the old leader's receipts.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use weir_client::{
    Message, Producer, ProducerConfig, SharedConsumer, SharedConsumerConfig, SharedMessage,
};

use super::nodes::Cluster;
use crate::harness::ok_at;

const TOPIC: &str = "jobs";
const MESSAGES: usize = 40;
/// Long enough that nothing received in the test becomes visible again by itself.
const INVISIBLE: Duration = Duration::from_secs(120);

fn body(m: &SharedMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

/// Receives until `n` messages came (across a failover: errors are retried), then checks
/// that no more come.
async fn receive_exactly(
    consumer: &SharedConsumer,
    n: usize,
    cluster: &Cluster,
) -> Vec<SharedMessage> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages received: {:?}\n{}",
            got.len(),
            got.iter().map(body).collect::<Vec<_>>(),
            cluster.logs_tail()
        );
        let want = u32::try_from(n - got.len()).unwrap_or(u32::MAX);
        match consumer.receive(want, INVISIBLE).await {
            Ok(some) => got.extend(some),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let more = consumer.receive(10, INVISIBLE).await.unwrap();
    assert!(
        more.is_empty(),
        "delivered more than {n}: {:?}",
        more.iter().map(body).collect::<Vec<_>>()
    );
    got
}

#[test]
fn a_new_leader_keeps_shared_group_acks_cursors_and_deliveries() {
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start(1, 3);
    let servers = cluster.servers();
    ok_at(
        &servers.join(","),
        &["topic", "create", TOPIC, "--queues", "2"],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let producer = Producer::new(ProducerConfig::new(servers.clone())).unwrap();
        for i in 0..MESSAGES {
            producer
                .send(Message::new(TOPIC, format!("job-{i}")))
                .await
                .unwrap();
        }
        producer.close().await;
        let mut config = SharedConsumerConfig::new(servers.clone(), "workers", TOPIC);
        config.max_wait = Duration::from_secs(1);
        let consumer = SharedConsumer::new(config).unwrap();

        // Half received: ten acked, ten left in flight.
        let before = receive_exactly_some(&consumer, MESSAGES / 2).await;
        assert!(consumer.ack(&before[..10]).await.unwrap().is_empty());
        // Sent to the other replicas within 500 ms.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let leader = cluster.wait_leader(Duration::from_secs(30));
        cluster.kill(leader);
        let next = cluster.wait_leader(Duration::from_secs(30));
        assert_ne!(next, leader);

        // The new leader delivers exactly the messages never delivered, each a first time.
        let after = receive_exactly(&consumer, MESSAGES / 2, &cluster).await;
        let seen: BTreeSet<String> = before.iter().chain(&after).map(body).collect();
        assert_eq!(seen.len(), MESSAGES, "no message twice, none missing");
        assert!(
            after.iter().all(|m| m.attempt == 1),
            "{:?}",
            after
                .iter()
                .map(|m| (body(m), m.attempt))
                .collect::<Vec<_>>()
        );
        // Receipts the old leader handed out ack at the new one.
        assert_eq!(
            consumer.ack(&before[10..]).await.unwrap(),
            Vec::<String>::new(),
            "receipts from before the failover"
        );
        assert!(consumer.ack(&after).await.unwrap().is_empty());
        assert!(consumer.receive(10, INVISIBLE).await.unwrap().is_empty());
    });
}

/// Receives `n` messages from a group whose leader is up.
async fn receive_exactly_some(consumer: &SharedConsumer, n: usize) -> Vec<SharedMessage> {
    let mut got = Vec::new();
    while got.len() < n {
        let want = u32::try_from(n - got.len()).unwrap_or(u32::MAX);
        got.extend(consumer.receive(want, INVISIBLE).await.unwrap());
    }
    got
}

/// Shared-mode throughput in a 3-replica group, and what the leader's progress adds to the
/// Raft log, for docs/benchmarks.md ("Shared consumption"):
/// `CARGO_BUILD_JOBS=2 cargo test --release -p weir --test e2e shared_throughput_in_a_group -- --ignored --nocapture`
#[test]
#[ignore = "benchmark; run in release with --ignored"]
fn shared_throughput_in_a_group() {
    const MESSAGES: usize = 200_000;
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start(1, 3);
    let servers = cluster.servers();
    ok_at(
        &servers.join(","),
        &["topic", "create", "bench", "--queues", "2"],
    );
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let index = cluster
        .replica(leader)
        .data_dir()
        .join("raft")
        .join("log.index");
    let size = || std::fs::metadata(&index).map_or(0, |m| m.len());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        crate::shared::produce_bench_messages(&servers, "bench", MESSAGES).await;
        // Let the last progress and commits settle before measuring the index's growth.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = size();
        crate::shared::drain_shared(&servers, "bench", MESSAGES).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let grown = size() - before;
        println!(
            "raft/log.index grew {grown} bytes while consuming: {:.2} bytes per message",
            grown as f64 / MESSAGES as f64
        );
    });
}

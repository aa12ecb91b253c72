//! Kafka leader epochs in a broker group: Metadata says the Raft term the leader stamps on its
//! batches, a failover raises it, OffsetForLeaderEpoch says where each epoch ended, clients in
//! another epoch are fenced, and a consumer reading through a leader SIGKILL validates its
//! position against the new leader and reads every record exactly once, never reset. And a
//! follower coordinates no group (JoinGroup: NOT_COORDINATOR) but names the leader in
//! Metadata and FindCoordinator.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::kafka_wire::{
    self, EARLIEST, FENCED_LEADER_EPOCH, LATEST, NOT_COORDINATOR, UNKNOWN_LEADER_EPOCH,
};
use super::nodes::Cluster;
use crate::harness::ok_at;
use crate::kafka::{Member, Record, clients_json, clients_ready, wait_until};

const TOPIC: &str = "ledger";

/// The Kafka address of replica `id`.
fn kafka_addr(cluster: &mut Cluster, id: u64) -> String {
    cluster
        .replica(id)
        .kafka_addr
        .clone()
        .expect("a Kafka listener")
}

/// Produces `values` to `partition` through `bootstrap` with acks=all (idempotent); their
/// offsets.
fn produce(cluster: &Cluster, bootstrap: &str, partition: i32, values: &[String]) -> Vec<i64> {
    let input = Value::Array(
        values
            .iter()
            .map(|v| Record::new(Some(v), Some(v)).to_json(partition, None))
            .collect(),
    );
    let args = [
        "--topic",
        TOPIC,
        "--acks",
        "all",
        "--idempotent",
        "--timeout",
        "90",
    ];
    let out = clients_json(bootstrap, "produce", &args, Some(&input), || {
        cluster.logs_tail()
    });
    out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["offset"].as_i64().expect("offset"))
        .collect()
}

/// How many OffsetForLeaderEpoch requests the replica whose HTTP listener is `http` served
/// (`weir_requests_total{api="kafka_OffsetForLeaderEpoch"}`).
fn epoch_validations(http: &str) -> f64 {
    let mut response = ureq::get(format!("http://{http}/metrics"))
        .call()
        .expect("metrics");
    let text = response.body_mut().read_to_string().expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("weir_requests_total{"))
        .filter(|l| l.contains("api=\"kafka_OffsetForLeaderEpoch\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The records a `follow` consumer printed, per partition: (offset, value) in reading order.
fn read_by_partition(events: &[Value]) -> BTreeMap<i64, Vec<(i64, String)>> {
    let mut out: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "record") {
        out.entry(e["partition"].as_i64().expect("partition"))
            .or_default()
            .push((
                e["offset"].as_i64().expect("offset"),
                e["value"].as_str().unwrap_or_default().to_owned(),
            ));
    }
    out
}

#[test]
fn kafka_leader_epochs_follow_the_raft_term_and_a_consumer_reads_through_a_failover_once() {
    let test =
        "kafka_leader_epochs_follow_the_raft_term_and_a_consumer_reads_through_a_failover_once";
    if !clients_ready(test) {
        return;
    }
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start_with_kafka(1, 3);
    let servers = cluster.servers().join(",");
    ok_at(&servers, &["topic", "create", TOPIC, "--queues", "2"]);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let at_leader = kafka_addr(&mut cluster, leader);
    let everyone = (1..=3)
        .map(|id| kafka_addr(&mut cluster, id))
        .collect::<Vec<_>>()
        .join(",");

    // Before: 30 + 10 records in the first leader's term.
    let first = values("before", 30);
    assert_eq!(
        produce(&cluster, &at_leader, 0, &first),
        (0..30).collect::<Vec<_>>()
    );
    assert_eq!(
        produce(&cluster, &at_leader, 1, &first[..10]),
        (0..10).collect::<Vec<_>>()
    );
    let term = cluster.leader().expect("a leader").1.term;
    let (error, leader_id, before) = kafka_wire::partition_leader(&at_leader, TOPIC, 0);
    assert_eq!((error, leader_id), (0, leader as i32));
    assert!(before > 0, "a group's leader epoch is its Raft term, not 0");
    assert_eq!(i64::from(before), term as i64, "Metadata says the term");
    assert_eq!(
        kafka_wire::epoch_end(&at_leader, TOPIC, 0, before, before),
        (0, before, 30),
        "the current epoch ends at the log end"
    );
    let (error, _, first_epoch) = kafka_wire::list_offset(&at_leader, TOPIC, 0, before, EARLIEST);
    assert_eq!(error, 0);
    assert!(
        (1..=before).contains(&first_epoch),
        "the first batch's epoch {first_epoch} (stamped in a term ≤ {before})"
    );

    // A consumer reads from offset 0 of both partitions, bootstrapped from every replica.
    let mut reader = Member::follow("reader", &everyone, TOPIC, 2);
    let count = |m: &Member| m.events().iter().filter(|e| e["event"] == "record").count();
    wait_until(
        Duration::from_secs(60),
        || format!("40 records before the kill: {:?}", reader.events()),
        || count(&reader) >= 40,
    );

    // The leader dies; the next one is in a newer term.
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(30));
    let at_new = kafka_addr(&mut cluster, new_leader);
    let second = values("after", 20);
    assert_eq!(
        produce(&cluster, &at_new, 0, &second),
        (30..50).collect::<Vec<_>>()
    );
    assert_eq!(
        produce(&cluster, &at_new, 1, &second[..5]),
        (10..15).collect::<Vec<_>>()
    );
    wait_until(
        Duration::from_secs(60),
        || {
            format!(
                "65 records after the failover: {:?}\n{}\n{}",
                reader.events(),
                reader.stderr(),
                cluster.logs_tail()
            )
        },
        || count(&reader) >= 65,
    );
    reader.stop();
    // It checked its position against the new leader (the epoch in Metadata went up), and the
    // answer let it go on where it was.
    let http = cluster.replica(new_leader).http_addr.clone().expect("HTTP");
    assert!(
        epoch_validations(&http) >= 1.0,
        "the consumer validated its position with the new leader"
    );

    // Every record exactly once, in order, the position never reset.
    let events = reader.events();
    let resets: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "error")
        .filter(|e| {
            let name = e["name"].as_str().unwrap_or_default();
            name.contains("OFFSET") || name.contains("TRUNCATION") || name.contains("EPOCH")
        })
        .collect();
    assert!(resets.is_empty(), "the position was lost: {resets:?}");
    let read = read_by_partition(&events);
    let want_0: Vec<(i64, String)> = (0..).zip(first.iter().chain(&second).cloned()).collect();
    let want_1: Vec<(i64, String)> = (0..)
        .zip(first[..10].iter().chain(&second[..5]).cloned())
        .collect();
    assert_eq!(read.get(&0), Some(&want_0), "partition 0");
    assert_eq!(read.get(&1), Some(&want_1), "partition 1");

    // After: a newer epoch everywhere, and the old one ends where the new one's records begin.
    let (error, leader_id, after) = kafka_wire::partition_leader(&at_new, TOPIC, 0);
    assert_eq!((error, leader_id), (0, new_leader as i32));
    assert!(
        after > before,
        "epoch {after} after the failover, {before} before"
    );
    assert_eq!(
        kafka_wire::epoch_end(&at_new, TOPIC, 0, after, before),
        (0, before, 30)
    );
    assert_eq!(
        kafka_wire::epoch_end(&at_new, TOPIC, 1, after, before),
        (0, before, 10)
    );
    assert_eq!(
        kafka_wire::epoch_end(&at_new, TOPIC, 0, after, after),
        (0, after, 50)
    );
    assert_eq!(
        kafka_wire::epoch_end(&at_new, TOPIC, 0, -1, after + 1),
        (0, -1, -1),
        "an epoch newer than the leader's is unknown"
    );
    assert_eq!(
        kafka_wire::list_offset(&at_new, TOPIC, 0, after, LATEST),
        (0, 50, after)
    );
    assert_eq!(
        kafka_wire::list_offset(&at_new, TOPIC, 0, after, EARLIEST),
        (0, 0, first_epoch),
        "the first batch keeps its epoch"
    );
    // A client still in the old epoch is fenced; one ahead of the broker is told to wait.
    assert_eq!(
        kafka_wire::fetch(&at_new, TOPIC, 0, before, 0).0,
        FENCED_LEADER_EPOCH
    );
    assert_eq!(
        kafka_wire::fetch(&at_new, TOPIC, 0, after + 1, 0).0,
        UNKNOWN_LEADER_EPOCH
    );
    let (error, bytes) = kafka_wire::fetch(&at_new, TOPIC, 0, after, 0);
    assert!(
        error == 0 && bytes > 0,
        "fetch in the current epoch: {error}, {bytes} bytes"
    );
    assert_eq!(
        kafka_wire::epoch_end(&at_new, TOPIC, 0, before, before).0,
        FENCED_LEADER_EPOCH
    );
    assert_eq!(
        kafka_wire::list_offset(&at_new, TOPIC, 0, before, LATEST).0,
        FENCED_LEADER_EPOCH
    );
}

#[test]
fn a_kafka_follower_names_the_leader_and_coordinates_no_group() {
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start_with_kafka(1, 3);
    let servers = cluster.servers().join(",");
    ok_at(&servers, &["topic", "create", TOPIC, "--queues", "2"]);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let at_leader = kafka_addr(&mut cluster, leader);
    let term = cluster.leader().expect("a leader").1.term;
    let (_, _, epoch) = kafka_wire::partition_leader(&at_leader, TOPIC, 0);
    assert_eq!(
        i64::from(epoch),
        term as i64,
        "the leader's epoch is its term"
    );
    assert_ne!(
        kafka_wire::join_group(&at_leader, "payments"),
        NOT_COORDINATOR,
        "the leader coordinates"
    );
    for follower in (1..=3).filter(|id| *id != leader) {
        let at_follower = kafka_addr(&mut cluster, follower);
        // Metadata names the leader (where the follower's name servers say it listens) and
        // its epoch; the follower learns the address within a registration interval.
        wait_until(
            Duration::from_secs(20),
            || {
                format!(
                    "node {follower}'s Metadata: {:?}",
                    kafka_wire::metadata(&at_follower, TOPIC)
                )
            },
            || {
                let response = kafka_wire::metadata(&at_follower, TOPIC);
                let listed = response.brokers.iter().any(|b| {
                    b.node_id.0 == leader as i32
                        && format!("{}:{}", b.host.as_str(), b.port) == at_leader
                });
                listed && response.controller_id.0 == leader as i32
            },
        );
        for partition in 0..2 {
            assert_eq!(
                kafka_wire::partition_leader(&at_follower, TOPIC, partition),
                (0, leader as i32, epoch),
                "node {follower}, partition {partition}"
            );
        }
        assert_eq!(
            kafka_wire::find_coordinator(&at_follower, "payments"),
            (0, leader as i32, at_leader.clone()),
            "node {follower} sends group members to the leader"
        );
        assert_eq!(
            kafka_wire::join_group(&at_follower, "payments"),
            NOT_COORDINATOR,
            "node {follower} coordinates no group"
        );
    }
}

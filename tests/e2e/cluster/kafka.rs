//! Kafka clients against a broker group: a client bootstrapped from a follower is sent to the
//! leader (Metadata and FindCoordinator name it), produces with acks=all and commits a
//! group's offsets there; the leader is SIGKILLed; the client, bootstrapped from a survivor,
//! produces on, reads every record back in order and finds the group's offsets (with their
//! metadata) where they were committed: Kafka offset commits are entries of the group's log.

use std::time::Duration;

use serde_json::{Value, json};

use super::nodes::Cluster;
use crate::harness::ok_at;
use crate::kafka::{Record, clients_json, clients_ready, committed_of};

const TOPIC: &str = "payments";

/// Runs the Kafka client driver against `bootstrap`; its JSON answer.
fn kafka(
    cluster: &Cluster,
    bootstrap: &str,
    command: &str,
    args: &[&str],
    stdin: Option<&Value>,
) -> Value {
    clients_json(bootstrap, command, args, stdin, || cluster.logs_tail())
}

/// Produces `values` to partition `partition` with acks=all (idempotent); their offsets.
fn produce(cluster: &Cluster, bootstrap: &str, partition: i32, values: &[String]) -> Vec<i64> {
    let input = Value::Array(
        values
            .iter()
            .map(|v| Record::new(Some(v), Some(v)).to_json(partition, None))
            .collect(),
    );
    let out = kafka(
        cluster,
        bootstrap,
        "produce",
        &[
            "--topic",
            TOPIC,
            "--acks",
            "all",
            "--idempotent",
            "--timeout",
            "90",
        ],
        Some(&input),
    );
    out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["offset"].as_i64().expect("offset"))
        .collect()
}

/// A group's committed (offset, metadata) per partition, read by kafka-python.
fn committed(cluster: &Cluster, bootstrap: &str, group: &str) -> Vec<(i64, Option<String>)> {
    let out = kafka(
        cluster,
        bootstrap,
        "committed",
        &[
            "--client",
            "kafka-python",
            "--group",
            group,
            "--topic",
            TOPIC,
            "--partitions",
            "2",
        ],
        None,
    );
    committed_of(&out)
}

#[test]
fn kafka_clients_follow_the_leader_and_lose_nothing_when_it_dies() {
    if !clients_ready("kafka_clients_follow_the_leader_and_lose_nothing_when_it_dies") {
        return;
    }
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start_with_kafka(1, 3);
    let servers = cluster.servers().join(",");
    ok_at(&servers, &["topic", "create", TOPIC, "--queues", "2"]);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let bootstrap = |cluster: &mut Cluster, id: u64| {
        cluster
            .replica(id)
            .kafka_addr
            .clone()
            .expect("a Kafka listener")
    };
    let via_follower = bootstrap(&mut cluster, follower);

    // Bootstrapped from a follower: produced at the leader, offsets 0.. in order.
    let first: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    assert_eq!(
        produce(&cluster, &via_follower, 0, &first),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(
        produce(&cluster, &via_follower, 1, &first[..5]),
        (0..5).collect::<Vec<_>>()
    );
    kafka(
        &cluster,
        &via_follower,
        "commit",
        &[
            "--group",
            "ledger",
            "--topic",
            TOPIC,
            "--offsets",
            "0:12,1:5",
            "--metadata",
            "m1",
        ],
        None,
    );
    let want = vec![(12, Some("m1".to_owned())), (5, Some("m1".to_owned()))];
    assert_eq!(committed(&cluster, &via_follower, "ledger"), want);

    // The leader dies; a survivor becomes leader with every record and the offsets.
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(30));
    let survivor = (1..=3)
        .find(|id| *id != leader && *id != new_leader)
        .expect("a follower of the new leader");
    let via_survivor = bootstrap(&mut cluster, survivor);
    let second: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    assert_eq!(
        produce(&cluster, &via_survivor, 0, &second),
        (20..30).collect::<Vec<_>>()
    );
    assert_eq!(
        committed(&cluster, &via_survivor, "ledger"),
        want,
        "after the failover"
    );
    let read = kafka(
        &cluster,
        &via_survivor,
        "consume",
        &[
            "--topic",
            TOPIC,
            "--partition",
            "0",
            "--seek",
            "beginning",
            "--count",
            "30",
        ],
        None,
    );
    let values: Vec<String> = read["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default().to_owned())
        .collect();
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(values, all, "{}", json!(read));
}

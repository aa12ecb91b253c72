//! Kafka consumer groups (the classic protocol) with real clients: a group grows from one
//! member to three and shrinks back while records keep coming, each member committing what it
//! read (with commit metadata) before reporting it; with round-robin one member crashes
//! instead of leaving (its partitions move on after the session timeout). Every record is
//! committed exactly once across the members; the committed offsets and their metadata read back the same after a
//! broker restart, and a member joining then starts where the group left off.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::{
    Member, Record, bootstrap, clients_ready, committed_of, driver, kafka_node, wait_until,
};
use crate::harness::Node;
use crate::http_api::Http;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 6;
const PER_PARTITION: usize = 10;
const REBALANCE: Duration = Duration::from_secs(45);

/// Produces `PER_PARTITION` records to each partition, values `phase-partition-i`.
fn produce_phase(node: &Node, phase: &str) -> Vec<(i64, String)> {
    let mut input = Vec::new();
    let mut values = Vec::new();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let value = format!("{phase}-{p}-{i}");
            input.push(Record::new(Some(&format!("k{i}")), Some(&value)).to_json(p, None));
            values.push((i64::from(p), value));
        }
    }
    let out = driver(
        node,
        "produce",
        &["--client", "confluent", "--topic", TOPIC, "--acks", "all"],
        Some(&Value::Array(input)),
    );
    assert_eq!(out["results"].as_array().unwrap().len(), values.len());
    values
}

/// Each member's partitions now: `assigned` adds, `revoked` removes (right for eager and
/// cooperative rebalancing alike).
fn assignment(member: &Member) -> BTreeSet<i64> {
    let mut held = BTreeSet::new();
    for e in member.events() {
        let partitions = e["partitions"].as_array().cloned().unwrap_or_default();
        let partitions = partitions.iter().filter_map(Value::as_i64);
        match e["event"].as_str() {
            Some("assigned") => held.extend(partitions),
            Some("revoked") => {
                for p in partitions {
                    held.remove(&p);
                }
            }
            _ => {}
        }
    }
    held
}

/// The members' assignments, when they split every partition among all of them.
fn split_among_all(members: &[&Member]) -> bool {
    let sets: Vec<BTreeSet<i64>> = members.iter().map(|m| assignment(m)).collect();
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i64> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| !s.is_empty())
        && total == PARTITIONS as usize
        && union == (0..i64::from(PARTITIONS)).collect()
}

/// (member, partition, offset, value) of every committed record so far.
fn committed_records(members: &[&Member]) -> Vec<(String, i64, i64, String)> {
    members
        .iter()
        .flat_map(|m| {
            m.events()
                .into_iter()
                .filter(|e| e["event"] == "committed")
                .map(|e| {
                    (
                        m.name.clone(),
                        e["partition"].as_i64().unwrap(),
                        e["offset"].as_i64().unwrap(),
                        e["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn describe(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| {
            format!(
                "{}: held {:?}, {} events, last {:?}\nstderr: {}",
                m.name,
                assignment(m),
                m.events().len(),
                m.events().last(),
                m.stderr()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the members committed `want` values (each once); the committed records.
fn wait_committed(members: &[&Member], want: &[(i64, String)]) {
    let want: BTreeSet<(i64, String)> = want.iter().cloned().collect();
    wait_until(
        REBALANCE,
        || {
            format!(
                "records committed: {:?}\n{}",
                missing(members, &want),
                describe(members)
            )
        },
        || missing(members, &want).is_empty(),
    );
}

fn missing(members: &[&Member], want: &BTreeSet<(i64, String)>) -> Vec<(i64, String)> {
    let got: BTreeSet<(i64, String)> = committed_records(members)
        .into_iter()
        .map(|(_, p, _, v)| (p, v))
        .collect();
    want.difference(&got).cloned().collect()
}

/// The group's committed offsets and metadata per partition, as kafka-python reads them.
///
/// Not confluent-kafka: its Python binding reads the metadata librdkafka hands back as a
/// NUL-terminated string although librdkafka does not terminate it, so it sometimes returns
/// the metadata followed by whatever lies after it in memory (librdkafka issue #4649).
fn committed_offsets(node: &Node, group: &str) -> Vec<(i64, Option<String>)> {
    let out = driver(
        node,
        "committed",
        &[
            "--client",
            "kafka-python",
            "--group",
            group,
            "--topic",
            TOPIC,
            "--partitions",
            &PARTITIONS.to_string(),
        ],
        None,
    );
    committed_of(&out)
}

/// How the third member goes away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// It leaves the group (LeaveGroup).
    Leaves,
    /// It is killed: the coordinator notices when its session times out.
    Crashes,
}

/// One member grows to three and shrinks back to one while records keep coming.
fn group_grows_and_shrinks(client: &str, strategy: Option<&str>, exit: Exit) {
    let mut node = kafka_node(&[]);
    node.ok(&[
        "topic",
        "create",
        TOPIC,
        "--queues",
        &PARTITIONS.to_string(),
    ]);
    let group = format!("g-{client}-{}", strategy.unwrap_or("default"));
    let metadata = format!("meta of {group}");
    let mut extra = vec!["--metadata", metadata.as_str()];
    if let Some(s) = strategy {
        extra.extend(["--strategy", s]);
    }
    let start = |node: &Node, name: &str| Member::start(node, name, client, &group, TOPIC, &extra);

    // One member: it gets every partition.
    let mut a = start(&node, "a");
    let phase1 = produce_phase(&node, "one");
    wait_committed(&[&a], &phase1);
    assert_eq!(
        assignment(&a).len(),
        PARTITIONS as usize,
        "{}",
        describe(&[&a])
    );

    // Three members: they split the partitions.
    let mut b = start(&node, "b");
    let mut c = start(&node, "c");
    wait_until(
        REBALANCE,
        || {
            format!(
                "three members sharing the partitions\n{}",
                describe(&[&a, &b, &c])
            )
        },
        || split_among_all(&[&a, &b, &c]),
    );
    let phase2 = produce_phase(&node, "three");
    wait_committed(&[&a, &b, &c], &phase2);
    for m in [&a, &b, &c] {
        let took = committed_records(&[m])
            .iter()
            .filter(|r| r.3.starts_with("three-"))
            .count();
        assert!(
            took > 0,
            "{} read nothing of phase two\n{}",
            m.name,
            describe(&[&a, &b, &c])
        );
    }

    // Back to one: it gets every partition again.
    match exit {
        Exit::Leaves => c.stop(),
        Exit::Crashes => c.kill(),
    }
    b.stop();
    wait_until(
        REBALANCE,
        || format!("a holding everything again\n{}", describe(&[&a, &b, &c])),
        || assignment(&a).len() == PARTITIONS as usize,
    );
    let phase3 = produce_phase(&node, "back");
    wait_committed(&[&a, &b, &c], &phase3);
    a.stop();

    // Every record committed exactly once, each partition in offset order.
    let all = committed_records(&[&a, &b, &c]);
    let mut seen: BTreeMap<(i64, i64), (String, String)> = BTreeMap::new();
    for (member, p, offset, value) in &all {
        if let Some(first) = seen.insert((*p, *offset), (member.clone(), value.clone())) {
            panic!(
                "partition {p} offset {offset} committed twice: by {} and {member}\n{}",
                first.0,
                describe(&[&a, &b, &c])
            );
        }
    }
    assert_eq!(
        all.len(),
        3 * PARTITIONS as usize * PER_PARTITION,
        "{}",
        describe(&[&a, &b, &c])
    );
    for p in 0..i64::from(PARTITIONS) {
        let values: Vec<&str> = seen
            .range((p, 0)..(p + 1, 0))
            .map(|(_, (_, v))| v.as_str())
            .collect();
        let want: Vec<String> = ["one", "three", "back"]
            .iter()
            .flat_map(|phase| (0..PER_PARTITION).map(move |i| format!("{phase}-{p}-{i}")))
            .collect();
        assert_eq!(
            values, want,
            "partition {p}: offsets 0.. hold the records in order"
        );
    }

    // Committed offsets and metadata, before and after a restart.
    let end = (3 * PER_PARTITION) as i64;
    let want: Vec<(i64, Option<String>)> = (0..PARTITIONS)
        .map(|_| (end, Some(metadata.clone())))
        .collect();
    assert_eq!(committed_offsets(&node, &group), want);
    node.stop();
    node.restart();
    assert_eq!(committed_offsets(&node, &group), want, "after a restart");
    if strategy == Some("range") {
        // The same numbers through Weir's HTTP API.
        let (status, body) = Http::new(&node).get(&format!("/api/v1/groups/{group}"));
        assert_eq!(status, 200, "{body}");
        let queues: Vec<(u64, u64)> = body["queues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["topic"] == TOPIC)
            .map(|q| {
                (
                    q["queue_id"].as_u64().unwrap(),
                    q["committed_offset"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(u64, u64)> = (0..PARTITIONS as u64).map(|q| (q, end as u64)).collect();
        assert_eq!(queues, want, "{body}");
    }

    // A member joining after the restart reads only what came after.
    let d = start(&node, "d");
    let phase4 = produce_phase(&node, "after");
    wait_committed(&[&d], &phase4);
    let got = committed_records(&[&d]);
    assert!(
        got.iter().all(|r| r.3.starts_with("after-") && r.2 >= end),
        "nothing before the committed offsets again: {got:?}"
    );
    assert_eq!(
        got.len(),
        PARTITIONS as usize * PER_PARTITION,
        "{}",
        bootstrap(&node)
    );
}

#[test]
fn confluent_kafka_group_range_grows_and_shrinks() {
    if clients_ready("confluent_kafka_group_range_grows_and_shrinks") {
        group_grows_and_shrinks("confluent", Some("range"), Exit::Leaves);
    }
}

#[test]
fn confluent_kafka_group_roundrobin_grows_and_shrinks_with_a_crash() {
    if clients_ready("confluent_kafka_group_roundrobin_grows_and_shrinks_with_a_crash") {
        group_grows_and_shrinks("confluent", Some("roundrobin"), Exit::Crashes);
    }
}

#[test]
fn confluent_kafka_group_cooperative_sticky_grows_and_shrinks() {
    if clients_ready("confluent_kafka_group_cooperative_sticky_grows_and_shrinks") {
        group_grows_and_shrinks("confluent", Some("cooperative-sticky"), Exit::Leaves);
    }
}

#[test]
fn kafka_python_group_grows_and_shrinks() {
    if clients_ready("kafka_python_group_grows_and_shrinks") {
        group_grows_and_shrinks("kafka-python", None, Exit::Leaves);
    }
}

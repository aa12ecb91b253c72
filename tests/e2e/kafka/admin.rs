//! confluent-kafka's AdminClient against a node: create (and create again), add partitions,
//! describe configs, list offsets, list and describe groups, read a group's offsets, delete —
//! each checked against what Weir's CLI shows.

use super::{Record, clients_ready, commit, driver, kafka_node, produce};

#[test]
fn admin_client_manages_topics_and_lists_groups_and_offsets() {
    if !clients_ready("admin_client_manages_topics_and_lists_groups_and_offsets") {
        return;
    }
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "data", "--queues", "1"]);
    let records: Vec<Record> = (0..5)
        .map(|i| Record::new(Some("k"), Some(&format!("v{i}"))))
        .collect();
    produce(&node, "confluent", "data", 0, &records, &["--acks", "1"]);
    // A group with committed offsets and no members.
    commit(&node, "reporting", "data", "0:3", "nightly");

    let out = driver(
        &node,
        "admin",
        &[
            "--topic",
            "adm",
            "--group",
            "reporting",
            "--data-topic",
            "data",
        ],
        None,
    );
    assert_eq!(out["after_create"], 2, "{out}");
    assert_eq!(out["create_again"], "TOPIC_ALREADY_EXISTS", "{out}");
    assert_eq!(out["after_create_partitions"], 4, "{out}");
    assert_eq!(out["configs"]["cleanup.policy"], "delete", "{out}");
    assert!(
        out["configs"]["retention.ms"]
            .as_str()
            .is_some_and(|v| v.parse::<i64>().is_ok()),
        "{out}"
    );
    assert_eq!(out["list_offsets"]["adm/0/earliest"], 0, "{out}");
    assert_eq!(out["list_offsets"]["data/0/latest"], 5, "{out}");
    assert_eq!(out["after_delete"], false, "{out}");

    // What the AdminClient did, Weir's CLI sees.
    let topics = node.ok(&["topic", "list"]);
    assert!(!topics.contains("adm"), "deleted: {topics}");

    let out = driver(
        &node,
        "admin-groups",
        &["--group", "reporting", "--data-topic", "data"],
        None,
    );
    assert!(
        out["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "reporting")),
        "{out}"
    );
    assert_eq!(out["group"]["group_id"], "reporting", "{out}");
    assert_eq!(out["group"]["members"], 0, "{out}");
    assert!(
        out["group"]["state"]
            .as_str()
            .is_some_and(|s| s.contains("EMPTY")),
        "{out}"
    );
    assert_eq!(out["group_offsets"]["data/0"], 3, "{out}");
    let described = node.ok(&["group", "describe", "reporting"]);
    assert!(described.contains("data"), "{described}");
}

//! Broker-side tag filtering, end to end through the CLI.

use crate::harness::{Node, assert_success};

fn produce_tagged(node: &Node, tag: &str, body: &str) {
    node.ok(&["produce", "events", "--tag", tag, "--body", body]);
}

fn consume(node: &Node, group: &str, filter: &str) -> Vec<String> {
    let out = node.ok(&[
        "consume",
        "events",
        "--group",
        group,
        "--from",
        "earliest",
        "--tag-filter",
        filter,
        // Long enough, on a loaded machine, for every queue's first pull to come back (one
        // that matches nothing still answers where the next pull starts, which is committed).
        "--idle-timeout",
        "10s",
    ]);
    let mut bodies: Vec<String> = out.lines().map(str::to_owned).collect();
    bodies.sort();
    bodies
}

#[test]
fn tag_filters_deliver_only_matching_messages_and_advance_offsets() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "events", "--queues", "2"]);
    for i in 0..3 {
        produce_tagged(&node, "TagA", &format!("a{i}"));
        produce_tagged(&node, "TagB", &format!("b{i}"));
        produce_tagged(&node, "TagC", &format!("c{i}"));
    }
    let out = node.cli(&["produce", "events", "--body", "untagged"]);
    assert_success(&["produce"], &out);

    let ab = consume(&node, "ab", "TagA || TagB");
    assert_eq!(ab, ["a0", "a1", "a2", "b0", "b1", "b2"]);
    // Skipped messages still move the committed offset: nothing is left to consume.
    let described = node.ok(&["group", "describe", "ab"]);
    let lags: Vec<&str> = described
        .lines()
        .filter(|l| l.starts_with("events"))
        .map(|l| l.split_whitespace().nth(4).unwrap_or("?"))
        .collect();
    assert_eq!(lags, ["0", "0"], "{described}");

    let all = consume(&node, "everything", "*");
    assert_eq!(all.len(), 10, "{all:?}");
    let c = consume(&node, "only-c", "TagC");
    assert_eq!(c, ["c0", "c1", "c2"]);
}

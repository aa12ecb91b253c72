//! A consumer group keeps its position from its first assignment: a group that joined, got
//! nothing and left, finds what was produced while it was away, also across a broker restart;
//! `--from` only applies to a group never assigned the queue.

use crate::harness::Node;

/// One `weir consume` run of group `g` on `topic` that stops after `idle` without a message.
fn consume(node: &Node, topic: &str, idle: &str) -> Vec<String> {
    node.ok(&[
        "consume",
        topic,
        "--group",
        "g",
        "--from",
        "latest",
        "--idle-timeout",
        idle,
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_group_that_received_nothing_keeps_its_position_across_runs_and_restarts() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "t", "--queues", "2"]);
    node.ok(&["produce", "t", "--body", "before"]);

    // First run: assigned at the latest offset, nothing arrives.
    assert!(consume(&node, "t", "2s").is_empty());
    let describe = node.ok(&["group", "describe", "g"]);
    assert!(
        describe.contains("t"),
        "the group keeps a position on t after its first run: {describe}"
    );

    // Produced while the group is away: the next run gets it.
    node.ok(&["produce", "t", "--body", "while-away-1"]);
    let got = consume(&node, "t", "2s");
    assert_eq!(got, vec!["while-away-1".to_owned()]);

    // Across a broker restart (clean, then a crash after the position had time to persist).
    node.ok(&["produce", "t", "--body", "while-away-2"]);
    node.stop();
    node.restart();
    assert_eq!(consume(&node, "t", "2s"), vec!["while-away-2".to_owned()]);

    // A new topic, first run, then a crash of the broker: the position assigned in the first
    // run survives (offsets are written to disk within a second).
    node.ok(&["topic", "create", "u", "--queues", "1"]);
    assert!(consume(&node, "u", "1s").is_empty());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    node.kill();
    node.restart();
    node.ok(&["produce", "u", "--body", "after-crash"]);
    assert_eq!(consume(&node, "u", "2s"), vec!["after-crash".to_owned()]);
}

//! The command-line tool against a real node: topics, produce, consume, groups, lookup,
//! restarts, crashes and configuration.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{Node, assert_success};

fn lines(n: usize, prefix: &str) -> String {
    (0..n).map(|i| format!("{prefix}{i}\n")).collect()
}

fn produce(node: &Node, topic: &str, extra: &[&str], input: &str) {
    let mut args = vec!["produce", topic];
    args.extend_from_slice(extra);
    let out = node.cli_with_stdin(&args, Some(input.as_bytes()));
    assert_success(&args, &out);
}

fn consume_json(node: &Node, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["consume"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json", "--idle-timeout", "5s"]);
    node.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json line {l:?}: {e}")))
        .collect()
}

fn bodies(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_string())
        .collect()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn topic_lifecycle_and_errors() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "orders", "--queues", "3"]);
    assert!(node.ok(&["topic", "list"]).contains("orders"));
    let described = node.ok(&["topic", "describe", "orders"]);
    assert!(described.contains("orders"), "{described}");

    let again = node.cli(&["topic", "create", "orders"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("orders"), "{}", stderr(&again));
    assert_eq!(stderr(&again).lines().count(), 1, "one line of error");

    let bad = node.cli(&["topic", "create", "bad name!"]);
    assert!(!bad.status.success());
    let reserved = node.cli(&["topic", "create", "%RETRY%x"]);
    assert!(!reserved.status.success());

    node.ok(&["topic", "delete", "orders"]);
    let gone = node.cli(&["topic", "describe", "orders"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("topic 'orders' does not exist"),
        "{}",
        stderr(&gone)
    );
    let send = node.cli_with_stdin(&["produce", "orders"], Some(b"x\n"));
    assert!(
        !send.status.success(),
        "sending to a deleted topic must fail"
    );
}

#[test]
fn produce_and_consume_with_keys_tags_properties_and_lookup() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "events", "--queues", "4"]);
    produce(
        &node,
        "events",
        &[
            "--key",
            "user-7",
            "--tag",
            "TagA",
            "--property",
            "source=test",
        ],
        &lines(1000, "event-"),
    );
    let messages = consume_json(
        &node,
        &[
            "events", "--group", "g1", "--from", "earliest", "--count", "1000",
        ],
    );
    assert_eq!(messages.len(), 1000);
    let got: BTreeSet<String> = bodies(&messages).into_iter().collect();
    let want: BTreeSet<String> = (0..1000).map(|i| format!("event-{i}")).collect();
    assert_eq!(got, want);
    let first = &messages[0];
    assert_eq!(first["topic"], "events");
    assert_eq!(first["key"], "user-7");
    assert_eq!(first["tag"], "TagA");
    assert_eq!(first["properties"]["source"], "test");
    assert!(first["store_timestamp"].as_i64().unwrap_or(0) > 0);

    // Same key, same queue: the order of one key is the order of sending.
    let queues: BTreeSet<u64> = messages
        .iter()
        .filter_map(|m| m["queue"].as_u64())
        .collect();
    assert_eq!(queues.len(), 1, "one key must map to one queue");
    let in_order: Vec<String> = bodies(&messages);
    assert_eq!(
        in_order,
        (0..1000).map(|i| format!("event-{i}")).collect::<Vec<_>>()
    );

    let id = first["id"].as_str().expect("id");
    let fetched = node.ok(&["message", "get", id]);
    assert!(fetched.contains("event-0"), "{fetched}");
    let found = node.ok(&["message", "find", "--topic", "events", "--key", "user-7"]);
    assert!(found.contains("event-"), "{found}");

    let missing = node.cli(&["message", "get", "7F00000100000000000000000FFF"]);
    assert!(!missing.status.success());
}

#[test]
fn consume_stops_after_the_idle_timeout() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "quiet"]);
    let started = std::time::Instant::now();
    let out = node.ok(&["consume", "quiet", "--group", "g", "--idle-timeout", "1s"]);
    assert!(out.is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn group_offsets_survive_a_restart_and_can_be_reset() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "jobs", "--queues", "1"]);
    produce(&node, "jobs", &[], &lines(100, "job-"));
    let first = consume_json(
        &node,
        &[
            "jobs", "--group", "workers", "--from", "earliest", "--count", "40",
        ],
    );
    assert_eq!(
        bodies(&first),
        (0..40).map(|i| format!("job-{i}")).collect::<Vec<_>>()
    );

    assert!(node.stop().success(), "SIGTERM must exit 0");
    node.restart();

    let rest = consume_json(&node, &["jobs", "--group", "workers", "--count", "60"]);
    assert_eq!(
        bodies(&rest),
        (40..100).map(|i| format!("job-{i}")).collect::<Vec<_>>()
    );
    let described = node.ok(&["group", "describe", "workers"]);
    assert!(described.contains("jobs"), "{described}");

    node.ok(&[
        "group", "reset", "workers", "--topic", "jobs", "--to", "earliest",
    ]);
    let again = consume_json(&node, &["jobs", "--group", "workers", "--count", "100"]);
    assert_eq!(again.len(), 100);
    assert_eq!(bodies(&again)[0], "job-0");

    node.ok(&[
        "group", "reset", "workers", "--topic", "jobs", "--to", "latest",
    ]);
    produce(&node, "jobs", &[], "late\n");
    let late = consume_json(&node, &["jobs", "--group", "workers", "--count", "1"]);
    assert_eq!(bodies(&late), vec!["late".to_string()]);

    let future = "2100-01-01T00:00:00Z";
    node.ok(&[
        "group", "reset", "workers", "--topic", "jobs", "--to", future,
    ]);
    let none = consume_json(&node, &["jobs", "--group", "workers"]);
    assert!(none.is_empty());
    assert!(node.ok(&["group", "list"]).contains("workers"));
}

#[test]
fn new_group_starts_from_latest_by_default() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "news", "--queues", "2"]);
    produce(&node, "news", &[], &lines(10, "old-"));
    let none = consume_json(&node, &["news", "--group", "fresh"]);
    assert!(none.is_empty(), "a new group starts at the latest offset");
}

#[test]
fn sync_flush_crash_loses_no_acknowledged_message() {
    let mut node = Node::start(&["--flush", "sync"]);
    node.ok(&["topic", "create", "payments", "--queues", "4"]);
    produce(&node, "payments", &[], &lines(20_000, "pay-"));
    node.kill();
    node.restart();
    let messages = consume_json(
        &node,
        &[
            "payments", "--group", "audit", "--from", "earliest", "--count", "20000",
        ],
    );
    let got: BTreeSet<String> = bodies(&messages).into_iter().collect();
    assert_eq!(messages.len(), 20_000);
    assert_eq!(got.len(), 20_000);
}

#[test]
fn a_second_node_on_the_same_data_directory_refuses_to_start() {
    let node = Node::start(&[]);
    let out = std::process::Command::new(crate::harness::WEIR)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--kafka",
            "",
            "--data-dir",
        ])
        .arg(node.data_dir())
        .output()
        .expect("run second weir serve");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("data directory"), "{err}");
    node.ok(&["topic", "list"]);
}

#[test]
fn environment_variables_set_config_keys() {
    let node = Node::start_with_env(&[], &[("WEIR_DEFAULT_QUEUES", "6")]);
    node.ok(&["topic", "create", "wide"]);
    let described = node.ok(&["topic", "describe", "wide"]);
    let queue_rows = described
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(queue_rows, 6, "{described}");
}

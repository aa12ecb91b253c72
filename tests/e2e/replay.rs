//! Lookup and replay: a queue from any offset without a group, a group reset to a time, and
//! lookup by id and by key.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::harness::{Node, assert_success};

fn produce_lines(node: &Node, input: &str) -> Vec<String> {
    let args = ["produce", "ledger", "--print-ids"];
    let out = node.cli_with_stdin(&args, Some(input.as_bytes()));
    assert_success(&args, &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn replay_from_offset_reset_to_time_and_lookup() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "ledger", "--queues", "1"]);
    let input: String = (0..10).map(|i| format!("entry-{i}\n")).collect();
    let ids = produce_lines(&node, &input);
    assert_eq!(ids.len(), 10);

    // Any offset, no group.
    let out = node.ok(&[
        "consume", "ledger", "--queue", "0", "--offset", "3", "--count", "4",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["entry-3", "entry-4", "entry-5", "entry-6"]
    );
    let rest = node.ok(&["consume", "ledger", "--queue", "0", "--offset", "8"]);
    assert_eq!(rest.lines().collect::<Vec<_>>(), ["entry-8", "entry-9"]);
    let bad = node.cli(&["consume", "ledger", "--queue", "0", "--offset", "99"]);
    assert!(!bad.status.success());

    // Reset a group to a time: it gets what was stored from then on.
    std::thread::sleep(Duration::from_millis(50));
    let cut = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(50));
    node.ok(&["produce", "ledger", "--key", "acct-1", "--body", "late-1"]);
    node.ok(&["produce", "ledger", "--key", "acct-1", "--body", "late-2"]);
    let all = node.ok(&[
        "consume", "ledger", "--group", "audit", "--from", "earliest", "--count", "12",
    ]);
    assert_eq!(all.lines().count(), 12);
    node.ok(&["group", "reset", "audit", "--topic", "ledger", "--to", &cut]);
    let again = node.ok(&[
        "consume",
        "ledger",
        "--group",
        "audit",
        "--idle-timeout",
        "3s",
    ]);
    assert_eq!(again.lines().collect::<Vec<_>>(), ["late-1", "late-2"]);

    // Lookup by id and by key.
    let got: Value = serde_json::from_str(&node.ok(&["message", "get", &ids[7]])).unwrap();
    assert_eq!(got["body"], "entry-7");
    assert_eq!(got["offset"], 7);
    let found = node.ok(&["message", "find", "--topic", "ledger", "--key", "acct-1"]);
    let bodies: Vec<String> = found
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(bodies, ["late-1", "late-2"]);
}

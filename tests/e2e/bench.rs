//! `weir bench`: produce, consume and e2e runs against a real node print one JSON summary
//! each, with the right message counts.

use crate::harness::Node;

fn summary(node: &Node, args: &[&str]) -> serde_json::Value {
    let out = node.ok(args);
    let value: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("weir {args:?} printed no JSON object ({e}): {out}"));
    for key in [
        "messages",
        "bytes",
        "elapsed_secs",
        "msgs_per_sec",
        "mb_per_sec",
    ] {
        assert!(value[key].is_number(), "{key} missing in {value}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            value["latency_us"][key].is_u64(),
            "latency_us.{key} missing in {value}"
        );
    }
    assert_eq!(value["errors"], 0, "{value}");
    value
}

#[test]
fn bench_produce_consume_and_e2e_report_json_summaries() {
    let node = Node::start(&[]);
    let produced = summary(
        &node,
        &[
            "bench",
            "produce",
            "--topic",
            "bench-t",
            "--create",
            "--queues",
            "4",
            "--messages",
            "20000",
            "--size",
            "100",
            "--producers",
            "2",
            "--json",
        ],
    );
    assert_eq!(produced["messages"], 20000);
    assert_eq!(produced["bytes"], 2_000_000);
    assert!(produced["msgs_per_sec"].as_f64().unwrap() > 0.0);

    // The messages really are stored: a group reads exactly the 20,000 back.
    let consumed = summary(
        &node,
        &[
            "bench",
            "consume",
            "--topic",
            "bench-t",
            "--group",
            "bench-g",
            "--messages",
            "20000",
            "--consumers",
            "2",
            "--json",
        ],
    );
    assert_eq!(consumed["messages"], 20000);
    assert_eq!(consumed["bytes"], 2_000_000);

    // Open loop: 1,000 msgs/s for 2 s schedules exactly 2,000 messages, all received.
    let e2e = summary(
        &node,
        &[
            "bench",
            "e2e",
            "--rate",
            "1000",
            "--duration",
            "2s",
            "--json",
        ],
    );
    assert_eq!(e2e["messages"], 2000);
    let l = &e2e["latency_us"];
    assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64());

    // Duration mode with --flush-wait (synchronous sends) stops on time.
    let timed = summary(
        &node,
        &[
            "bench",
            "produce",
            "--topic",
            "bench-t",
            "--duration",
            "1s",
            "--batch-size",
            "1",
            "--flush-wait",
            "--json",
        ],
    );
    assert!(timed["messages"].as_u64().unwrap() > 0);
    assert!(timed["elapsed_secs"].as_f64().unwrap() < 5.0);
}

#[test]
fn bench_produce_to_a_missing_topic_without_create_fails() {
    let node = Node::start(&[]);
    let out = node
        .client_command(&["bench", "produce", "--topic", "nope", "--messages", "10"])
        .output()
        .expect("run weir bench");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no summary for a failed run");
}

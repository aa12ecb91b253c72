//! `GET /metrics` after a known workload: the counters moved by exactly the workload.

use std::time::Duration;

use bytes::Bytes;
use weir_client::connection::{Connection, ConnectionConfig};
use weir_proto::{ApiKey, pb};

use crate::harness::Node;
use crate::http_api::Http;

/// The value of the sample `series` (name and labels, as rendered) on a metrics page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn value(page: &str, series: &str) -> f64 {
    sample(page, series).unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_a_known_workload() {
    let node = Node::start(&["--flush", "sync"]);
    let http = Http::new(&node);
    node.ok(&["topic", "create", "metered", "--queues", "1"]);
    // 1,000 messages of one size: 12-byte bodies, no key, tag or properties.
    let input: String = (0..1000).map(|i| format!("message-{i:04}\n")).collect();
    // In batches of 100: a pull answers whole batches, so 400 is four of them.
    let sent = node.cli_with_stdin(
        &["produce", "metered", "--batch-messages", "100"],
        Some(input.as_bytes()),
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    // Consume exactly 400 with one pull, and commit them for group "readers".
    let connection = Connection::connect(&node.addr, ConnectionConfig::default())
        .await
        .unwrap();
    let pull = pb::PullRequest {
        topic: "metered".into(),
        queue_id: 0,
        offset: 0,
        max_messages: 400,
        ..Default::default()
    };
    let (pulled, records): (pb::PullResponse, Bytes) = connection
        .call(ApiKey::Pull, &pull, Bytes::new(), None)
        .await
        .unwrap();
    assert_eq!(pulled.count, 400);
    let commit = pb::CommitOffsetsRequest {
        group: "readers".into(),
        offsets: vec![pb::OffsetEntry {
            topic: "metered".into(),
            queue_id: 0,
            offset: 400,
        }],
        ..Default::default()
    };
    let _: (pb::Empty, Bytes) = connection
        .call(ApiKey::CommitOffsets, &commit, Bytes::new(), None)
        .await
        .unwrap();

    let (status, page) = tokio::task::spawn_blocking(move || http.get_text("/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let topic = r#"{topic="metered"}"#;
    assert_eq!(
        value(&page, &format!("weir_messages_in_total{topic}")),
        1000.0
    );
    assert_eq!(
        value(&page, &format!("weir_messages_out_total{topic}")),
        400.0
    );
    let bytes_in = value(&page, &format!("weir_bytes_in_total{topic}"));
    let bytes_out = value(&page, &format!("weir_bytes_out_total{topic}"));
    // Only this topic was written, so the log holds exactly the bytes counted in; every batch
    // of 100 has the same size, so four of them are 40% of it.
    assert_eq!(bytes_in, value(&page, "weir_commit_log_bytes"));
    assert_eq!(bytes_out, records.len() as f64);
    assert_eq!(bytes_out * 10.0, bytes_in * 4.0);
    assert_eq!(bytes_in % 10.0, 0.0);

    let queue = r#"{group="readers",topic="metered",queue="0"}"#;
    assert_eq!(
        value(&page, &format!("weir_group_committed_offset{queue}")),
        400.0
    );
    assert_eq!(value(&page, &format!("weir_group_lag{queue}")), 600.0);

    assert_eq!(
        value(&page, r#"weir_requests_total{api="pull",code="ok"}"#),
        1.0
    );
    assert_eq!(
        value(
            &page,
            r#"weir_requests_total{api="commit_offsets",code="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &page,
            r#"weir_requests_total{api="create_topic",code="ok"}"#
        ),
        1.0
    );
    let produces = value(&page, r#"weir_requests_total{api="produce",code="ok"}"#);
    assert!(produces >= 1.0, "{produces}");
    assert_eq!(
        value(
            &page,
            r#"weir_request_duration_seconds_count{api="produce"}"#
        ),
        produces
    );
    assert_eq!(value(&page, "weir_produce_durable_seconds_count"), produces);
    assert!(value(&page, "weir_fsync_total") > 0.0);
    assert!(value(&page, "weir_fsync_duration_seconds_count") > 0.0);
    assert!(value(&page, "weir_connections") >= 1.0);
    assert_eq!(value(&page, "weir_long_poll_waiters"), 0.0);
    assert_eq!(value(&page, "weir_dispatch_lag_bytes"), 0.0);
    assert_eq!(value(&page, "weir_unflushed_bytes"), 0.0);
    assert_eq!(value(&page, "weir_topics"), 1.0);
    assert!(value(&page, "weir_commit_log_segments") >= 1.0);
    assert!(value(&page, "weir_disk_free_bytes") > 0.0);
    for help in [
        "# HELP weir_messages_in_total ",
        "# HELP weir_fsync_total ",
        "# HELP weir_group_lag ",
        "# TYPE weir_request_duration_seconds histogram",
    ] {
        assert!(page.contains(help), "{help} missing in:\n{page}");
    }

    // A rejected request is counted under its error code.
    let missing = pb::PullRequest {
        topic: "nope".into(),
        ..Default::default()
    };
    let refused: weir_client::Result<(pb::PullResponse, Bytes)> = connection
        .call(ApiKey::Pull, &missing, Bytes::new(), None)
        .await;
    assert!(refused.is_err());
    let http = Http::new(&node);
    let (_, page) = tokio::task::spawn_blocking(move || http.get_text("/metrics"))
        .await
        .unwrap();
    assert_eq!(
        value(
            &page,
            r#"weir_requests_total{api="pull",code="topic_not_found"}"#
        ),
        1.0
    );

    // A shared group that received 30 messages and acked them: its low-water mark stands
    // for the committed offset, its lag counts what is not acked.
    let shared = weir_client::SharedConsumer::new(weir_client::SharedConsumerConfig::new(
        [node.addr.clone()],
        "sharers",
        "metered",
    ))
    .unwrap();
    let mut received = Vec::new();
    while received.len() < 30 {
        let want = 30 - received.len() as u32;
        received.extend(shared.receive(want, Duration::from_secs(60)).await.unwrap());
    }
    shared.ack(&received).await.unwrap();
    let http = Http::new(&node);
    let (_, page) = tokio::task::spawn_blocking(move || http.get_text("/metrics"))
        .await
        .unwrap();
    let queue = r#"{group="sharers",topic="metered",queue="0"}"#;
    assert_eq!(
        value(&page, &format!("weir_group_committed_offset{queue}")),
        30.0
    );
    assert_eq!(value(&page, &format!("weir_group_lag{queue}")), 970.0);
}

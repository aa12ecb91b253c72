//! The admin API endpoints the dashboard uses, over real HTTP and without a browser: produce
//! over HTTP, message lookups by queue and offset and by time, the overview counts and the
//! traffic history, topic paging, adding queues, delayed messages, and a group's dead letters
//! (list, inspect, resend).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, PushConsumer, StartFrom};

use crate::harness::Node;
use crate::http_api::Http;

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn produce_over_http_and_find_by_position_and_time() {
    let node = Node::start(&[]);
    let http = Http::new(&node);
    let (status, _) = http.post("/api/v1/topics", r#"{"name":"orders","queues":2}"#);
    assert_eq!(status, 201);
    let before = std::time::SystemTime::now() - Duration::from_secs(1);

    let (status, sent) = http.post(
        "/api/v1/topics/orders/messages",
        &json!({"key": "order-1", "tag": "paid", "properties": {"region": "eu"}, "body": "{\"n\":1}"})
            .to_string(),
    );
    assert_eq!(status, 201, "{sent}");
    let id = sent["id"].as_str().unwrap();
    let (queue, offset) = (
        sent["queue_id"].as_u64().unwrap(),
        sent["queue_offset"].as_u64().unwrap(),
    );
    assert_eq!(offset, 0);

    let (status, got) = http.get(&format!("/api/v1/messages/{id}"));
    assert_eq!(status, 200);
    assert_eq!(got["key"], "order-1");
    assert_eq!(got["tag"], "paid");
    assert_eq!(got["properties"]["region"], "eu");
    assert_eq!(got["body"], "{\"n\":1}");
    // The same key maps to the same queue, as with the Rust client.
    let (_, again) = http.post(
        "/api/v1/topics/orders/messages",
        r#"{"key":"order-1","body":"2"}"#,
    );
    assert_eq!(again["queue_id"].as_u64(), Some(queue));
    assert_eq!(again["queue_offset"], 1);

    let (status, at) = http.get(&format!("/api/v1/topics/orders/queues/{queue}/messages/0"));
    assert_eq!(status, 200);
    assert_eq!(at["id"], id);
    let (status, page) = http.get(&format!(
        "/api/v1/topics/orders/queues/{queue}/messages?from=0&max=10"
    ));
    assert_eq!(status, 200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_offset"], 2);
    let (status, missing) = http.get(&format!("/api/v1/topics/orders/queues/{queue}/messages/5"));
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("message_not_found"))
    );

    let since = humantime::format_rfc3339_millis(before).to_string();
    let (status, found) = http.get(&format!("/api/v1/messages?topic=orders&time={since}"));
    assert_eq!(status, 200);
    assert_eq!(found["messages"].as_array().unwrap().len(), 2);
    let (_, later) = http.get("/api/v1/messages?topic=orders&time=2099-01-01T00:00:00Z");
    assert!(later["messages"].as_array().unwrap().is_empty());
    let (status, bad) = http.get("/api/v1/messages?topic=orders&time=yesterday");
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_argument"))
    );

    // A binary body, a delayed message, and the errors.
    let (_, bin) = http.post(
        "/api/v1/topics/orders/messages",
        r#"{"queue_id":1,"body_hex":"00ff10"}"#,
    );
    let (_, got) = http.get(&format!("/api/v1/messages/{}", bin["id"].as_str().unwrap()));
    assert_eq!(got["body_hex"], "00ff10");
    let (status, delayed) = http.post(
        "/api/v1/topics/orders/messages",
        r#"{"key":"later","body":"in an hour","delay_ms":3600000}"#,
    );
    assert_eq!(status, 201);
    assert!(delayed.get("queue_offset").is_none(), "{delayed}");
    assert!(delayed["deliver_at_ms"].as_i64().unwrap() > 0);
    let (_, pending) = http.get("/api/v1/delayed");
    assert_eq!(pending["pending"], 1);
    assert_eq!(pending["messages"][0]["topic"], "orders");
    assert_eq!(pending["messages"][0]["id"], delayed["id"]);
    let (_, overview) = http.get("/api/v1/overview");
    assert_eq!(overview["delayed"], 1);

    let (status, err) = http.post("/api/v1/topics/nope/messages", r#"{"body":"x"}"#);
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("topic_not_found"))
    );
    let (status, err) = http.post(
        "/api/v1/topics/orders/messages",
        r#"{"properties":{"n":1}}"#,
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, err) = http.post(
        "/api/v1/topics/orders/messages",
        r#"{"queue_id":9,"body":"x"}"#,
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("queue_not_found"))
    );
}

#[test]
fn overview_history_paging_and_queues() {
    let node = Node::start(&[]);
    let http = Http::new(&node);
    for name in ["alpha", "beta", "gamma"] {
        node.ok(&["topic", "create", name, "--queues", "2"]);
    }
    let lines: String = (0..500).map(|i| format!("m{i}\n")).collect();
    let out = node.cli_with_stdin(&["produce", "beta"], Some(lines.as_bytes()));
    assert!(out.status.success());

    let (_, overview) = http.get("/api/v1/overview");
    assert_eq!(overview["topics"], 3);
    assert_eq!(overview["queues"], 6);
    assert_eq!(overview["messages"], 500);
    assert_eq!(overview["groups"], 0);
    assert!(overview["disk_total_bytes"].as_u64().unwrap() > 0);
    // The broker's own one-second samples show the burst.
    wait_until("a history sample with messages in", || {
        let (_, history) = http.get("/api/v1/history?seconds=60");
        history["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["messages_in"].as_f64().unwrap())
            .sum::<f64>()
            >= 500.0
    });
    // And each queue's rate, measured every five seconds (from the sampler's first look on).
    let out = node.cli_with_stdin(&["produce", "gamma"], Some(lines.as_bytes()));
    assert!(out.status.success());
    wait_until("gamma's rate", || {
        let (_, topic) = http.get("/api/v1/topics/gamma");
        topic["messages"] == 500 && topic["rate"].as_f64().unwrap() > 0.0
    });

    let (_, page) = http.get("/api/v1/topics?offset=1&limit=1");
    assert_eq!(page["total"], 3);
    let names: Vec<&str> = page["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta"]);
    let (_, filtered) = http.get("/api/v1/topics?q=mm");
    assert_eq!(filtered["total"], 1);

    let (status, grown) = http.post("/api/v1/topics/alpha/queues", r#"{"queues":5}"#);
    assert_eq!(status, 200);
    assert_eq!(grown["queue_count"], 5);
    let (status, err) = http.post("/api/v1/topics/alpha/queues", r#"{"queues":3}"#);
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_argument"))
    );
    assert!(err["message"].as_str().unwrap().contains("must be larger"));
    let (_, groups) = http.get("/api/v1/topics/alpha/groups");
    assert_eq!(groups["groups"], json!([]));
    let (_, txns) = http.get("/api/v1/transactions");
    assert_eq!(txns["pending"], 0);

    // A half message left undecided is listed until decided.
    let producer = node.background(&[
        "produce",
        "alpha",
        "--transaction",
        "--group",
        "payments",
        "--decide",
        "never",
        "--body",
        "pay",
    ]);
    let half = producer
        .wait_for_line(Duration::from_secs(15), |l| l.contains(r#""event":"half""#))
        .expect("the half message");
    let half: serde_json::Value = serde_json::from_str(&half).unwrap();
    let (_, txns) = http.get("/api/v1/transactions");
    assert_eq!(txns["pending"], 1, "{txns}");
    let listed = &txns["half_messages"][0];
    assert_eq!(listed["transaction_id"], half["transaction_id"]);
    assert_eq!(listed["producer_group"], "payments");
    assert_eq!(listed["topic"], "alpha");
    assert!(listed["stored_at_ms"].as_i64().unwrap() > 0);
    let (_, overview) = http.get("/api/v1/overview");
    assert_eq!(overview["transactions"], 1);
}

#[test]
fn dead_letters_are_listed_inspected_and_resent_over_http() {
    let node = Node::start_with_env(
        &[],
        &[("WEIR_RETRY_BACKOFF", "100ms"), ("WEIR_MAX_RETRIES", "0")],
    );
    let http = Http::new(&node);
    node.ok(&["topic", "create", "jobs", "--queues", "1"]);
    let (status, empty) = http.get("/api/v1/groups/workers/dead-letters");
    assert_eq!(status, 200);
    assert!(empty["messages"].as_array().unwrap().is_empty());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    runtime.block_on(async {
        let mut config = ConsumerConfig::new([node.addr.clone()], "workers", "jobs");
        config.start_from = StartFrom::Earliest;
        config.max_wait = Duration::from_millis(300);
        let s = seen.clone();
        let consumer = PushConsumer::start(config, move |m| {
            s.lock().unwrap().push(m.reconsume_times());
            ConsumeResult::Retry
        })
        .await
        .unwrap();
        node.ok(&["produce", "jobs", "--key", "job-1", "--body", "fails"]);
        let http = Http::new(&node);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get("/api/v1/groups/workers/dead-letters").1["messages"]
            .as_array()
            .is_none_or(|m| m.is_empty())
        {
            assert!(Instant::now() < deadline, "no dead letter");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        consumer.shutdown().await.unwrap();
    });

    let (_, letters) = http.get("/api/v1/groups/workers/dead-letters");
    let letter = &letters["messages"][0];
    assert_eq!(letter["topic"], "%DLQ%workers");
    assert_eq!(letter["properties"]["ORIGIN_TOPIC"], "jobs");
    assert_eq!(letter["body"], "fails");
    let id = letter["id"].as_str().unwrap();
    let (status, one) = http.get(&format!("/api/v1/groups/workers/dead-letters/{id}"));
    assert_eq!(status, 200);
    assert_eq!(one["key"], "job-1");
    let (status, err) = http.get(&format!("/api/v1/groups/others/dead-letters/{id}"));
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("message_not_found"))
    );
    let (_, overview) = http.get("/api/v1/overview");
    assert_eq!(overview["dead_letters"], 1);

    let (status, resent) = http.post(
        &format!("/api/v1/groups/workers/dead-letters/{id}/resend"),
        "",
    );
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["resent"], 1);
    let copy = resent["ids"][0].as_str().unwrap();
    let (_, copy) = http.get(&format!("/api/v1/messages/{copy}"));
    assert_eq!(copy["topic"], "%RETRY%workers");
    assert_eq!(copy["body"], "fails");
    let (_, all) = http.post("/api/v1/groups/workers/dead-letters/resend-all", "");
    assert_eq!(all["resent"], 1);

    // The group gets both copies again, as messages of jobs.
    runtime.block_on(async {
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let g = got.clone();
        let mut config = ConsumerConfig::new([node.addr.clone()], "workers", "jobs");
        config.max_wait = Duration::from_millis(300);
        let consumer = PushConsumer::start(config, move |m| {
            g.lock().unwrap().push((
                m.topic.clone(),
                String::from_utf8_lossy(&m.body).into_owned(),
            ));
            ConsumeResult::Success
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.lock().unwrap().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the resent copies were not consumed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        consumer.shutdown().await.unwrap();
        let got = got.lock().unwrap();
        assert!(
            got.iter().all(|(t, b)| t == "jobs" && b == "fails"),
            "{got:?}"
        );
    });
}

#[test]
fn cross_site_writes_are_refused() {
    let node = Node::start(&[]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/api/v1/topics", node.http_url());
    let post = |origin: &str| {
        let mut response = agent
            .post(&url)
            .header("origin", origin)
            .header("content-type", "application/json")
            .send(r#"{"name":"planted"}"#)
            .expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    let (status, body) = post("https://evil.example");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cross-site request refused"), "{body}");
    assert!(!node.ok(&["topic", "list"]).contains("planted"));
    // The dashboard's own requests come from the listener's origin.
    let (status, body) = post(&node.http_url());
    assert_eq!(status, 201, "{body}");
}

/// A topic's `bytes` in the topic list and on its own, as lines of the CLI's producer.
fn topic_bytes(http: &Http, topic: &str) -> u64 {
    let (status, one) = http.get(&format!("/api/v1/topics/{topic}"));
    assert_eq!(status, 200, "{one}");
    let (_, list) = http.get(&format!("/api/v1/topics?q={topic}&limit=50"));
    let listed = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .unwrap_or_else(|| panic!("{topic} not listed: {list}"));
    assert_eq!(
        listed["bytes"], one["bytes"],
        "the list and the topic agree"
    );
    one["bytes"].as_u64().expect("bytes")
}

#[test]
fn topic_sizes_count_stored_bytes_through_a_restart_and_a_deletion() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "sized", "--queues", "2"]);
    node.ok(&["topic", "create", "other", "--queues", "1"]);
    assert_eq!(topic_bytes(&Http::new(&node), "sized"), 0);
    let body = "x".repeat(1000);
    let lines: String = (0..200).map(|_| format!("{body}\n")).collect();
    let out = node.cli_with_stdin(&["produce", "sized"], Some(lines.as_bytes()));
    assert!(out.status.success(), "{out:?}");
    let http = Http::new(&node);
    wait_until("200 messages stored", || {
        http.get("/api/v1/topics/sized").1["messages"] == 200
    });
    let bytes = topic_bytes(&http, "sized");
    // The bodies, plus a little per message and per batch; nothing of the other topic.
    assert!(
        (200 * 1000..200 * 1100).contains(&bytes),
        "200 bodies of 1000 bytes take {bytes} bytes"
    );
    assert_eq!(topic_bytes(&http, "other"), 0);

    node.stop();
    node.restart();
    let http = Http::new(&node);
    assert_eq!(
        topic_bytes(&http, "sized"),
        bytes,
        "the same after a restart"
    );
    node.kill();
    node.restart();
    let http = Http::new(&node);
    assert_eq!(topic_bytes(&http, "sized"), bytes, "the same after a crash");

    assert_eq!(http.delete("/api/v1/topics/sized").0, 204);
    node.ok(&["topic", "create", "sized", "--queues", "2"]);
    assert_eq!(topic_bytes(&http, "sized"), 0, "a topic made anew is empty");
}

#[test]
fn the_group_list_is_paged_with_summaries_and_fast_over_1000_groups() {
    let node = Node::start(&[]);
    let http = Http::new(&node);
    node.ok(&["topic", "create", "paged", "--queues", "2"]);
    node.cli_with_stdin(&["produce", "paged"], Some(b"a\nb\nc\n"));
    // A reset gives a group offsets: 1,000 groups, each at the start of `paged`.
    for i in 0..1000 {
        let (status, body) = http.post(
            &format!("/api/v1/groups/g-{i:04}/reset"),
            r#"{"topic":"paged","to":"earliest"}"#,
        );
        assert_eq!(status, 200, "{body}");
    }
    let started = Instant::now();
    let (status, page) = http.get("/api/v1/groups?offset=50&limit=50");
    let took = started.elapsed();
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1000);
    let names: Vec<&str> = page["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 50);
    assert_eq!((names[0], names[49]), ("g-0050", "g-0099"));
    let summary = &page["summaries"][0];
    assert_eq!(summary["group"], "g-0050");
    assert_eq!(summary["modes"], json!(["clustering"]));
    assert_eq!(summary["members"], 0);
    assert_eq!(summary["topics"], 1);
    assert_eq!(summary["total_lag"], 3);
    assert!(
        took < Duration::from_millis(500),
        "a page of 50 of 1,000 groups took {took:?}"
    );
    // Filtered, and the last partial page.
    let (_, filtered) = http.get("/api/v1/groups?q=g-09&offset=90&limit=50");
    assert_eq!(filtered["total"], 100);
    assert_eq!(filtered["groups"].as_array().unwrap().len(), 10);
    // Without a limit: every name, no summaries (as before).
    let (_, all) = http.get("/api/v1/groups");
    assert_eq!(all["groups"].as_array().unwrap().len(), 1000);
    assert!(all.get("summaries").is_none());
    let (status, bad) = http.get("/api/v1/groups?limit=many");
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_argument"))
    );
}

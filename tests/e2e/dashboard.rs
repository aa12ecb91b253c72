//! The web dashboard in a real browser: `dashboard_browser.py` drives headless Chromium with
//! Selenium against a real node — creates a topic in the UI and sees it with the CLI, watches
//! counts and the rate chart move while the CLI produces, finds messages by key, id and
//! position, resets a group (refused while it has live members), resends a dead letter, lists
//! delayed messages, pages 1,000 topics and 60 groups, shows topic sizes, and navigates at
//! phone width — saving a screenshot of each page under `target/dashboard-screenshots/`. This
//! test makes the dead letter first (a consumer that always fails) and afterwards consumes the
//! resent copy. A second test opens the overview of a replica of a 3-replica broker group and
//! checks its cluster view.
//!
//! Needs `chromium`, `chromium-driver` (Debian) and Python's `selenium` (`.ci/run` installs
//! them). Without them the test fails under `CI=true` and says it did not run otherwise.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, StartFrom};

use crate::cluster::nodes::Cluster;
use crate::harness::{Node, WEIR};
use crate::http_api::Http;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser test `test` can run: without a browser it fails under `CI=true` and
/// says it did not run otherwise.
fn browser_present(test: &str) -> bool {
    let Some(missing) = missing_browser() else {
        return true;
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{test} needs {missing}; .ci/run installs them");
    eprintln!("NOT RUN: {test} needs {missing} (required under CI=true)");
    false
}

/// Runs `dashboard_browser.py` against the HTTP listener at `url` (native address `server`)
/// with `extra` arguments; returns its output once every check passed.
fn run_browser(url: &str, server: &str, extra: &[&str], logs: impl Fn() -> String) -> String {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/dashboard_browser.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--url", url, "--weir", WEIR, "--server", server])
        .arg("--screenshots")
        .arg(screenshots())
        .args(extra)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nlogs:\n{}",
        logs()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    eprintln!("{stdout}");
    stdout
}

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    target_dir().join("dashboard-screenshots")
}

/// What is missing to run a browser test, if anything.
fn missing_browser() -> Option<String> {
    let mut missing = Vec::new();
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !std::path::Path::new(path).exists() {
            missing.push(path.to_owned());
        }
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !selenium {
        missing.push("python3 with the selenium package".to_owned());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn consumer_config(node: &Node) -> ConsumerConfig {
    let mut config = ConsumerConfig::new([node.addr.clone()], "billing", "invoices");
    config.start_from = StartFrom::Earliest;
    config.max_wait = Duration::from_millis(500);
    config
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_get(node: &Node, path: &str) -> Value {
    Http::new(node).get(path).1
}

#[test]
fn dashboard_in_a_real_browser() {
    if !browser_present("dashboard_in_a_real_browser") {
        return;
    }
    let node = Node::start_with_env(
        &[],
        &[
            ("WEIR_RETRY_BACKOFF", "100ms"),
            ("WEIR_MAX_RETRIES", "1"),
            ("WEIR_GROUP_SESSION_TIMEOUT_MS", "6000"),
        ],
    );
    node.ok(&["topic", "create", "invoices", "--queues", "1"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // A consumer that always fails: the message goes to %DLQ%billing.
    runtime.block_on(async {
        // The retry count of each delivery: a delivery may repeat (at least once, e.g. after a
        // rebalance on a loaded machine), but the message must be seen first and retried once.
        let attempts = Arc::new(Mutex::new(BTreeSet::new()));
        let a = attempts.clone();
        let consumer = PushConsumer::start(consumer_config(&node), move |m| {
            a.lock().unwrap().insert(m.reconsume_times());
            ConsumeResult::Retry
        })
        .await
        .unwrap();
        let producer = Producer::new(ProducerConfig::new([node.addr.clone()])).unwrap();
        producer
            .send(Message::new("invoices", "poison").with_key("inv-7"))
            .await
            .unwrap();
        wait_for("the dead letter", || {
            http_get(&node, "/api/v1/groups/billing/dead-letters")["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        })
        .await;
        consumer.shutdown().await.unwrap();
        producer.close().await;
        assert_eq!(
            *attempts.lock().unwrap(),
            BTreeSet::from([0, 1]),
            "one delivery and one retry"
        );
    });

    run_browser(&node.http_url(), &node.addr, &[], || node.log());
    let screenshots = screenshots();
    for page in [
        "overview",
        "topics",
        "topic",
        "messages",
        "groups",
        "group",
        "dead-letters",
        "pending",
        "phone-topics",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }

    // The dead letter resent from the UI is consumed again by its group.
    runtime.block_on(async {
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let g = got.clone();
        let consumer = PushConsumer::start(consumer_config(&node), move |m| {
            g.lock().unwrap().push((
                String::from_utf8_lossy(&m.body).into_owned(),
                m.topic.clone(),
            ));
            ConsumeResult::Success
        })
        .await
        .unwrap();
        wait_for("the resent message", || !got.lock().unwrap().is_empty()).await;
        consumer.shutdown().await.unwrap();
        let got = got.lock().unwrap();
        assert_eq!(
            got.as_slice(),
            [("poison".to_owned(), "invoices".to_owned())],
            "the resent dead letter, as a message of its origin topic"
        );
    });
}

#[test]
fn dashboard_cluster_view_in_a_real_browser() {
    if !browser_present("dashboard_cluster_view_in_a_real_browser") {
        return;
    }
    let _heavy = crate::harness::heavy();
    let cluster = Cluster::start(1, 3);
    // A follower's dashboard: it shows the whole group, itself marked.
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = cluster
        .replicas
        .iter()
        .find(|r| r.node_id != leader)
        .expect("a follower");
    let http = follower
        .http_addr
        .clone()
        .expect("the follower's HTTP address");
    let native = follower
        .addr
        .clone()
        .expect("the follower's native address");
    run_browser(
        &format!("http://{http}"),
        &native,
        &["--scenario", "cluster", "--replicas", "3"],
        || cluster.logs_tail(),
    );
    assert!(screenshots().join("cluster.png").exists(), "no screenshot");
}

#[test]
fn dashboard_can_be_turned_off() {
    let on = Node::start(&[]);
    let (status, page) = Http::new(&on).get_text("/");
    assert_eq!(status, 200);
    assert!(page.contains("/dashboard/app.js"), "{page}");
    let (status, script) = Http::new(&on).get_text("/dashboard/app.js");
    assert_eq!(status, 200);
    assert!(script.contains("/api/v1"));
    let off = Node::start(&["--dashboard", "false"]);
    assert_eq!(Http::new(&off).get_text("/").0, 404);
    assert_eq!(Http::new(&off).get_text("/dashboard/app.js").0, 404);
    // The admin API stays.
    assert_eq!(http_get(&off, "/api/v1/overview")["topics"], 0);
    let off_by_env = Node::start_with_env(&[], &[("WEIR_DASHBOARD", "false")]);
    assert_eq!(Http::new(&off_by_env).get_text("/").0, 404);
}

//! Delayed messages against a real node: precision, delay levels, the CLI flags, and a broker
//! killed while messages wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, StartFrom};

use crate::harness::Node;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap()
}

/// (body, deliver_at, arrival ms, properties) of each message a push consumer got.
type Seen = Arc<Mutex<Vec<(String, i64, i64, Vec<(String, String)>)>>>;

#[test]
fn delayed_messages_arrive_on_time() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "timers", "--queues", "2"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let seen: Seen = Arc::default();
        let mut config = ConsumerConfig::new([node.addr.clone()], "timer-group", "timers");
        config.start_from = StartFrom::Earliest;
        config.max_wait = Duration::from_secs(2);
        let sink = seen.clone();
        let consumer = PushConsumer::start(config, move |m| {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            sink.lock().unwrap().push((
                body,
                m.deliver_at,
                now_ms(),
                m.properties()
                    .map(|(k, v)| (k.to_owned(), v.unwrap_or_default().to_owned()))
                    .collect(),
            ));
            ConsumeResult::Success
        })
        .await
        .unwrap();
        let producer = Producer::new(ProducerConfig::new([node.addr.clone()])).unwrap();
        let mut ids = Vec::new();
        for secs in [1u64, 2, 3] {
            let sent = producer
                .send(
                    Message::new("timers", format!("after-{secs}s"))
                        .with_delay(Duration::from_secs(secs)),
                )
                .await
                .unwrap();
            ids.push(sent.message_id.to_string());
        }
        let level = Message::new("timers", "level-1")
            .with_delay_level(1)
            .unwrap();
        producer.send(level).await.unwrap();
        assert!(Message::new("timers", "x").with_delay_level(19).is_err());
        producer.send(Message::new("timers", "now")).await.unwrap();

        let deadline = Instant::now() + Duration::from_secs(8);
        while seen.lock().unwrap().len() < 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 5, "{seen:?}");
        for (body, deliver_at, arrived, properties) in &seen {
            if body == "now" {
                assert_eq!(*deliver_at, 0);
                continue;
            }
            let late = arrived - deliver_at;
            assert!(late >= 0, "{body} arrived {}ms early", -late);
            assert!(late <= 150, "{body} arrived {late}ms late");
            let origin = properties.iter().find(|(k, _)| k == "DELAY_ORIGIN_ID");
            assert!(origin.is_some(), "{body}: {properties:?}");
            assert!(!properties.iter().any(|(k, _)| k.starts_with("REAL_")));
        }
        // The id a producer got names the pending copy; the delivered one points back to it.
        let delivered_origin: Vec<&str> = seen
            .iter()
            .filter_map(|s| {
                s.3.iter()
                    .find(|(k, _)| k == "DELAY_ORIGIN_ID")
                    .map(|(_, v)| v.as_str())
            })
            .collect();
        for id in &ids {
            assert!(
                delivered_origin.contains(&id.as_str()),
                "{id} not in {delivered_origin:?}"
            );
        }
        consumer.shutdown().await.unwrap();
        producer.close().await;
    });
    // Four delayed messages were appended to their queue, each within 150 ms: the lateness
    // histogram saw them (one observation per append).
    let (status, page) = crate::http_api::Http::new(&node).get_text("/metrics");
    assert_eq!(status, 200);
    let count: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("weir_delay_lateness_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lateness histogram in:\n{page}"));
    assert!((1.0..=4.0).contains(&count), "{count}");
    let topics = node.ok(&["topic", "list"]);
    assert!(!topics.contains("%DELAY%"), "{topics}");
    let internal = node.cli(&["produce", "%DELAY%", "--body", "x"]);
    assert!(!internal.status.success());
}

fn consume_one(node: &Node, group: &str) -> (Value, Instant) {
    let out = node.ok(&[
        "consume",
        "later",
        "--group",
        group,
        "--from",
        "earliest",
        "--count",
        "1",
        "--format",
        "json",
        "--idle-timeout",
        "8s",
    ]);
    let at = Instant::now();
    let line = out
        .lines()
        .next()
        .unwrap_or_else(|| panic!("nothing consumed:\n{}", node.log()));
    (serde_json::from_str(line).unwrap(), at)
}

#[test]
fn pending_delays_survive_a_crash_and_due_ones_come_at_restart() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "later", "--queues", "1"]);
    let t0 = Instant::now();
    let t0_ms = now_ms();
    node.ok(&[
        "produce",
        "later",
        "--delay",
        "1s",
        "--body",
        "due-while-down",
    ]);
    let at =
        humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(5)).to_string();
    node.ok(&[
        "produce",
        "later",
        "--deliver-at",
        &at,
        "--body",
        "after-restart",
    ]);
    // Nothing is visible yet.
    let early = node
        .client_command(&["consume", "later", "--queue", "0", "--offset", "0"])
        .output()
        .unwrap();
    assert!(early.status.success());
    assert!(early.stdout.is_empty(), "{early:?}");
    node.kill();
    std::thread::sleep(Duration::from_millis(1500));
    node.restart();
    let restarted = Instant::now();
    let (first, got) = consume_one(&node, "g");
    assert_eq!(first["body"], "due-while-down");
    assert!(
        got - restarted < Duration::from_secs(2),
        "took {:?}",
        got - restarted
    );
    assert!(first["deliver_at"].as_i64().unwrap() >= t0_ms + 1000);
    let (second, got) = consume_one(&node, "g");
    assert_eq!(second["body"], "after-restart");
    assert!(
        got - t0 >= Duration::from_secs(5),
        "arrived after {:?}",
        got - t0
    );
    // Each delivered exactly once.
    let all = node.ok(&["consume", "later", "--queue", "0", "--offset", "0"]);
    assert_eq!(
        all.lines().collect::<Vec<_>>(),
        ["due-while-down", "after-restart"]
    );
}

/// Benchmark, run by hand on a release build (docs/benchmarks.md, "Delayed messages"):
/// 1,000,000 pending delayed messages, all due within one second, 60 s after they are sent.
/// Prints the broker's RSS while they wait and the delivery lateness (store time of the
/// delivered copy minus its deliver-at) at p50, p99 and max.
#[test]
#[ignore]
fn bench_a_million_pending_delayed_messages() {
    const N: usize = 1_000_000;
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "bench-delay", "--queues", "4"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rss_before = crate::harness::rss_kib(node.pid());
    let due = SystemTime::now() + Duration::from_secs(60);
    runtime.block_on(async {
        let producer = Producer::new(ProducerConfig::new([node.addr.clone()])).unwrap();
        let mut handles = Vec::with_capacity(10_000);
        let started = Instant::now();
        for i in 0..N {
            let at = due + Duration::from_micros((i as u64 * 1_000_000) / N as u64);
            handles.push(
                producer
                    .send_async(Message::new("bench-delay", vec![b'x'; 100]).with_deliver_at(at)),
            );
            if handles.len() == 10_000 {
                for h in handles.drain(..) {
                    h.await.unwrap();
                }
            }
        }
        for h in handles.drain(..) {
            h.await.unwrap();
        }
        eprintln!("sent {N} delayed messages in {:?}", started.elapsed());
        producer.close().await;
    });
    let rss_pending = crate::harness::rss_kib(node.pid());
    eprintln!("broker RSS: {rss_before} KiB before, {rss_pending} KiB with {N} pending");
    let mut late: Vec<i64> = Vec::with_capacity(N);
    let wait = due.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(30);
    let deadline = Instant::now() + wait;
    let mut offsets = [0u64; 4];
    let admin = weir_client::Admin::new([node.addr.clone()]).unwrap();
    runtime.block_on(async {
        while late.len() < N && Instant::now() < deadline {
            let mut got = 0;
            for (q, offset) in offsets.iter_mut().enumerate() {
                let page = admin
                    .pull("bench-delay", q as u32, *offset, 1024)
                    .await
                    .unwrap();
                *offset = page.next_offset;
                got += page.messages.len();
                late.extend(
                    page.messages
                        .iter()
                        .map(|m| m.store_timestamp - m.deliver_at),
                );
            }
            if got == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    assert_eq!(late.len(), N);
    late.sort_unstable();
    eprintln!(
        "delivery lateness ms: p50 {} p99 {} max {}",
        late[N / 2],
        late[N * 99 / 100],
        late[N - 1]
    );
}

/// A delayed message that would be too large once it is re-encoded for its queue (its
/// delivery adds a header) is refused when it is produced, with `message_too_large`; none is
/// accepted and then dropped at delivery.
#[test]
fn a_delayed_message_too_large_to_deliver_is_refused_at_produce() {
    let node = Node::start_with_env(&[], &[("WEIR_MAX_MESSAGE_SIZE", "4096")]);
    node.ok(&["topic", "create", "t", "--queues", "1"]);
    let (mut accepted, mut refused) = (0, 0);
    for size in (3850..=4000).step_by(3) {
        let body = "x".repeat(size);
        let out = node.cli(&["produce", "t", "--delay", "1s", "--body", &body]);
        if out.status.success() {
            accepted += 1;
        } else {
            // Too large as sent, or too large once delivered: both `message_too_large`.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("over"), "{err}");
            if err.contains("when delivered") {
                refused += 1;
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused as too large to deliver"
    );
    // Everything accepted is delivered; nothing is dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let topic = node.ok(&["topic", "describe", "t"]);
        // The table's row for queue 0: QUEUE, MIN OFFSET, MAX OFFSET.
        let max_offset = topic
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.len() == 3 && cols[0] == "0")
            .and_then(|cols| cols[2].parse::<usize>().ok());
        if max_offset == Some(accepted) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all delivered: {topic}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = node.log();
    assert!(
        !log.contains("can never be stored"),
        "dropped at delivery:\n{log}"
    );
    // The broker keeps working.
    node.ok(&["produce", "t", "--body", "fine"]);
}

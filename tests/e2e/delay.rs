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
            sink.lock()
                .unwrap()
                .push((body, m.deliver_at, now_ms(), m.properties.clone()));
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

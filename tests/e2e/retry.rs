//! Retry and dead letters against a real node started with a short back-off: a failing
//! handler sends a message through every retry to `%DLQ%<group>` while the queue's other
//! messages keep flowing; `weir dlq` lists, shows and resends it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, StartFrom};

use crate::harness::Node;

fn config(node: &Node) -> ConsumerConfig {
    let mut config = ConsumerConfig::new([node.addr.clone()], "billing", "invoices");
    config.start_from = StartFrom::Earliest;
    config.max_wait = Duration::from_secs(1);
    config
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn failing_message_is_retried_then_dead_lettered_and_resent() {
    let node = Node::start_with_env(
        &[],
        &[
            ("WEIR_RETRY_BACKOFF", "200ms,200ms,200ms"),
            ("WEIR_MAX_RETRIES", "3"),
        ],
    );
    node.ok(&["topic", "create", "invoices", "--queues", "1"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (poison_id, ok_done_before_dlq) = runtime.block_on(async {
        let attempts: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
        let ok: Arc<Mutex<Vec<String>>> = Arc::default();
        let (a, o) = (attempts.clone(), ok.clone());
        let consumer = PushConsumer::start(config(&node), move |m| {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            if body != "poison" {
                o.lock().unwrap().push(body);
                return ConsumeResult::Success;
            }
            assert_eq!(m.topic, "invoices", "retries show the original topic");
            let n = {
                let mut a = a.lock().unwrap();
                a.push((m.reconsume_times(), m.topic.clone()));
                a.len()
            };
            if n == 2 {
                panic!("handler panics on the second try");
            }
            ConsumeResult::Retry
        })
        .await
        .unwrap();
        let producer = Producer::new(ProducerConfig::new([node.addr.clone()])).unwrap();
        let poison = producer
            .send(
                Message::new("invoices", "poison")
                    .with_key("inv-7")
                    .with_property("kind", "bad"),
            )
            .await
            .unwrap();
        for i in 0..20 {
            producer
                .send(Message::new("invoices", format!("ok-{i}")))
                .await
                .unwrap();
        }
        // The other messages are not held up by the failing one.
        wait_for("the healthy messages", || ok.lock().unwrap().len() == 20).await;
        let ok_done_before_dlq = attempts.lock().unwrap().len() < 4;
        wait_for("four tries", || attempts.lock().unwrap().len() == 4).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let tries: Vec<u32> = attempts.lock().unwrap().iter().map(|t| t.0).collect();
        assert_eq!(tries, [0, 1, 2, 3], "1 delivery + 3 retries, then no more");
        consumer.shutdown().await.unwrap();
        producer.close().await;
        (poison.message_id.to_string(), ok_done_before_dlq)
    });
    assert!(
        ok_done_before_dlq,
        "healthy messages flowed while the poison one was retried"
    );

    let list = node.ok(&["dlq", "list", "--group", "billing"]);
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{list}");
    let cells: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(cells[1], "invoices", "{list}");
    assert_eq!(cells[2], "4", "{list}");
    assert!(rows[0].ends_with("poison"), "{list}");
    let dlq_id = cells[0].to_string();

    let shown: Value =
        serde_json::from_str(&node.ok(&["dlq", "show", "--group", "billing", &dlq_id])).unwrap();
    assert_eq!(shown["topic"], "%DLQ%billing");
    assert_eq!(shown["key"], "inv-7");
    assert_eq!(shown["properties"]["ORIGIN_TOPIC"], "invoices");
    assert_eq!(shown["properties"]["ORIGIN_MSG_ID"], poison_id.as_str());
    assert_eq!(shown["properties"]["RECONSUME_TIMES"], "4");
    assert_eq!(shown["properties"]["kind"], "bad");
    let topics = node.ok(&["topic", "list"]);
    assert!(topics.contains("%DLQ%billing (internal)"), "{topics}");

    // A working consumer of the group gets the message again after a resend.
    runtime.block_on(async {
        let got: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let g = got.clone();
        let consumer = PushConsumer::start(config(&node), move |m| {
            g.lock().unwrap().push((
                String::from_utf8_lossy(&m.body).into_owned(),
                m.reconsume_times(),
            ));
            ConsumeResult::Success
        })
        .await
        .unwrap();
        // Let the member settle on its queues before the resend.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = node.ok(&["dlq", "resend", "--group", "billing", &dlq_id]);
        assert!(out.starts_with("resent"), "{out}");
        wait_for("the resent message", || {
            got.lock().unwrap().iter().any(|(b, _)| b == "poison")
        })
        .await;
        let got = got.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![("poison".to_string(), 0)],
            "only the resent one, failures reset"
        );
        consumer.shutdown().await.unwrap();
    });
}

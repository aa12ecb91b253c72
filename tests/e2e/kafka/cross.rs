//! Same data, both protocols: what a Kafka producer writes `weir consume` reads (key, tag from
//! header `TAGS`, the other headers as properties, the timestamp) and the reverse; a group's
//! committed offsets are the same numbers both ways; Weir's delayed delivery and dead letters
//! work for Kafka clients (`TIMER_DELIVER_MS` / `TIMER_DELAY_SEC` headers, `__weir_dlq.<group>`).

use std::time::Duration;

use serde_json::Value;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, StartFrom};

use super::{Record, clients_ready, commit, consume, driver, kafka_node, now_ms, wait_until};
use crate::http_api::Http;

/// The JSON lines `weir consume --format json` printed.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn what_a_kafka_producer_writes_weir_consume_reads() {
    if !clients_ready("what_a_kafka_producer_writes_weir_consume_reads") {
        return;
    }
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "shipments", "--queues", "2"]);
    let born = now_ms() - 60_000;
    let input = Value::Array(vec![
        Record::new(Some("order-1"), Some("packed"))
            .header("TAGS", Some("TagA"))
            .header("color", Some("red"))
            .header("size", Some("L"))
            .to_json(1, Some(born)),
        Record::new(Some("order-2"), Some("shipped"))
            .header("TAGS", Some("TagB"))
            .to_json(1, Some(born + 1)),
        Record::new(None, Some("untagged")).to_json(1, Some(born + 2)),
    ]);
    let out = driver(
        &node,
        "produce",
        &[
            "--client",
            "confluent",
            "--topic",
            "shipments",
            "--acks",
            "all",
        ],
        Some(&input),
    );
    assert_eq!(out["results"][0]["offset"], 0, "{out}");

    let read = json_lines(&node.ok(&[
        "consume",
        "shipments",
        "--group",
        "native",
        "--from",
        "earliest",
        "--count",
        "3",
        "--format",
        "json",
    ]));
    assert_eq!(read.len(), 3, "{read:?}");
    let first = &read[0];
    assert_eq!(first["queue"], 1, "{first}");
    assert_eq!(first["offset"], 0, "{first}");
    assert_eq!(first["key"], "order-1", "{first}");
    assert_eq!(first["tag"], "TagA", "{first}");
    assert_eq!(first["body"], "packed", "{first}");
    assert_eq!(
        first["properties"],
        serde_json::json!({"color": "red", "size": "L"}),
        "{first}"
    );
    assert_eq!(first["born_timestamp"], born, "{first}");
    assert_eq!(read[1]["tag"], "TagB", "{:?}", read[1]);
    assert_eq!(read[1]["offset"], 1, "{:?}", read[1]);
    // The CLI prints "" for no key and no tag.
    assert_eq!(read[2]["key"], "", "{:?}", read[2]);
    assert_eq!(read[2]["tag"], "", "{:?}", read[2]);
    assert_eq!(read[2]["body"], "untagged", "{:?}", read[2]);

    // The tag filters on the broker like a native producer's tag.
    let filtered = json_lines(&node.ok(&[
        "consume",
        "shipments",
        "--group",
        "only-b",
        "--from",
        "earliest",
        "--tag-filter",
        "TagB",
        "--idle-timeout",
        "1s",
        "--format",
        "json",
    ]));
    let bodies: Vec<&Value> = filtered.iter().map(|m| &m["body"]).collect();
    assert_eq!(bodies, ["shipped"], "{filtered:?}");
}

#[test]
fn what_weir_produce_writes_kafka_consumers_read() {
    if !clients_ready("what_weir_produce_writes_kafka_consumers_read") {
        return;
    }
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "invoices", "--queues", "1"]);
    node.ok(&[
        "produce",
        "invoices",
        "--key",
        "inv-1",
        "--tag",
        "Paid",
        "--property",
        "currency=EUR",
        "--property",
        "amount=12.50",
        "--body",
        "invoice one",
    ]);
    node.ok(&["produce", "invoices", "--body", "invoice two"]);
    for client in ["confluent", "kafka-python", "aiokafka"] {
        let read = consume(&node, client, "invoices", 0, "beginning", 2, 10.0);
        let got: Vec<(i64, &Record)> = read.records.iter().map(|r| (r.0, &r.1)).collect();
        let want = [
            Record::new(Some("inv-1"), Some("invoice one"))
                .header("TAGS", Some("Paid"))
                .header("currency", Some("EUR"))
                .header("amount", Some("12.50")),
            Record::new(None, Some("invoice two")),
        ];
        assert_eq!(got, [(0, &want[0]), (1, &want[1])], "{client}");
    }
}

#[test]
fn group_offsets_are_the_same_numbers_for_both_protocols() {
    if !clients_ready("group_offsets_are_the_same_numbers_for_both_protocols") {
        return;
    }
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "ledger", "--queues", "2"]);
    let input: Vec<Value> = (0..8)
        .map(|i| Record::new(None, Some(&format!("entry-{i}"))).to_json(i32::from(i >= 5), None))
        .collect();
    driver(
        &node,
        "produce",
        &["--client", "confluent", "--topic", "ledger", "--acks", "1"],
        Some(&Value::Array(input)),
    );

    // Committed through Kafka, seen by Weir's HTTP API and CLI.
    commit(&node, "auditors", "ledger", "0:4,1:2", "audit");
    let (status, body) = Http::new(&node).get("/api/v1/groups/auditors");
    assert_eq!(status, 200, "{body}");
    let committed: Vec<(u64, Value)> = body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["queue_id"].as_u64().unwrap(),
                q["committed_offset"].clone(),
            )
        })
        .collect();
    assert_eq!(committed, [(0, 4.into()), (1, 2.into())], "{body}");
    let described = node.ok(&["group", "describe", "auditors"]);
    let rows: Vec<Vec<&str>> = described
        .lines()
        .filter(|l| l.starts_with("ledger"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{described}");
    assert_eq!(&rows[0][..4], ["ledger", "0", "5", "4"], "{described}");
    assert_eq!(&rows[1][..4], ["ledger", "1", "3", "2"], "{described}");

    // Committed by a native consumer, read by a Kafka client.
    node.ok(&[
        "consume", "ledger", "--group", "natives", "--from", "earliest", "--count", "8",
    ]);
    let out = driver(
        &node,
        "committed",
        &[
            "--client",
            "kafka-python",
            "--group",
            "natives",
            "--topic",
            "ledger",
            "--partitions",
            "2",
        ],
        None,
    );
    let offsets: Vec<&Value> = out["committed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["offset"])
        .collect();
    assert_eq!(offsets, [5, 3], "{out}");
}

#[test]
fn kafka_records_with_timer_headers_are_delivered_on_time() {
    if !clients_ready("kafka_records_with_timer_headers_are_delivered_on_time") {
        return;
    }
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "reminders", "--queues", "1"]);
    let deliver_at = now_ms() + 2000;
    let input = Value::Array(vec![
        Record::new(Some("r1"), Some("in two seconds"))
            .header("TIMER_DELIVER_MS", Some(&deliver_at.to_string()))
            .to_json(0, None),
        Record::new(Some("r2"), Some("at once")).to_json(0, None),
    ]);
    driver(
        &node,
        "produce",
        &[
            "--client",
            "confluent",
            "--topic",
            "reminders",
            "--acks",
            "all",
        ],
        Some(&input),
    );
    // kafka-python, TIMER_DELAY_SEC: one second after the broker stores it.
    let delay_sent = now_ms();
    let input = Value::Array(vec![
        Record::new(Some("r3"), Some("in one second"))
            .header("TIMER_DELAY_SEC", Some("1"))
            .to_json(0, None),
    ]);
    driver(
        &node,
        "produce",
        &[
            "--client",
            "kafka-python",
            "--topic",
            "reminders",
            "--acks",
            "1",
        ],
        Some(&input),
    );
    let read = consume(&node, "confluent", "reminders", 0, "beginning", 3, 10.0);
    let got: Vec<(i64, Option<&str>)> = read
        .records
        .iter()
        .map(|r| (r.0, r.1.value.as_deref()))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], (0, Some("at once")), "{got:?}");
    // The two delayed ones follow at offsets 1 and 2, in the order their times came (which
    // depends on how long the second producer took to start).
    let received = |value: &str| {
        read.records
            .iter()
            .find(|r| r.1.value.as_deref() == Some(value))
            .map(|r| (r.0, r.3, r.1.key.clone()))
            .unwrap()
    };
    let (delay_offset, delay_received, _) = received("in one second");
    let (deliver_offset, deliver_received, key) = received("in two seconds");
    assert_eq!(
        (
            delay_offset.min(deliver_offset),
            delay_offset.max(deliver_offset)
        ),
        (1, 2),
        "{got:?}"
    );
    assert!(
        delay_received >= delay_sent + 1000,
        "TIMER_DELAY_SEC=1 came early"
    );
    assert!(
        deliver_received >= deliver_at,
        "TIMER_DELIVER_MS came {} ms early",
        deliver_at - deliver_received
    );
    assert!(
        deliver_received < deliver_at + 3000,
        "TIMER_DELIVER_MS came {} ms late",
        deliver_received - deliver_at
    );
    assert_eq!(key.as_deref(), Some("r1"));
}

#[test]
fn dead_letters_are_readable_by_kafka_consumers() {
    if !clients_ready("dead_letters_are_readable_by_kafka_consumers") {
        return;
    }
    let node = kafka_node(&[("WEIR_RETRY_BACKOFF", "100ms"), ("WEIR_MAX_RETRIES", "1")]);
    node.ok(&["topic", "create", "invoices", "--queues", "1"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (consumer, producer) = runtime.block_on(async {
        let mut config = ConsumerConfig::new([node.addr.clone()], "billing", "invoices");
        config.start_from = StartFrom::Earliest;
        config.max_wait = Duration::from_millis(500);
        let consumer = PushConsumer::start(config, |_m| ConsumeResult::Retry)
            .await
            .unwrap();
        let producer = Producer::new(ProducerConfig::new([node.addr.clone()])).unwrap();
        producer
            .send(
                Message::new("invoices", "poison")
                    .with_key("inv-7")
                    .with_property("kind", "bad"),
            )
            .await
            .unwrap();
        (consumer, producer)
    });
    let http = Http::new(&node);
    wait_until(
        Duration::from_secs(20),
        || "the dead letter".to_owned(),
        || {
            http.get("/api/v1/groups/billing/dead-letters").1["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        },
    );
    runtime.block_on(async {
        consumer.shutdown().await.unwrap();
        producer.close().await;
    });

    let read = consume(
        &node,
        "kafka-python",
        "__weir_dlq.billing",
        0,
        "beginning",
        1,
        10.0,
    );
    assert_eq!(read.records.len(), 1);
    let (offset, record, _, _) = &read.records[0];
    assert_eq!(*offset, 0);
    assert_eq!(record.key.as_deref(), Some("inv-7"));
    assert_eq!(record.value.as_deref(), Some("poison"));
    let header = |name: &str| {
        record
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(
        header("ORIGIN_TOPIC").as_deref(),
        Some("invoices"),
        "{record:?}"
    );
    assert_eq!(header("kind").as_deref(), Some("bad"), "{record:?}");
    assert_eq!(
        header("RECONSUME_TIMES").as_deref(),
        Some("2"),
        "{record:?}"
    );
}

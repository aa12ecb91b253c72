//! Scenarios written once and run over each protocol: a [`Protocol`] sends messages to a
//! queue (partition) and reads them back from an offset — natively (the Rust client and
//! `weir consume`) or with a Kafka client. Each scenario runs for every (writer, reader) pair,
//! so it checks each protocol on its own and both directions between them.

use std::collections::BTreeMap;

use weir_client::{Message, Producer, ProducerConfig};

use super::{Record, clients_ready, consume, kafka_node, produce};
use crate::harness::Node;

/// A message as both protocols carry it: key, body, properties (Kafka headers).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    key: Option<String>,
    body: String,
    properties: BTreeMap<String, String>,
}

/// One way to send and read messages.
trait Protocol {
    /// For failure messages.
    fn name(&self) -> String;
    /// Sends `msgs` in order to queue 0 of `topic` (a one-queue topic); their offsets.
    fn send(&self, node: &Node, topic: &str, msgs: &[Msg]) -> Vec<i64>;
    /// Reads `count` messages of queue 0 of `topic` from `offset`, with their offsets.
    fn read(&self, node: &Node, topic: &str, offset: i64, count: usize) -> Vec<(i64, Msg)>;
}

/// The native protocol: the Rust client sends, `weir consume --offset` reads.
struct Native;

impl Protocol for Native {
    fn name(&self) -> String {
        "native".to_owned()
    }

    fn send(&self, node: &Node, topic: &str, msgs: &[Msg]) -> Vec<i64> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let producer = Producer::new(ProducerConfig::new([node.addr.clone()])).unwrap();
            let mut offsets = Vec::new();
            for m in msgs {
                let mut message = Message::new(topic, m.body.clone());
                if let Some(key) = &m.key {
                    message = message.with_key(key.clone());
                }
                for (k, v) in &m.properties {
                    message = message.with_property(k.clone(), v.clone());
                }
                let sent = producer.send(message).await.unwrap();
                assert_eq!(sent.queue_id, 0);
                offsets.push(sent.queue_offset as i64);
            }
            producer.close().await;
            offsets
        })
    }

    fn read(&self, node: &Node, topic: &str, offset: i64, count: usize) -> Vec<(i64, Msg)> {
        let out = node.ok(&[
            "consume",
            topic,
            "--queue",
            "0",
            "--offset",
            &offset.to_string(),
            "--count",
            &count.to_string(),
            "--idle-timeout",
            "5s",
            "--format",
            "json",
        ]);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let properties = v["properties"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                // The CLI prints "" for no key.
                let msg = Msg {
                    key: v["key"]
                        .as_str()
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned),
                    body: v["body"].as_str().unwrap().to_owned(),
                    properties,
                };
                (v["offset"].as_i64().unwrap(), msg)
            })
            .collect()
    }
}

/// A Kafka client through the driver script.
struct Kafka(&'static str);

impl Protocol for Kafka {
    fn name(&self) -> String {
        format!("kafka ({})", self.0)
    }

    fn send(&self, node: &Node, topic: &str, msgs: &[Msg]) -> Vec<i64> {
        let records: Vec<Record> = msgs
            .iter()
            .map(|m| {
                let mut r = Record::new(m.key.as_deref(), Some(&m.body));
                for (k, v) in &m.properties {
                    r = r.header(k, Some(v));
                }
                r
            })
            .collect();
        produce(node, self.0, topic, 0, &records, &["--acks", "all"])
            .into_iter()
            .map(|(_, offset)| offset)
            .collect()
    }

    fn read(&self, node: &Node, topic: &str, offset: i64, count: usize) -> Vec<(i64, Msg)> {
        let seek = format!("offset:{offset}");
        consume(node, self.0, topic, 0, &seek, count, 10.0)
            .records
            .into_iter()
            .map(|(offset, r, _, _)| {
                let msg = Msg {
                    key: r.key,
                    body: r.value.unwrap_or_default(),
                    properties: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default()))
                        .collect(),
                };
                (offset, msg)
            })
            .collect()
    }
}

/// `n` messages with keys (one without), bodies and properties naming the writer.
fn messages(writer: &dyn Protocol, n: usize) -> Vec<Msg> {
    (0..n)
        .map(|i| Msg {
            key: (i % 4 != 3).then(|| format!("key-{}", i % 3)),
            body: format!("body {i} from {}", writer.name()),
            properties: [
                ("seq".to_owned(), i.to_string()),
                ("writer".to_owned(), writer.name()),
            ]
            .into(),
        })
        .collect()
}

/// Keyed messages with properties come back whole, in order, at offsets 0.. .
fn keyed_messages_in_order(node: &Node, topic: &str, writer: &dyn Protocol, reader: &dyn Protocol) {
    let sent = messages(writer, 12);
    let offsets = writer.send(node, topic, &sent);
    assert_eq!(
        offsets,
        (0..12).collect::<Vec<i64>>(),
        "{} writes",
        writer.name()
    );
    let read = reader.read(node, topic, 0, sent.len());
    let want: Vec<(i64, Msg)> = sent
        .into_iter()
        .enumerate()
        .map(|(i, m)| (i as i64, m))
        .collect();
    assert_eq!(read, want, "{} → {}", writer.name(), reader.name());
}

/// Reading from an offset starts exactly there.
fn seek_by_offset(node: &Node, topic: &str, writer: &dyn Protocol, reader: &dyn Protocol) {
    let sent = messages(writer, 10);
    writer.send(node, topic, &sent);
    let read = reader.read(node, topic, 6, 4);
    let want: Vec<(i64, Msg)> = (6..10).map(|i| (i, sent[i as usize].clone())).collect();
    assert_eq!(read, want, "{} → {}", writer.name(), reader.name());
}

type Scenario = fn(&Node, &str, &dyn Protocol, &dyn Protocol);

/// Runs `scenario` for every (writer, reader) pair, each on a topic of its own.
fn over_each_protocol(name: &str, scenario: Scenario) {
    let node = kafka_node(&[]);
    let protocols: [&dyn Protocol; 2] = [&Native, &Kafka("confluent")];
    for (w, writer) in protocols.iter().enumerate() {
        for (r, reader) in protocols.iter().enumerate() {
            let topic = format!("{name}-{w}-{r}");
            node.ok(&["topic", "create", &topic, "--queues", "1"]);
            scenario(&node, &topic, *writer, *reader);
        }
    }
}

#[test]
fn scenario_keyed_messages_in_order_over_each_protocol() {
    if clients_ready("scenario_keyed_messages_in_order_over_each_protocol") {
        over_each_protocol("keyed", keyed_messages_in_order);
    }
}

#[test]
fn scenario_seek_by_offset_over_each_protocol() {
    if clients_ready("scenario_seek_by_offset_over_each_protocol") {
        over_each_protocol("seek", seek_by_offset);
    }
}

//! Each client on its own: kcat's metadata listing and every compression codec; confluent-kafka,
//! kafka-python and aiokafka producing at acks 0, 1 and all (keys, null values, headers,
//! compression) and seeking to the beginning, the end, an offset and a time; a batch bigger
//! than the fetch limits, read from its middle; an idempotent producer whose connections are
//! cut mid-response; long polls that wake on a produce and do not spin.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::proxy::Proxy;
use super::{
    Record, bootstrap, clients_ready, consume, driver, driver_at, kafka_node, log_tail, produce,
};
use crate::harness::Node;

/// Runs kcat with `args` (and `stdin`); its stdout. Panics with stderr when it fails.
fn kcat(node: &Node, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(["-b", bootstrap(node)])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kcat");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).expect("write kcat stdin");
    }
    drop(pipe);
    let out = super::collect(child, std::time::Duration::from_secs(60));
    assert!(
        out.status.success(),
        "kcat {args:?} failed ({}):\n{}\nnode log (tail):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log_tail(node)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kcat_lists_the_broker_and_its_topics() {
    if !clients_ready("kcat_lists_the_broker_and_its_topics") {
        return;
    }
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "alpha", "--queues", "3"]);
    node.ok(&["topic", "create", "beta", "--queues", "1"]);
    let listing: Value = serde_json::from_str(&kcat(&node, &["-L", "-J"], None)).unwrap();
    assert_eq!(
        listing["brokers"],
        json!([{"id": 0, "name": bootstrap(&node)}]),
        "{listing}"
    );
    let topics: BTreeMap<&str, &Value> = listing["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["topic"].as_str().unwrap(), &t["partitions"]))
        .collect();
    assert_eq!(
        topics.keys().copied().collect::<Vec<_>>(),
        ["alpha", "beta"],
        "{listing}"
    );
    let alpha = topics["alpha"].as_array().unwrap();
    assert_eq!(alpha.len(), 3, "{listing}");
    for (i, p) in alpha.iter().enumerate() {
        assert_eq!(p["partition"], i, "{listing}");
        assert_eq!(p["leader"], 0, "{listing}");
    }
    assert_eq!(topics["beta"].as_array().unwrap().len(), 1, "{listing}");
}

#[test]
fn kcat_produces_and_consumes_with_each_codec() {
    if !clients_ready("kcat_produces_and_consumes_with_each_codec") {
        return;
    }
    let node = kafka_node(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("kc-{codec}");
        node.ok(&["topic", "create", &topic, "--queues", "1"]);
        // Ten records with keys, the fifth with a null value (-Z: empty is null), two headers.
        let input: String = (0..10)
            .map(|i| {
                if i == 4 {
                    format!("k{i}:\n")
                } else {
                    format!("k{i}:{codec}-{i}\n")
                }
            })
            .collect();
        let mut args = vec!["-P", "-t", &topic, "-p", "0", "-K:", "-Z"];
        args.extend(["-H", "origin=kcat", "-H", "codec-header=yes"]);
        args.extend(["-z", codec]);
        kcat(&node, &args, Some(&input));

        let out = kcat(
            &node,
            &[
                "-C",
                "-t",
                &topic,
                "-p",
                "0",
                "-o",
                "beginning",
                "-c",
                "10",
                "-e",
                "-J",
                "-Z",
            ],
            None,
        );
        let lines: Vec<Value> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10, "{codec}: {out}");
        for (i, m) in lines.iter().enumerate() {
            assert_eq!(m["offset"], i, "{codec}: {m}");
            assert_eq!(m["key"], format!("k{i}"), "{codec}: {m}");
            if i == 4 {
                assert_eq!(m["payload"], Value::Null, "{codec}: {m}");
            } else {
                assert_eq!(m["payload"], format!("{codec}-{i}"), "{codec}: {m}");
            }
            assert_eq!(
                m["headers"],
                json!(["origin", "kcat", "codec-header", "yes"]),
                "{codec}: {m}"
            );
        }
        // Another client decodes kcat's batches the same way.
        let read = consume(&node, "confluent", &topic, 0, "offset:3", 3, 10.0);
        let values: Vec<_> = read
            .records
            .iter()
            .map(|r| (r.0, r.1.value.clone()))
            .collect();
        assert_eq!(
            values,
            [
                (3, Some(format!("{codec}-3"))),
                (4, None),
                (5, Some(format!("{codec}-5")))
            ],
            "{codec}"
        );
    }
}

/// The (acks, compression) runs each client produces; kafka-python and aiokafka have only
/// gzip without extra packages, confluent-kafka has every codec.
fn runs(client: &str) -> Vec<(&'static str, &'static str)> {
    let mut runs = vec![("0", "none"), ("1", "gzip"), ("all", "none")];
    if client == "confluent" {
        runs.extend([("1", "snappy"), ("all", "lz4"), ("all", "zstd")]);
    }
    runs
}

/// A run's records: keys, one null value, headers (a null header value for confluent-kafka,
/// whose API can send one).
fn run_records(client: &str, acks: &str, codec: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let value = format!("{client}-{acks}-{codec}-{i}");
            let mut r = if i == 2 {
                Record::new(Some("tombstone"), None)
            } else {
                Record::new(Some(&format!("key-{}", i % 3)), Some(&value))
            };
            r = r
                .header("run", Some(&format!("{acks}/{codec}")))
                .header("i", Some(&i.to_string()));
            if client == "confluent" && i == 1 {
                r = r.header("empty", None);
            }
            r
        })
        .collect()
}

/// Produces every run with `client` to partitions 0 and 1 of a two-partition topic, reads
/// them back (the same client) and checks content, order and offsets; then seeks to the
/// beginning, the end, an offset and a time.
fn produce_and_seek(client: &str) {
    let node = kafka_node(&[]);
    let topic = "orders";
    node.ok(&["topic", "create", topic, "--queues", "2"]);
    let mut expected: [Vec<Record>; 2] = [Vec::new(), Vec::new()];
    for (acks, codec) in runs(client) {
        for partition in [0, 1] {
            let n = if partition == 0 { 6 } else { 3 };
            let records = run_records(client, acks, codec, n);
            let extra = ["--acks", acks, "--compression", codec];
            let results = produce(&node, client, topic, partition, &records, &extra);
            let base = expected[partition as usize].len() as i64;
            for (i, (p, offset)) in results.iter().enumerate() {
                if acks == "0" {
                    assert_eq!(*offset, -1, "{client} acks=0 gets no offsets");
                } else {
                    assert_eq!(
                        (*p, *offset),
                        (i64::from(partition), base + i as i64),
                        "{client} acks={acks} {codec}: offsets are contiguous"
                    );
                }
            }
            expected[partition as usize].extend(records);
        }
    }
    for partition in [0, 1] {
        let want = &expected[partition as usize];
        let read = consume(
            &node,
            client,
            topic,
            partition,
            "beginning",
            want.len(),
            15.0,
        );
        assert_eq!(read.position, Some(0), "{client}: beginning");
        let offsets: Vec<i64> = read.records.iter().map(|r| r.0).collect();
        assert_eq!(
            offsets,
            (0..want.len() as i64).collect::<Vec<_>>(),
            "{client} p{partition}: offsets contiguous and in order"
        );
        let got: Vec<&Record> = read.records.iter().map(|r| &r.1).collect();
        assert_eq!(
            got,
            want.iter().collect::<Vec<_>>(),
            "{client} p{partition}"
        );
    }

    let total0 = expected[0].len() as i64;
    let end = consume(&node, client, topic, 0, "end", 0, 0.0);
    assert_eq!(end.position, Some(total0), "{client}: end");
    let mid = consume(&node, client, topic, 0, "offset:7", 3, 10.0);
    assert_eq!(mid.position, Some(7), "{client}: offset");
    let got: Vec<(i64, &Record)> = mid.records.iter().map(|r| (r.0, &r.1)).collect();
    assert_eq!(
        got,
        (7..10)
            .map(|o| (o, &expected[0][o as usize]))
            .collect::<Vec<_>>(),
        "{client}: from offset 7"
    );

    // Records with their own timestamps, one second apart: the seek by time finds the first
    // record at or after the time.
    node.ok(&["topic", "create", "timed", "--queues", "1"]);
    let base = super::now_ms() - 3_600_000;
    let timed: Vec<Value> = (0..5)
        .map(|i| {
            Record::new(Some("t"), Some(&format!("timed-{i}"))).to_json(0, Some(base + i * 1000))
        })
        .collect();
    let out = driver(
        &node,
        "produce",
        &["--client", client, "--topic", "timed", "--acks", "1"],
        Some(&Value::Array(timed)),
    );
    let first_timed = out["results"][0]["offset"].as_i64().unwrap();
    assert_eq!(first_timed, 0, "{out}");
    let t = format!("time:{}", base + 2500);
    let read = consume(&node, client, "timed", 0, &t, 2, 10.0);
    assert_eq!(
        read.position,
        Some(first_timed + 3),
        "{client}: seek by time"
    );
    let got: Vec<(i64, Option<String>, i64)> = read
        .records
        .iter()
        .map(|r| (r.0, r.1.value.clone(), r.2))
        .collect();
    assert_eq!(
        got,
        [
            (first_timed + 3, Some("timed-3".to_owned()), base + 3000),
            (first_timed + 4, Some("timed-4".to_owned()), base + 4000)
        ],
        "{client}: records keep their timestamps"
    );
    let future = format!("time:{}", super::now_ms() + 3_600_000);
    let none = consume(&node, client, "timed", 0, &future, 0, 0.0);
    assert_eq!(
        none.position, None,
        "{client}: no record after a future time"
    );
}

#[test]
fn confluent_kafka_produces_and_seeks() {
    if clients_ready("confluent_kafka_produces_and_seeks") {
        produce_and_seek("confluent");
    }
}

#[test]
fn kafka_python_produces_and_seeks() {
    if clients_ready("kafka_python_produces_and_seeks") {
        produce_and_seek("kafka-python");
    }
}

#[test]
fn aiokafka_produces_and_seeks() {
    if clients_ready("aiokafka_produces_and_seeks") {
        produce_and_seek("aiokafka");
    }
}

#[test]
fn idempotent_producer_survives_dropped_connections() {
    if !clients_ready("idempotent_producer_survives_dropped_connections") {
        return;
    }
    // The proxy is what the node advertises, so every connection of the client goes through
    // it; the first three are cut after 700 bytes of responses (past ApiVersions, Metadata and
    // InitProducerId, in the middle of the Produce responses).
    let (proxy, listener) = Proxy::bind();
    let node = kafka_node(&[("WEIR_KAFKA_ADVERTISED_ADDR", &proxy.addr)]);
    proxy.forward_to(listener, bootstrap(&node).to_owned(), 3, 700);
    node.ok(&["topic", "create", "payments", "--queues", "1"]);
    let n = 3000;
    let input = Value::Array(
        (0..n)
            .map(|i| {
                Record::new(Some(&format!("k{}", i % 7)), Some(&format!("m-{i}"))).to_json(0, None)
            })
            .collect(),
    );
    let out = driver_at(
        &node,
        &proxy.addr,
        "produce",
        &[
            "--client",
            "confluent",
            "--topic",
            "payments",
            "--acks",
            "all",
            "--idempotent",
            "--conf",
            "batch.num.messages=50",
            "--conf",
            "linger.ms=2",
            "--conf",
            "retry.backoff.ms=50",
        ],
        Some(&input),
    );
    assert!(
        proxy.cuts() >= 2,
        "the proxy cut {} of {} connections",
        proxy.cuts(),
        proxy.connections()
    );
    assert!(
        proxy.connections() > 3,
        "the client reconnected after the cuts"
    );
    let reported: Vec<i64> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    let misplaced = reported.iter().enumerate().find(|(i, o)| **o != *i as i64);
    assert_eq!(
        (reported.len(), misplaced),
        (n, None),
        "each message acknowledged at its own offset, in order (the first one off shown)"
    );
    let read = consume(&node, "confluent", "payments", 0, "beginning", n + 1, 3.0);
    assert_eq!(read.records.len(), n, "each message stored exactly once");
    for (i, (offset, record, _, _)) in read.records.iter().enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(
            record.value.as_deref(),
            Some(format!("m-{i}").as_str()),
            "offset {i}"
        );
    }
}

#[test]
fn a_batch_larger_than_the_fetch_limits_comes_whole() {
    if !clients_ready("a_batch_larger_than_the_fetch_limits_comes_whole") {
        return;
    }
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "big", "--queues", "1"]);
    // Five 30 kB records in one batch (one produce call, one partition).
    let value = |i: usize| format!("{}{i}", "x".repeat(30_000));
    let records: Vec<Record> = (0..5)
        .map(|i| Record::new(Some("k"), Some(&value(i))))
        .collect();
    let offsets = produce(&node, "confluent", "big", 0, &records, &["--acks", "1"]);
    assert_eq!(offsets.last(), Some(&(0, 4)));
    // Fetch limits of 1 kB, reading from the middle of the batch: the whole batch comes.
    let limits: [(&str, [&str; 8]); 2] = [
        (
            "confluent",
            [
                "--conf",
                "max.partition.fetch.bytes=1024",
                "--conf",
                "fetch.max.bytes=1024",
                "--conf",
                "message.max.bytes=1000",
                "--conf",
                "receive.message.max.bytes=1000000",
            ],
        ),
        (
            "kafka-python",
            [
                "--conf",
                "max_partition_fetch_bytes=1024",
                "--conf",
                "fetch_max_bytes=1024",
                "--conf",
                "fetch_min_bytes=1",
                "--conf",
                "fetch_max_wait_ms=100",
            ],
        ),
    ];
    for (client, conf) in limits {
        let mut args = vec![
            "--client", client, "--topic", "big", "--seek", "offset:2", "--count", "3",
        ];
        args.extend(conf);
        let out = driver(&node, "consume", &args, None);
        let got: Vec<(i64, String)> = out["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["offset"].as_i64().unwrap(),
                    r["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want: Vec<(i64, String)> = (2..5).map(|i| (i as i64, value(i))).collect();
        assert!(
            got == want,
            "{client}: offsets {:?}",
            got.iter().map(|g| g.0).collect::<Vec<_>>()
        );
    }
}

/// An idle consumer with a 5 s fetch wait on an empty partition: the broker holds its Fetch
/// (no more than a few requests in an idle second) and answers it as soon as a record comes.
fn long_poll(client: &str) {
    let node = kafka_node(&[]);
    node.ok(&["topic", "create", "quiet", "--queues", "1"]);
    let metrics = format!("{}/metrics", node.http_url());
    let out = driver(
        &node,
        "longpoll",
        &[
            "--client",
            client,
            "--topic",
            "quiet",
            "--metrics-url",
            &metrics,
        ],
        None,
    );
    eprintln!("{client} long poll: {out}");
    assert_eq!(out["value"], "wake", "{out}");
    let idle = out["idle_fetch_requests"].as_i64().unwrap();
    assert!(
        idle <= 3,
        "{client}: {idle} Fetch requests in an idle second: {out}"
    );
    let latency = out["latency_ms"].as_i64().unwrap();
    assert!(
        latency < 1000,
        "{client}: the record took {latency} ms to arrive (a 5 s fetch wait was not woken): {out}"
    );
}

#[test]
fn confluent_kafka_long_poll_wakes_without_spinning() {
    if clients_ready("confluent_kafka_long_poll_wakes_without_spinning") {
        long_poll("confluent");
    }
}

#[test]
fn kafka_python_long_poll_wakes_without_spinning() {
    if clients_ready("kafka_python_long_poll_wakes_without_spinning") {
        long_poll("kafka-python");
    }
}

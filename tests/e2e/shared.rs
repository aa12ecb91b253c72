//! Shared consumption: more consumers than queues all get work, per-message acks, invisibility
//! timeouts, nack back-off and dead letters, acks, attempt counts and invisibility surviving a
//! broker crash, and shared groups in `weir group list|describe` and the HTTP API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_client::{Message, Producer, ProducerConfig, SharedConsumer, SharedConsumerConfig};

use crate::harness::Node;
use crate::http_api::Http;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn produce(addr: &str, topic: &str, n: usize) {
    let mut config = ProducerConfig::new([addr.to_owned()]);
    config.linger = Duration::ZERO;
    let producer = Producer::new(config).unwrap();
    for i in 0..n {
        producer
            .send(Message::new(topic, format!("m{i}")))
            .await
            .unwrap();
    }
    producer.close().await;
}

fn consumer(addr: &str, group: &str, topic: &str, wait: Duration) -> SharedConsumer {
    let mut config = SharedConsumerConfig::new([addr.to_owned()], group, topic);
    config.max_wait = wait;
    SharedConsumer::new(config).unwrap()
}

fn body(m: &weir_client::SharedMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

#[test]
fn eight_consumers_on_two_queues_all_get_work_and_each_message_is_acked_once() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "jobs", "--queues", "2"]);
    runtime().block_on(async {
        produce(&node.addr, "jobs", 400).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let c = consumer(&node.addr, "workers", "jobs", Duration::from_millis(500));
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut idle = 0;
                while idle < 3 {
                    let got = c.receive(4, Duration::from_secs(20)).await.unwrap();
                    if got.is_empty() {
                        idle += 1;
                        continue;
                    }
                    idle = 0;
                    // Some work per message, so the others get their share.
                    tokio::time::sleep(Duration::from_millis(5 * got.len() as u64)).await;
                    let rejected = c.ack(&got).await.unwrap();
                    assert!(rejected.is_empty(), "{rejected:?}");
                    acked.extend(got.iter().map(body));
                }
                acked
            }));
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut per_consumer = Vec::new();
        for t in tasks {
            let acked = t.await.unwrap();
            per_consumer.push(acked.len());
            for b in acked {
                *counts.entry(b).or_default() += 1;
            }
        }
        assert!(per_consumer.iter().all(|n| *n > 0), "{per_consumer:?}");
        assert_eq!(counts.len(), 400);
        assert!(counts.values().all(|n| *n == 1), "a message acked twice");
    });
}

#[test]
fn unacked_messages_come_back_after_the_invisibility_and_it_can_be_extended() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "slow", "--queues", "1"]);
    runtime().block_on(async {
        produce(&node.addr, "slow", 2).await;
        let c = consumer(&node.addr, "g", "slow", Duration::ZERO);
        let first = c.receive(2, Duration::from_secs(1)).await.unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|m| m.attempt == 1));
        // m1's invisibility is extended to 4 s; m0's runs out after 1 s.
        c.change_invisibility(&first[1], Duration::from_secs(4))
            .await
            .unwrap();
        assert!(
            c.receive(2, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let again = c.receive(2, Duration::from_secs(10)).await.unwrap();
        assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["m0"]);
        assert_eq!(again[0].attempt, 2);
        // The first delivery's receipt is over.
        assert_eq!(c.ack(&first[..1]).await.unwrap().len(), 1);
        assert!(
            c.change_invisibility(&first[0], Duration::from_secs(1))
                .await
                .is_err()
        );
        assert!(c.ack(&again).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let late = c.receive(2, Duration::from_secs(10)).await.unwrap();
        assert_eq!(late.iter().map(body).collect::<Vec<_>>(), ["m1"]);
        assert!(c.ack(&late).await.unwrap().is_empty());
        assert!(
            c.receive(2, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
fn nacked_messages_back_off_then_go_to_the_dead_letter_topic() {
    let node = Node::start_with_env(
        &[],
        &[
            ("WEIR_SHARED_RETRY_DELAYS", "300ms 600ms"),
            ("WEIR_SHARED_MAX_ATTEMPTS", "3"),
        ],
    );
    node.ok(&["topic", "create", "flaky", "--queues", "2"]);
    runtime().block_on(async {
        produce(&node.addr, "flaky", 1).await;
        let c = consumer(&node.addr, "fg", "flaky", Duration::from_secs(5));
        let mut attempts = Vec::new();
        let mut last_nack = Instant::now();
        for expected in 1..=3 {
            let got = c.receive(1, Duration::from_secs(30)).await.unwrap();
            assert_eq!(got.len(), 1);
            attempts.push((got[0].attempt, last_nack.elapsed()));
            assert_eq!(got[0].attempt, expected);
            assert!(c.nack(&got).await.unwrap().is_empty());
            last_nack = Instant::now();
        }
        // Back-off per attempt: 300 ms after the first nack, 600 ms after the second.
        assert!(attempts[1].1 >= Duration::from_millis(250), "{attempts:?}");
        assert!(attempts[2].1 >= Duration::from_millis(550), "{attempts:?}");
        let quick = consumer(&node.addr, "fg", "flaky", Duration::from_secs(1));
        assert!(
            quick
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
    });
    let v = dead_letter(&node, "fg");
    assert_eq!(v["body"], "m0");
    assert_eq!(v["properties"]["ORIGIN_TOPIC"], "flaky");
    assert_eq!(v["properties"]["RECONSUME_TIMES"], "3");
}

#[test]
fn acks_survive_a_broker_crash_and_unacked_messages_come_again() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "durable", "--queues", "2"]);
    let rt = runtime();
    let unacked: Vec<String> = rt.block_on(async {
        produce(&node.addr, "durable", 10).await;
        let c = consumer(&node.addr, "dg", "durable", Duration::from_secs(1));
        let mut got = Vec::new();
        while got.len() < 10 {
            // Hidden for 4 s, across the restart too.
            got.extend(c.receive(10, Duration::from_secs(4)).await.unwrap());
        }
        let (ack, keep): (Vec<_>, Vec<_>) = got.into_iter().partition(|m| {
            body(m)
                .trim_start_matches('m')
                .parse::<u32>()
                .is_ok_and(|i| i % 3 != 0)
        });
        assert!(c.ack(&ack).await.unwrap().is_empty());
        let mut keep: Vec<String> = keep.iter().map(body).collect();
        keep.sort();
        keep
    });
    crash_and_restart(&mut node);
    rt.block_on(async {
        let c = consumer(&node.addr, "dg", "durable", Duration::from_secs(2));
        let mut again = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while again.len() < unacked.len() && Instant::now() < deadline {
            again.extend(c.receive(10, Duration::from_secs(60)).await.unwrap());
        }
        let mut bodies: Vec<String> = again.iter().map(body).collect();
        bodies.sort();
        assert_eq!(bodies, unacked);
        assert!(c.ack(&again).await.unwrap().is_empty());
    });
    // A clean stop persists too.
    node.stop();
    node.restart();
    let left = node.ok(&[
        "consume",
        "durable",
        "--group",
        "dg",
        "--mode",
        "shared",
        "--idle-timeout",
        "2s",
    ]);
    assert_eq!(left, "", "everything was acked");
}

/// The (first) dead letter of `group` as JSON, read with the CLI.
pub(crate) fn dead_letter(node: &Node, group: &str) -> Value {
    let dead = node.ok(&[
        "consume",
        &format!("%DLQ%{group}"),
        "--group",
        "reader",
        "--from",
        "earliest",
        "-n",
        "1",
        "--format",
        "json",
        "--idle-timeout",
        "10s",
    ]);
    serde_json::from_str(dead.trim()).unwrap()
}

/// The cells of the row of `weir group describe` output that starts with `first`.
fn row<'a>(out: &'a str, first: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{out}"))
}

/// The broker writes its shared-group state every second: wait for one write, then crash it.
fn crash_and_restart(node: &mut Node) {
    std::thread::sleep(Duration::from_millis(2500));
    node.kill();
    node.restart();
}

#[test]
fn nack_attempts_keep_counting_across_a_crash_until_the_dead_letter_topic() {
    let mut node = Node::start_with_env(
        &[],
        &[
            ("WEIR_SHARED_RETRY_DELAYS", "200ms"),
            ("WEIR_SHARED_MAX_ATTEMPTS", "4"),
        ],
    );
    node.ok(&["topic", "create", "fragile", "--queues", "2"]);
    let rt = runtime();
    let nack_once = |addr: &str, expected: u32| {
        rt.block_on(async {
            let c = consumer(addr, "ng", "fragile", Duration::from_secs(5));
            let got = c.receive(1, Duration::from_secs(30)).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!((body(&got[0]), got[0].attempt), ("m0".into(), expected));
            assert!(c.nack(&got).await.unwrap().is_empty());
        })
    };
    rt.block_on(produce(&node.addr, "fragile", 1));
    nack_once(&node.addr, 1);
    nack_once(&node.addr, 2);
    crash_and_restart(&mut node);
    // The count goes on where it was, and the fourth nack is the last.
    nack_once(&node.addr, 3);
    nack_once(&node.addr, 4);
    rt.block_on(async {
        let quick = consumer(&node.addr, "ng", "fragile", Duration::from_secs(1));
        let left = quick.receive(1, Duration::from_secs(30)).await.unwrap();
        assert!(
            left.is_empty(),
            "{:?}",
            left.iter().map(body).collect::<Vec<_>>()
        );
    });
    let v = dead_letter(&node, "ng");
    assert_eq!(v["body"], "m0");
    assert_eq!(v["properties"]["ORIGIN_TOPIC"], "fragile");
    assert_eq!(v["properties"]["RECONSUME_TIMES"], "4");
}

#[test]
fn in_flight_messages_stay_hidden_across_a_crash_and_their_receipts_still_ack() {
    const INVISIBLE: Duration = Duration::from_secs(8);
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "parcels", "--queues", "1"]);
    let rt = runtime();
    let (received_at, before) = rt.block_on(async {
        produce(&node.addr, "parcels", 2).await;
        let c = consumer(&node.addr, "sg", "parcels", Duration::from_secs(5));
        let received_at = Instant::now();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(c.receive(2, INVISIBLE).await.unwrap());
        }
        (received_at, got)
    });
    assert_eq!(before.iter().map(body).collect::<Vec<_>>(), ["m0", "m1"]);
    crash_and_restart(&mut node);

    let list = node.ok(&["group", "list"]);
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().eq(["sg", "shared"])),
        "{list}"
    );
    let described = node.ok(&["group", "describe", "sg"]);
    assert!(described.starts_with("group sg (shared)"), "{described}");
    assert!(described.contains("LOW WATER"), "{described}");
    // TOPIC QUEUE MAX OFFSET LOW WATER CURSOR IN FLIGHT LAG
    assert_eq!(
        row(&described, "parcels"),
        ["parcels", "0", "2", "0", "2", "2", "2"]
    );

    rt.block_on(async {
        let c = consumer(&node.addr, "sg", "parcels", Duration::ZERO);
        let hidden = c.receive(2, Duration::from_secs(30)).await.unwrap();
        assert!(
            received_at.elapsed() < INVISIBLE,
            "too slow to tell: restarted after the invisibility ran out"
        );
        assert!(
            hidden.is_empty(),
            "delivered again before its invisibility ran out: {:?}",
            hidden.iter().map(body).collect::<Vec<_>>()
        );
        // A receipt from before the crash acks its delivery.
        assert!(c.ack(&before[1..]).await.unwrap().is_empty());
        let waiting = consumer(&node.addr, "sg", "parcels", Duration::from_secs(2));
        let again = loop {
            let got = waiting.receive(2, Duration::from_secs(30)).await.unwrap();
            if !got.is_empty() {
                break got;
            }
            assert!(received_at.elapsed() < INVISIBLE * 3, "m0 never came back");
        };
        assert!(received_at.elapsed() >= INVISIBLE - Duration::from_millis(100));
        assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["m0"]);
        assert_eq!(again[0].attempt, 2);
        assert!(c.ack(&again).await.unwrap().is_empty());
    });

    let (status, group) = Http::new(&node).get("/api/v1/groups/sg");
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["modes"], json!(["shared"]));
    assert_eq!(group["total_lag"], 0);
    assert_eq!(
        group["queues"][0],
        json!({"topic": "parcels", "queue_id": 0, "mode": "shared", "min_offset": 0,
               "max_offset": 2, "committed_offset": null, "lag": 0, "owner": null,
               "shared": {"low_water": 2, "cursor": 2, "in_flight": 0, "acked_above": 0}})
    );
}

#[test]
fn cli_shared_mode_prints_and_acks() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "cli-shared", "--queues", "2"]);
    node.cli_with_stdin(&["produce", "cli-shared"], Some(b"a\nb\nc\n"));
    // `weir consume` in shared mode with `stop` (e.g. `-n 3`), its lines sorted.
    let consume = |stop: &[&str]| -> Vec<String> {
        let mut args = vec!["consume", "cli-shared", "--group", "cg", "--mode", "shared"];
        args.extend_from_slice(stop);
        let mut lines: Vec<String> = node.ok(&args).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(consume(&["-n", "3"]), ["a", "b", "c"]);
    assert!(consume(&["--idle-timeout", "1500ms"]).is_empty());

    // A reset moves the shared group back: everything is delivered again, and the group
    // stays a shared group only.
    node.ok(&[
        "group",
        "reset",
        "cg",
        "--topic",
        "cli-shared",
        "--to",
        "earliest",
    ]);
    assert_eq!(consume(&["-n", "3"]), ["a", "b", "c"]);
    let listed = node.ok(&["group", "list"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("cg "))
        .unwrap_or_default();
    assert!(
        row.contains("shared") && !row.contains("clustering"),
        "{listed}"
    );
}

/// Shared-mode throughput, for docs/benchmarks.md ("Shared consumption"):
/// `CARGO_BUILD_JOBS=2 cargo test --release -p weir --test e2e shared_throughput -- --ignored --nocapture`
#[test]
#[ignore = "benchmark; run in release with --ignored"]
fn shared_throughput() {
    const MESSAGES: usize = 200_000;
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "bench", "--queues", "2"]);
    runtime().block_on(async {
        let servers = [node.addr.clone()];
        produce_bench_messages(&servers, "bench", MESSAGES).await;
        drain_shared(&servers, "bench", MESSAGES).await;
    });
}

/// Sends `n` messages of 100 B to `topic`, pipelined.
pub(crate) async fn produce_bench_messages(servers: &[String], topic: &str, n: usize) {
    let producer = Producer::new(ProducerConfig::new(servers.to_vec())).unwrap();
    let body = vec![b'x'; 100];
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        pending.push(producer.send_async(Message::new(topic, body.clone())));
    }
    for p in pending {
        p.await.unwrap();
    }
    producer.close().await;
}

/// 8 shared consumers of group `bench-g`, each looping `receive(32, 30 s)` → `ack` until
/// `topic` is drained; checks that `messages` were acked and prints the rate.
pub(crate) async fn drain_shared(servers: &[String], topic: &str, messages: usize) {
    const CONSUMERS: usize = 8;
    const BATCH: u32 = 32;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONSUMERS {
        let mut config = SharedConsumerConfig::new(servers.to_vec(), "bench-g", topic);
        config.max_wait = Duration::from_millis(200);
        let c = SharedConsumer::new(config).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut acked = 0usize;
            let mut idle = 0;
            let mut last_ack = Instant::now();
            while idle < 2 {
                let got = c.receive(BATCH, Duration::from_secs(30)).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    continue;
                }
                idle = 0;
                assert!(c.ack(&got).await.unwrap().is_empty());
                acked += got.len();
                last_ack = Instant::now();
            }
            (acked, last_ack)
        }));
    }
    let mut total = 0;
    let mut per_consumer = Vec::new();
    let mut last_ack = started;
    for t in tasks {
        let (acked, done) = t.await.unwrap();
        total += acked;
        per_consumer.push(acked);
        last_ack = last_ack.max(done);
    }
    assert_eq!(total, messages);
    let secs = (last_ack - started).as_secs_f64();
    println!(
        "shared: {CONSUMERS} consumers, batch {BATCH}, 100 B bodies: {total} messages \
         received and acked in {secs:.2} s = {:.0} msgs/s; per consumer {per_consumer:?}",
        total as f64 / secs
    );
}

/// A receive whose client disconnected while it long-polled reserves nothing: the message that
/// arrives afterwards goes to the next receiver at once, on its first attempt.
#[test]
fn a_receive_whose_connection_closed_reserves_nothing() {
    use std::io::Write;
    use weir_proto::frame::encode_frame;
    use weir_proto::{ApiKey, Header, pb};

    let node = Node::start(&[]);
    node.ok(&["topic", "create", "t", "--queues", "1"]);
    for id in 1..=3u32 {
        let mut frame = bytes::BytesMut::new();
        let request = pb::ReceiveRequest {
            group: "sg".into(),
            topic: "t".into(),
            max_messages: 1,
            invisible_time_ms: 60_000,
            max_wait_ms: 30_000,
        };
        encode_frame(
            &Header::request(ApiKey::Receive, id),
            &request,
            &[],
            &mut frame,
        );
        let mut stream = std::net::TcpStream::connect(&node.addr).unwrap();
        stream.write_all(&frame).unwrap();
        // The broker holds the receive; then the client goes away.
        std::thread::sleep(Duration::from_millis(300));
        drop(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    node.ok(&["produce", "t", "--body", "only-for-the-living"]);
    let started = Instant::now();
    runtime().block_on(async {
        let c = consumer(&node.addr, "sg", "t", Duration::from_secs(5));
        let got = c.receive(1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            got.len(),
            1,
            "the message was taken by a receive nobody reads"
        );
        assert_eq!(&got[0].message.body[..], b"only-for-the-living");
        assert_eq!(got[0].attempt, 1, "no attempt spent on a gone client");
    });
    assert!(started.elapsed() < Duration::from_secs(5));
}

//! Transactional messages against the real binary: commit, rollback, the check-back of an
//! undecided transaction with another live member of the producer group after its producer
//! process was killed, the rollback of one nobody answers for, pending transactions and their
//! check counts across a broker crash, and committed copies that leave their producer's
//! idempotence sequences alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use weir_client::connection::{Connection, ConnectionConfig};
use weir_client::{Message, ProducerConfig, ReceivedMessage, TransactionProducer, TxState};
use weir_proto::batch::{BatchBuilder, BatchOptions, Compression, RecordFields, attributes};
use weir_proto::transaction::{PROP_PRODUCER_GROUP, PROP_TRANSACTION_ID};
use weir_proto::{ApiKey, pb};

use crate::harness::{Background, Node};

/// Every message stored in the queues `0..queues` of `topic`, read with plain pulls.
async fn read_all(node: &Node, topic: &str, queues: u32) -> Vec<ReceivedMessage> {
    let conn = Connection::connect(&node.addr, ConnectionConfig::default())
        .await
        .unwrap();
    let mut all = Vec::new();
    for queue_id in 0..queues {
        let mut offset = 0;
        loop {
            let request = pb::PullRequest {
                topic: topic.to_owned(),
                queue_id,
                offset,
                max_messages: 256,
                max_bytes: 1 << 20,
                ..Default::default()
            };
            let (response, payload) = conn
                .call::<_, pb::PullResponse>(ApiKey::Pull, &request, Bytes::new(), None)
                .await
                .unwrap();
            if response.count == 0 {
                break;
            }
            all.extend(ReceivedMessage::decode_all(&payload, &node.addr).unwrap());
            offset = response.next_offset;
        }
    }
    all
}

fn bodies(messages: &[ReceivedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// Waits until `topic` holds `n` messages, up to `timeout`.
async fn wait_for_messages(
    node: &Node,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + timeout;
    loop {
        let messages = read_all(node, topic, 1).await;
        if messages.len() >= n || Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the node's log contains `text`, up to `timeout`.
async fn wait_for_log(node: &Node, text: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if node.log().contains(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn producer(
    node: &Node,
    group: &str,
    checker: impl Fn(&ReceivedMessage) -> TxState + Send + Sync + 'static,
) -> TransactionProducer {
    TransactionProducer::new(ProducerConfig::new([node.addr.clone()]), group, checker)
        .await
        .unwrap()
}

/// Check-back timings shortened for tests.
fn fast_checks(first_ms: &'static str, interval_ms: &'static str, max: &'static str) -> Node {
    fast_checks_with(&[], first_ms, interval_ms, max)
}

/// [`fast_checks`] with extra `weir serve` arguments.
fn fast_checks_with(
    args: &[&str],
    first_ms: &'static str,
    interval_ms: &'static str,
    max: &'static str,
) -> Node {
    Node::start_with_env(
        args,
        &[
            ("WEIR_TRANSACTION_CHECK_FIRST_MS", first_ms),
            ("WEIR_TRANSACTION_CHECK_INTERVAL_MS", interval_ms),
            ("WEIR_TRANSACTION_CHECK_MAX", max),
        ],
    )
}

/// The JSON lines of a command's output.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Every message a new consumer group `group` of `topic` sees, from the earliest.
fn consume_all(node: &Node, topic: &str, group: &str) -> Vec<Value> {
    json_lines(&node.ok(&[
        "consume",
        topic,
        "--group",
        group,
        "--from",
        "earliest",
        "--format",
        "json",
        "--idle-timeout",
        "2s",
    ]))
}

fn json_bodies(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_visible_and_a_rollback_never_is() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "payments", "--queues", "1"]);
    let checked = Arc::new(AtomicUsize::new(0));
    let seen = checked.clone();
    let producer = producer(&node, "payments-service", move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        TxState::Rollback
    })
    .await;

    let committed = producer
        .send_in_transaction(Message::new("payments", "paid"), |half| {
            // The half message is stored but nobody can read it yet.
            assert_eq!(half.topic, "payments");
            TxState::Commit
        })
        .await
        .unwrap();
    assert_eq!(committed.state, TxState::Commit);
    let position = committed.committed.clone().expect("committed position");
    let rolled_back = producer
        .send_in_transaction(Message::new("payments", "refused"), |_| TxState::Rollback)
        .await
        .unwrap();
    assert!(rolled_back.committed.is_none());

    let messages = read_all(&node, "payments", 1).await;
    assert_eq!(bodies(&messages), ["paid"]);
    assert_eq!(messages[0].queue_offset, position.queue_offset);
    assert_eq!(
        messages[0].commit_log_offset,
        position.message_id.commit_log_offset
    );
    assert_eq!(
        messages[0].property(PROP_TRANSACTION_ID),
        Some(committed.transaction_id.as_str())
    );
    // Decided transactions are never checked back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(checked.load(Ordering::SeqCst), 0);
    assert_eq!(bodies(&read_all(&node, "payments", 1).await), ["paid"]);
}

#[test]
fn the_cli_commits_and_rolls_back_a_transaction() {
    let node = Node::start(&[]);
    node.ok(&["topic", "create", "payments", "--queues", "1"]);
    let committed = json_lines(&node.ok(&[
        "produce",
        "payments",
        "--transaction",
        "--group",
        "payments-service",
        "--body",
        "paid",
    ]));
    assert_eq!(committed.len(), 2, "{committed:?}");
    assert_eq!(committed[0]["event"], "half");
    assert_eq!(committed[1]["event"], "commit");
    assert_eq!(
        committed[0]["transaction_id"],
        committed[1]["transaction_id"]
    );
    let rolled_back = json_lines(&node.ok(&[
        "produce",
        "payments",
        "--transaction",
        "--group",
        "payments-service",
        "--decide",
        "rollback",
        "--body",
        "refused",
    ]));
    assert_eq!(rolled_back[0]["event"], "half");
    assert_eq!(rolled_back[1]["event"], "rollback");

    let seen = consume_all(&node, "payments", "readers");
    assert_eq!(json_bodies(&seen), ["paid"]);
    assert_eq!(seen[0]["id"], committed[1]["id"]);
    assert_eq!(seen[0]["offset"], committed[1]["offset"]);
    assert_eq!(
        seen[0]["properties"][PROP_TRANSACTION_ID],
        committed[0]["transaction_id"]
    );
}

/// Starts `weir produce --transaction --decide never` in `group`, waits until its half message
/// is stored, kills it with SIGKILL and returns the transaction id.
fn half_then_die(node: &Node, group: &str, body: &str) -> String {
    let mut producer = node.background(&[
        "produce",
        "orders",
        "--transaction",
        "--group",
        group,
        "--decide",
        "never",
        "--key",
        body,
        "--body",
        body,
    ]);
    let half = producer
        .wait_for_line(Duration::from_secs(15), |l| l.contains(r#""event":"half""#))
        .unwrap_or_else(|| panic!("no half message acknowledged; log:\n{}", node.log()));
    producer.kill();
    let half: Value = serde_json::from_str(&half).unwrap();
    half["transaction_id"].as_str().unwrap().to_owned()
}

/// The check of transaction `tx` that `responder` answered (one JSON line), waiting for it.
fn answered(node: &Node, responder: &Background, tx: &str) -> Value {
    let line = responder
        .wait_for_line(Duration::from_secs(15), |l| l.contains(tx))
        .unwrap_or_else(|| panic!("transaction {tx} was never checked; log:\n{}", node.log()));
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_producer_killed_mid_transaction_is_decided_by_another_member_of_its_group() {
    let node = fast_checks("500", "500", "15");
    node.ok(&["topic", "create", "orders", "--queues", "2"]);

    // Two producer processes store a half message each and die before deciding.
    let paid = half_then_die(&node, "order-service", "order-7");
    let refused = half_then_die(&node, "refund-service", "refund-9");

    // Other live members of the two groups know the outcomes.
    let committer = node.background(&[
        "txn",
        "answer",
        "--group",
        "order-service",
        "--topic",
        "orders",
        "--state",
        "commit",
    ]);
    let rollbacker = node.background(&[
        "txn",
        "answer",
        "--group",
        "refund-service",
        "--topic",
        "orders",
        "--state",
        "rollback",
    ]);
    let check = answered(&node, &committer, &paid);
    assert_eq!(check["answer"], "commit");
    assert_eq!(check["topic"], "orders");
    assert_eq!(check["key"], "order-7");
    assert_eq!(check["body"], "order-7");
    let check = answered(&node, &rollbacker, &refused);
    assert_eq!(check["answer"], "rollback");
    assert_eq!(check["key"], "refund-9");

    let deadline = Instant::now() + Duration::from_secs(10);
    while node
        .ok(&["message", "find", "--topic", "orders", "--key", "order-7"])
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "never committed; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more check intervals: a decided transaction is neither checked nor stored again.
    std::thread::sleep(Duration::from_millis(2000));
    let seen = consume_all(&node, "orders", "readers");
    assert_eq!(json_bodies(&seen), ["order-7"], "log:\n{}", node.log());
    assert_eq!(seen[0]["properties"][PROP_TRANSACTION_ID], paid.as_str());
    assert_eq!(
        committer
            .lines()
            .iter()
            .filter(|l| l.contains(&paid))
            .count(),
        1,
        "checked again after the commit"
    );
    assert_eq!(
        rollbacker
            .lines()
            .iter()
            .filter(|l| l.contains(&refused))
            .count(),
        1,
        "checked again after the rollback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_nobody_decides_is_rolled_back_after_the_last_check() {
    let node = fast_checks("200", "200", "3");
    node.ok(&["topic", "create", "orders", "--queues", "1"]);
    let lost = producer(&node, "lonely-service", |_| TxState::Unknown).await;
    lost.send_in_transaction(Message::new("orders", "never"), |_| TxState::Unknown)
        .await
        .unwrap();
    drop(lost);

    assert!(
        wait_for_log(&node, "transaction rolled back", Duration::from_secs(15)).await,
        "log:\n{}",
        node.log()
    );
    // A member that would commit it comes too late: the decision stands.
    let _late = producer(&node, "lonely-service", |_| TxState::Commit).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(read_all(&node, "orders", 1).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transactions_survive_a_broker_crash() {
    let mut node = fast_checks("1000", "1000", "15");
    node.ok(&["topic", "create", "orders", "--queues", "1"]);
    let first = producer(&node, "order-service", |_| TxState::Unknown).await;
    first
        .send_in_transaction(Message::new("orders", "rolled-back"), |_| TxState::Rollback)
        .await
        .unwrap();
    let pending = first
        .send_in_transaction(Message::new("orders", "pending"), |_| TxState::Unknown)
        .await
        .unwrap();
    drop(first);

    node.kill();
    node.restart();
    assert!(node.log().contains("undecided transactions recovered"));

    let transaction_id = pending.transaction_id.clone();
    let _second = producer(&node, "order-service", move |message| {
        if message.property(PROP_TRANSACTION_ID) == Some(transaction_id.as_str()) {
            TxState::Commit
        } else {
            TxState::Rollback
        }
    })
    .await;
    let messages = wait_for_messages(&node, "orders", 1, Duration::from_secs(15)).await;
    assert_eq!(bodies(&messages), ["pending"], "log:\n{}", node.log());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bodies(&read_all(&node, "orders", 1).await), ["pending"]);
}

/// One check-back of a transaction in a JSON log: its attempt and when it was made.
#[derive(Debug, Clone, Copy)]
struct LoggedCheck {
    attempt: u64,
    at: time::OffsetDateTime,
}

/// The JSON log lines of a node (started with `--log-format json`).
fn log_lines(node: &Node) -> Vec<Value> {
    node.log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn log_time(line: &Value) -> time::OffsetDateTime {
    let at = line["timestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
}

/// The check-backs of transaction `tx` in a JSON log, in log order, with whether each came
/// after the broker's last start.
fn logged_checks(lines: &[Value], tx: &str) -> Vec<(LoggedCheck, bool)> {
    let mut restarted = false;
    let mut checks = Vec::new();
    for line in lines {
        let fields = &line["fields"];
        match fields["message"].as_str() {
            Some("undecided transactions recovered; they will be checked back") => {
                restarted = true;
            }
            Some(
                "transaction checked back"
                | "no live producer of the group to check the transaction with",
            ) if fields["transaction_id"] == tx => checks.push((
                LoggedCheck {
                    attempt: fields["attempt"].as_u64().unwrap(),
                    at: log_time(line),
                },
                restarted,
            )),
            _ => {}
        }
    }
    checks
}

#[test]
fn check_counts_survive_a_broker_restart() {
    let mut node = fast_checks_with(&["--log-format", "json"], "300", "1500", "4");
    node.ok(&["topic", "create", "orders", "--queues", "1"]);
    // The producer leaves its transaction to the check-back and exits: nobody is left to ask,
    // and every check counts.
    let out = json_lines(&node.ok(&[
        "produce",
        "orders",
        "--transaction",
        "--group",
        "gone-service",
        "--decide",
        "unknown",
        "--body",
        "lost",
    ]));
    let tx = out[0]["transaction_id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(15);
    while logged_checks(&log_lines(&node), &tx).len() < 2 {
        assert!(Instant::now() < deadline, "no checks; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    node.kill();
    node.restart();

    let rolled_back = |lines: &[Value]| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    == "transaction rolled back: no producer of its group decided it"
                    && l["fields"]["transaction_id"] == tx.as_str()
            })
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let rollback = loop {
        if let Some(line) = rolled_back(&log_lines(&node)) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "never rolled back; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines = log_lines(&node);
    let recovered = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "undecided transactions recovered; they will be checked back"
        })
        .unwrap();
    assert_eq!(recovered["fields"]["checked_before"], 1);

    // Counted on from where the crash left it, one check per interval, four in all.
    let checks = logged_checks(&lines, &tx);
    let attempts: Vec<u64> = checks.iter().map(|(c, _)| c.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4], "log:\n{}", node.log());
    // The crash came between two checks, after the second.
    let first_after = checks.iter().position(|(_, after)| *after);
    assert!(
        first_after >= Some(2),
        "checks around the crash: {checks:?}"
    );
    let interval = time::Duration::milliseconds(1450);
    for pair in checks.windows(2) {
        assert!(
            pair[1].0.at - pair[0].0.at >= interval,
            "checks too close: {pair:?}"
        );
    }
    assert_eq!(rollback["fields"]["checks"], 4);
    assert!(log_time(&rollback) - checks[3].0.at >= interval);

    // A member that would commit it comes too late: the decision stands.
    let _late = node.background(&[
        "txn",
        "answer",
        "--group",
        "gone-service",
        "--topic",
        "orders",
        "--state",
        "commit",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(consume_all(&node, "orders", "readers").is_empty());
}

/// One record of `producer_id` with `sequence`; a half message of transaction `tx` if given.
fn sequenced(producer_id: u64, sequence: u32, body: &str, tx: Option<&str>) -> Bytes {
    let headers: Vec<(&str, Option<&[u8]>)> = tx
        .map(|tx| {
            vec![
                (PROP_TRANSACTION_ID, Some(tx.as_bytes())),
                (PROP_PRODUCER_GROUP, Some(&b"pg"[..])),
            ]
        })
        .unwrap_or_default();
    let options = BatchOptions {
        producer_id: producer_id as i64,
        producer_epoch: 0,
        base_sequence: sequence as i32,
        flags: if tx.is_some() {
            attributes::TRANSACTIONAL
        } else {
            0
        },
    };
    let mut builder = BatchBuilder::new("orders", options).unwrap();
    builder
        .push(
            &RecordFields {
                timestamp: 1,
                key: None,
                value: Some(body.as_bytes()),
            },
            headers.into_iter(),
        )
        .unwrap();
    builder.finish(Compression::None).unwrap().freeze()
}

async fn produce_raw(
    conn: &Connection,
    payload: Bytes,
) -> Result<pb::ProduceResponse, weir_client::ClientError> {
    let request = pb::ProduceRequest {
        topic: "orders".to_owned(),
        queue_id: 0,
    };
    conn.call::<_, pb::ProduceResponse>(ApiKey::Produce, &request, payload, None)
        .await
        .map(|(response, _)| response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_copy_leaves_its_producers_sequences_alone() {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "orders", "--queues", "1"]);
    let conn = Connection::connect(&node.addr, ConnectionConfig::default())
        .await
        .unwrap();
    let producer_id = crate::idempotence::init_producer_id(&conn).await;
    for seq in 0..3 {
        produce_raw(&conn, sequenced(producer_id, seq, &format!("m{seq}"), None))
            .await
            .unwrap();
    }
    // A half message carrying the producer's id and an old sequence, then committed.
    let half = produce_raw(&conn, sequenced(producer_id, 0, "paid", Some("tx-1")))
        .await
        .unwrap();
    conn.call::<_, pb::EndTransactionResponse>(
        ApiKey::EndTransaction,
        &pb::EndTransactionRequest {
            producer_group: "pg".to_owned(),
            transaction_id: "tx-1".to_owned(),
            half_offset: half.commit_log_offset,
            decision: pb::TransactionDecision::Commit as i32,
        },
        Bytes::new(),
        None,
    )
    .await
    .unwrap();

    // The idempotence table is rebuilt from the log at start.
    node.kill();
    node.restart();
    let conn = Connection::connect(&node.addr, ConnectionConfig::default())
        .await
        .unwrap();
    // The producer's next batch follows its own last sequence, not the committed copy's.
    let next = produce_raw(&conn, sequenced(producer_id, 3, "m3", None)).await;
    assert!(next.is_ok(), "{next:?}; log:\n{}", node.log());
    // And its last batch before is still known: a resend is answered with its position.
    let resent = produce_raw(&conn, sequenced(producer_id, 2, "m2", None))
        .await
        .unwrap();
    assert_eq!(resent.queue_offset, 2);
    assert_eq!(
        bodies(&read_all(&node, "orders", 1).await),
        ["m0", "m1", "m2", "paid", "m3"]
    );
}

//! Transactional messages against the real binary: commit, rollback, the check-back of an
//! undecided transaction with another live member of the producer group, the rollback of one
//! nobody answers for, and pending transactions across a broker crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_client::connection::{Connection, ConnectionConfig};
use weir_client::{Message, ProducerConfig, ReceivedMessage, TransactionProducer, TxState};
use weir_proto::transaction::PROP_TRANSACTION_ID;
use weir_proto::{ApiKey, pb};

use crate::harness::Node;

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
    Node::start_with_env(
        &[],
        &[
            ("WEIR_TRANSACTION_CHECK_FIRST_MS", first_ms),
            ("WEIR_TRANSACTION_CHECK_INTERVAL_MS", interval_ms),
            ("WEIR_TRANSACTION_CHECK_MAX", max),
        ],
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_transaction_is_checked_back_with_a_live_member_of_the_group() {
    let node = fast_checks("500", "500", "15");
    node.ok(&["topic", "create", "orders", "--queues", "1"]);

    // The first producer leaves its transaction undecided, then goes away.
    let first = producer(&node, "order-service", |_| TxState::Unknown).await;
    let undecided = first
        .send_in_transaction(
            Message::new("orders", "order-7").with_key("order-7"),
            |_| TxState::Unknown,
        )
        .await
        .unwrap();
    assert!(undecided.committed.is_none());
    drop(first);

    // Another member of the same group knows the outcome.
    let transaction_id = undecided.transaction_id.clone();
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let _second = producer(&node, "order-service", move |message| {
        count.fetch_add(1, Ordering::SeqCst);
        assert_eq!(message.topic, "orders");
        assert_eq!(message.key, "order-7");
        if message.property(PROP_TRANSACTION_ID) == Some(transaction_id.as_str()) {
            TxState::Commit
        } else {
            TxState::Rollback
        }
    })
    .await;

    let messages = wait_for_messages(&node, "orders", 1, Duration::from_secs(15)).await;
    assert_eq!(bodies(&messages), ["order-7"], "log:\n{}", node.log());
    assert!(asked.load(Ordering::SeqCst) >= 1);
    // Committed once, and no more checks for it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bodies(&read_all(&node, "orders", 1).await), ["order-7"]);
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

//! Damaged files on disk, one at a time, with the broker stopped (200 acknowledged messages
//! each), then started again: damage is detected, isolated and listed, never served, never
//! blocks a queue, and never costs the good messages around it.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use weir_client::connection::{Connection, ConnectionConfig};
use weir_client::{ClientError, ErrorCode};
use weir_proto::{ApiKey, pb};

use crate::harness::{Node, WEIR, assert_success, wait_timeout};

const MESSAGES: usize = 200;

fn body(i: usize) -> String {
    format!("msg-{i:04}")
}

/// A node with `topic` (`queues` queues) holding messages `msg-0000..msg-0199`, stopped.
fn stopped_node_with_messages(topic: &str, queues: u32) -> Node {
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", topic, "--queues", &queues.to_string()]);
    let input: String = (0..MESSAGES).map(|i| body(i) + "\n").collect();
    // One message per batch: a damaged byte costs its whole batch (one CRC covers it), and
    // these tests damage single messages.
    let args = ["produce", topic, "--batch-messages", "1"];
    let out = node.cli_with_stdin(&args, Some(input.as_bytes()));
    assert_success(&args, &out);
    assert!(node.stop().success());
    node
}

/// The first commit-log segment.
fn segment(node: &Node) -> PathBuf {
    node.data_dir()
        .join("commitlog")
        .join("00000000000000000000")
}

/// Where `needle` first is in `path`.
fn position_of(path: &PathBuf, needle: &str) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in {}", path.display())) as u64
}

/// Flips one bit of the body of message `i` in the commit log.
fn corrupt_body(node: &Node, i: usize) {
    let path = segment(node);
    let at = position_of(&path, &body(i)) + 5;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], at).unwrap();
}

/// `weir consume` of the whole topic by a new group, until 3 s without a message.
fn consume_all(node: &Node, topic: &str, group: &str) -> (Vec<String>, Output) {
    let out = node.cli(&[
        "consume",
        topic,
        "--group",
        group,
        "--from",
        "earliest",
        "--idle-timeout",
        "3s",
    ]);
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (lines, out)
}

fn expected_except(skip: &[usize]) -> Vec<String> {
    (0..MESSAGES)
        .filter(|i| !skip.contains(i))
        .map(body)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Case 1: one flipped byte in a message body. The 199 good messages are delivered, the bad
/// one never; the consumer is told, `weir consume` exits non-zero, the damage is counted,
/// logged at ERROR and listed by `weir damaged`.
#[test]
fn a_corrupt_record_is_skipped_not_blocking_its_queue() {
    let mut node = stopped_node_with_messages("orders", 1);
    corrupt_body(&node, 100);
    node.restart();
    let (lines, out) = consume_all(&node, "orders", "g");
    assert_eq!(lines, expected_except(&[100]));
    assert!(!out.status.success(), "weir consume must not succeed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 message(s) were skipped because they are damaged"),
        "{stderr}"
    );
    let log = node.log();
    assert!(
        log.contains("ERROR") && log.contains("damaged messages skipped"),
        "{log}"
    );
    let listed = node.ok(&["damaged", "--http", node.http_addr.as_deref().unwrap()]);
    assert!(
        listed.contains("queue orders:0 offsets 100..101 (1 messages) corrupt_record"),
        "{listed}"
    );
    let metrics = ureq::get(format!("{}/metrics", node.http_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_damaged_messages_total{reason=\"corrupt_record\"} 1")),
        "{metrics}"
    );
    // A replay from before the damage says so too, and still prints everything else.
    let out = node.cli(&[
        "consume", "orders", "--queue", "0", "--offset", "98", "--count", "4",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [body(98), body(99), body(101), body(102)]
    );
    assert!(!out.status.success());
}

/// Case 1, index side: a garbled consume-queue entry is rebuilt from the log, so nothing is
/// withheld and nothing skipped.
#[test]
fn a_garbled_consume_queue_entry_is_rebuilt_from_the_log() {
    let mut node = stopped_node_with_messages("orders", 1);
    let cq = node
        .data_dir()
        .join("consumequeue/orders/0/00000000000000000000");
    let file = std::fs::OpenOptions::new().write(true).open(cq).unwrap();
    file.write_all_at(&[0xEE; 20], 150 * 20).unwrap();
    node.restart();
    let (lines, out) = consume_all(&node, "orders", "g");
    assert_success(&["consume"], &out);
    assert_eq!(lines, expected_except(&[]));
    assert!(node.log().contains("rebuilt it from the log"));
}

/// Case 2: a dead-letter copy of a corrupt record is refused (it would carry the damage under
/// a fresh checksum); a good record next to it is copied.
#[tokio::test]
async fn a_corrupt_record_is_never_copied_to_the_dead_letter_topic() {
    let mut node = stopped_node_with_messages("orders", 1);
    corrupt_body(&node, 5);
    node.restart();
    let conn = Connection::connect(&node.addr, ConnectionConfig::default())
        .await
        .unwrap();
    let request = |offset| pb::DeadLetterRequest {
        group: "g".into(),
        topic: "orders".into(),
        queue_id: 0,
        queue_offset: offset,
        attempts: 3,
    };
    let bad = conn
        .call::<_, pb::DeadLetterResponse>(
            ApiKey::DeadLetter,
            &request(5),
            bytes::Bytes::new(),
            None,
        )
        .await;
    match bad {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::CorruptMessage, "{message}");
        }
        other => panic!("a corrupt record was dead-lettered: {other:?}"),
    }
    conn.call::<_, pb::DeadLetterResponse>(
        ApiKey::DeadLetter,
        &request(6),
        bytes::Bytes::new(),
        None,
    )
    .await
    .unwrap();
    let dlq = node.ok(&[
        "consume", "%DLQ%g", "--queue", "0", "--offset", "0", "--count", "5",
    ]);
    assert_eq!(dlq.lines().collect::<Vec<_>>(), [body(6)]);
}

/// Case 3: no checkpoint and a corrupt record in the middle: recovery keeps the 99 valid
/// records after it, isolates the bad one and says so at ERROR.
#[test]
fn without_a_checkpoint_recovery_keeps_the_records_after_damage() {
    let mut node = stopped_node_with_messages("orders", 1);
    std::fs::remove_file(node.data_dir().join("checkpoint")).unwrap();
    corrupt_body(&node, 100);
    node.restart();
    let log = node.log();
    assert!(
        log.contains("damaged commit-log bytes with valid records after them"),
        "{log}"
    );
    let (lines, out) = consume_all(&node, "orders", "g");
    assert_eq!(lines, expected_except(&[100]));
    assert!(!out.status.success());
    let listed = node.ok(&["damaged", "--http", node.http_addr.as_deref().unwrap()]);
    assert!(listed.contains("damaged_log"), "{listed}");
    assert!(
        listed.contains("lost_in_log") || listed.contains("queue orders:0"),
        "{listed}"
    );
}

/// Case 4: the segment cut below a valid checkpoint: the checkpoint is not trusted, what is
/// left is served, and a message produced afterwards is delivered.
#[test]
fn a_segment_cut_below_the_checkpoint_is_noticed() {
    let mut node = stopped_node_with_messages("orders", 1);
    let path = segment(&node);
    let at = position_of(&path, &body(150));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(at)
        .unwrap();
    node.restart();
    assert!(node.log().contains("shorter than it was created"));
    node.ok(&["produce", "orders", "--body", "after"]);
    let (lines, out) = consume_all(&node, "orders", "g");
    assert_success(&["consume"], &out);
    let mut expected: Vec<String> = (0..150).map(body).collect();
    expected.push("after".into());
    assert_eq!(lines, expected);
}

/// Case 5: the consume queues deleted, the checkpoint still there: rebuilt from the log, with
/// a WARN.
#[test]
fn a_deleted_consume_queue_directory_is_rebuilt() {
    let mut node = stopped_node_with_messages("orders", 2);
    std::fs::remove_dir_all(node.data_dir().join("consumequeue")).unwrap();
    node.restart();
    let log = node.log();
    assert!(
        log.contains("WARN") && log.contains("rebuilding the consume queues"),
        "{log}"
    );
    let (lines, out) = consume_all(&node, "orders", "g");
    assert_success(&["consume"], &out);
    assert_eq!(sorted(lines), expected_except(&[]));
}

/// Case 6: a consume-queue entry pointing at another queue's record: the read checks the
/// record's own topic, queue and offset, finds the right record, and every message is
/// delivered exactly once.
#[test]
fn a_stale_entry_pointing_at_another_queue_is_not_served() {
    let mut node = stopped_node_with_messages("orders", 2);
    let cq = |q: u32| {
        node.data_dir()
            .join(format!("consumequeue/orders/{q}/00000000000000000000"))
    };
    let mut entry = [0u8; 20];
    std::fs::File::open(cq(1))
        .unwrap()
        .read_exact_at(&mut entry, 10 * 20)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(cq(0))
        .unwrap()
        .write_all_at(&entry, 10 * 20)
        .unwrap();
    node.restart();
    let (lines, out) = consume_all(&node, "orders", "g");
    assert_success(&["consume"], &out);
    assert_eq!(sorted(lines), expected_except(&[]));
}

/// Case 7: `config/topics.json` missing while the log holds messages: the topic table is
/// rebuilt from the log, with a WARN, and every message is still there.
#[test]
fn a_missing_topic_table_is_rebuilt_from_the_log() {
    let mut node = stopped_node_with_messages("orders", 3);
    std::fs::remove_file(node.data_dir().join("config/topics.json")).unwrap();
    node.restart();
    let log = node.log();
    assert!(
        log.contains("WARN") && log.contains("the topic table was missing"),
        "{log}"
    );
    let described = node.ok(&["topic", "describe", "orders"]);
    assert!(described.contains("topic orders (3 queues)"), "{described}");
    let (lines, out) = consume_all(&node, "orders", "g");
    assert_success(&["consume"], &out);
    assert_eq!(sorted(lines), expected_except(&[]));
}

/// A data directory written by the first record format (one record per message, magic 0xA1)
/// is refused at start with a one-line explanation; nothing in it is read as data or changed.
#[test]
fn a_data_directory_in_the_old_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = data.join("commitlog");
    std::fs::create_dir_all(&log).unwrap();
    // The head of an old record: total_len u32 LE, magic 0xA1, reserved, commit_log_offset 0.
    let mut old = vec![0u8; 64 << 10];
    old[..4].copy_from_slice(&120u32.to_le_bytes());
    old[4] = 0xA1;
    let segment = log.join("00000000000000000000");
    std::fs::write(&segment, &old).unwrap();
    let mut child = std::process::Command::new(WEIR)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "",
            "--kafka",
            "",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("weir serve exits");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let explained: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("old record format"))
        .collect();
    assert!(
        explained
            .iter()
            .any(|l| l.contains("move the data directory aside")),
        "{stderr}"
    );
    assert!(
        std::fs::read(&segment).unwrap() == old,
        "the old segment was changed"
    );
}

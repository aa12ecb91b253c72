//! Overload: the broker pushes back instead of drowning, producers back off and recover, no
//! resend is a silent duplicate, nothing waits forever, and what a client can make the broker
//! hold (unread answers, announced frames, idle connections) stays bounded while other clients
//! keep being served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use weir_proto::frame::encode_frame;
use weir_proto::{ApiKey, Header, pb};

use crate::harness::{Node, wait_timeout};

/// Anonymous resident memory of a process in KiB (heap and stacks, not the mapped commit log).
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Messages stored in `topic`: the sum of its queues' maximum offsets.
fn stored(node: &Node, topic: &str) -> u64 {
    node.ok(&["topic", "describe", topic])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// A produce of one message works and is consumed back, end to end.
fn still_served(node: &Node, topic: &str, body: &str) {
    node.ok(&["produce", topic, "--body", body]);
    let out = node.ok(&[
        "consume",
        topic,
        "--offset",
        "0",
        "--queue",
        "0",
        "--idle-timeout",
        "2s",
    ]);
    assert!(
        out.lines().any(|l| l == body),
        "{body} not read back: {out}"
    );
}

/// Runs a client command, failing the test if it does not finish within `limit`.
fn run_bounded(node: &Node, args: &[&str], limit: Duration) -> (std::process::ExitStatus, String) {
    let mut child = node
        .client_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = reader.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("weir {args:?} still running after {limit:?}"));
    (status, out)
}

#[test]
fn sixty_four_sync_flush_producers_finish_and_every_acknowledged_message_is_stored_once() {
    let node = Node::start(&["--flush", "sync"]);
    let (status, out) = run_bounded(
        &node,
        &[
            "bench",
            "produce",
            "--topic",
            "s1k",
            "--create",
            "--queues",
            "8",
            "--duration",
            "3s",
            "--size",
            "1024",
            "--producers",
            "64",
            "--json",
        ],
        Duration::from_secs(120),
    );
    assert!(status.success(), "bench failed: {out}");
    node.ok(&["topic", "create", "probe", "--queues", "1"]);
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON summary");
    let acked = summary["messages"].as_u64().expect("messages");
    let resent = summary["resent_maybe_stored"]
        .as_u64()
        .expect("resends are reported");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(acked > 0);
    let stored = stored(&node, "s1k");
    assert!(
        stored >= acked && stored - acked <= resent,
        "stored {stored}, acknowledged {acked}, reported resends {resent}"
    );
    still_served(&node, "probe", "after-the-flood");
}

#[test]
fn a_producer_streaming_through_a_broker_restart_recovers_within_seconds() {
    const LINES: usize = 1_000_000;
    let mut node = Node::start(&[]);
    node.ok(&["topic", "create", "stream", "--queues", "4"]);
    let mut child = node
        .client_command(&["produce", "stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir produce");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let mut chunk = String::new();
        for i in 0..LINES {
            chunk.push_str(&format!("line-{i}\n"));
            if chunk.len() > 64 * 1024 {
                if stdin.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                chunk.clear();
            }
        }
        let _ = stdin.write_all(chunk.as_bytes());
    });
    // Restart once messages are being stored.
    let waiting = Instant::now();
    while stored(&node, "stream") == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "nothing stored yet"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    node.stop();
    node.restart();
    let status = wait_timeout(&mut child, Duration::from_secs(45));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = writer.join();
    let status = status.unwrap_or_else(|| {
        panic!(
            "weir produce still running {:?} after the restart: {stderr}",
            started.elapsed()
        )
    });
    assert!(status.success(), "weir produce failed: {stderr}");
    let stored = stored(&node, "stream");
    assert!(stored >= LINES as u64, "only {stored} of {LINES} stored");
    if stored > LINES as u64 {
        assert!(
            stderr.contains("may be stored twice"),
            "{} extra messages, not reported: {stderr}",
            stored - LINES as u64
        );
    }
}

/// Sends `frames` on a new connection and leaves it open, never reading.
fn hold_open(addr: &str, frames: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(frames).expect("write");
    stream
}

#[test]
fn unread_answers_announced_frames_and_idle_connections_hold_bounded_memory() {
    let node = Node::start_with_env(
        &[],
        &[
            ("WEIR_MAX_IN_FLIGHT_BYTES", "67108864"),
            ("WEIR_MAX_CONNECTION_IN_FLIGHT_BYTES", "8388608"),
        ],
    );
    node.ok(&[
        "bench",
        "produce",
        "--topic",
        "big",
        "--create",
        "--queues",
        "1",
        "--messages",
        "16000",
        "--size",
        "1024",
    ]);
    node.ok(&["topic", "create", "probe", "--queues", "1"]);
    let base = rss_anon_kib(node.pid());

    // (a) Clients that ask for answers and never read them: 4 connections, 100 pulls of up to
    // 4 MiB each (1.6 GB if every answer were kept).
    let mut pulls = BytesMut::new();
    for id in 0..100u32 {
        let request = pb::PullRequest {
            topic: "big".into(),
            queue_id: 0,
            offset: 0,
            max_messages: 4096,
            max_bytes: 4 << 20,
            ..Default::default()
        };
        encode_frame(
            &Header::request(ApiKey::Pull, id),
            &request,
            &[],
            &mut pulls,
        );
    }
    let readers_who_never_read: Vec<TcpStream> =
        (0..4).map(|_| hold_open(&node.addr, &pulls)).collect();
    std::thread::sleep(Duration::from_secs(2));
    still_served(&node, "probe", "during-unread-answers");
    let unread = rss_anon_kib(node.pid());

    // (b) 500 connections announce a 16 MiB frame, send a few bytes of it, and stall.
    let mut announce = vec![0u8; 64];
    announce[..4].copy_from_slice(&(16u32 << 20).to_be_bytes());
    announce[4..6].copy_from_slice(&(ApiKey::Produce as u16).to_be_bytes());
    let stalled: Vec<TcpStream> = (0..500).map(|_| hold_open(&node.addr, &announce)).collect();
    // (c) 2,000 connections that say nothing.
    let idle: Vec<TcpStream> = (0..2000).map(|_| hold_open(&node.addr, &[])).collect();
    std::thread::sleep(Duration::from_secs(2));
    still_served(&node, "probe", "during-stalls");
    let crowded = rss_anon_kib(node.pid());

    eprintln!("RssAnon KiB: base {base}, unread answers {unread}, +stalled and idle {crowded}");
    assert!(
        unread < base + 160 * 1024,
        "unread answers took {} KiB",
        unread - base
    );
    assert!(
        crowded < unread + 128 * 1024,
        "2,500 stalled or idle connections took {} KiB",
        crowded.saturating_sub(unread)
    );
    drop((readers_who_never_read, stalled, idle));
}

#[test]
fn connections_over_the_limit_are_refused_and_idle_ones_closed() {
    let node = Node::start_with_env(
        &[],
        &[
            ("WEIR_MAX_CONNECTIONS", "20"),
            ("WEIR_CONNECTION_IDLE_TIMEOUT_MS", "1500"),
        ],
    );
    let mut open: Vec<TcpStream> = (0..20).map(|_| hold_open(&node.addr, &[])).collect();
    std::thread::sleep(Duration::from_millis(300));
    // One more is closed at once: reading sees the end of the stream.
    let mut extra = hold_open(&node.addr, &[]);
    extra
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(extra.read(&mut byte), Ok(0)),
        "a connection over the limit was served"
    );
    // The idle ones are closed after the idle timeout, which makes room for real clients.
    std::thread::sleep(Duration::from_secs(3));
    for stream in &mut open {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let read = stream.read(&mut byte);
        assert!(
            matches!(&read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "an idle connection stayed open: {read:?}"
        );
    }
    node.ok(&["topic", "create", "after", "--queues", "1"]);
    still_served(&node, "after", "room-again");
}

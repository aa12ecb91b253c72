//! Retention against replicas that are behind: the leader's retention deletes segments (and
//! its Raft log the entries in them) while a replica is down, and a replica is added with an
//! empty disk after that. Each must be brought up to date from a snapshot — the leader's
//! commit log from its oldest segment, and its topics and offsets — and then hold exactly the
//! leader's messages, take new ones, and lead.
//!
//! Small segments and `retention_hours = 0` make retention delete every segment but the
//! active one within seconds.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::nodes::Cluster;
use crate::harness::{WEIR, ok_at};

const EXTRA: &str = "segment_size = 1048576\nmax_message_size = 1000000\nretention_hours = 0\n\
                     raft_snapshot_min_interval_ms = 2000\n";
const TOPIC: &str = "snap";
const QUEUES: u32 = 2;

/// Produces `count` messages of about 600 bytes, numbered from `from`, through `servers`.
fn produce(servers: &str, from: usize, count: usize) {
    let mut child = Command::new(WEIR)
        .args(["produce", TOPIC])
        .env("WEIR_SERVER", servers)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weir produce");
    let pad = "x".repeat(590);
    let mut input = String::new();
    for i in from..from + count {
        input.push_str(&format!("m-{i:06}-{pad}\n"));
    }
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("weir produce");
    assert!(
        out.status.success(),
        "weir produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(http: &str, path: &str) -> Option<Value> {
    let mut response = ureq::get(format!("http://{http}{path}")).call().ok()?;
    serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
}

/// (min, max) offsets of each queue of the topic, as replica `http` holds them.
fn ranges(http: &str) -> Vec<(u64, u64)> {
    let topic = get(http, &format!("/api/v1/topics/{TOPIC}")).unwrap_or(Value::Null);
    let Some(queues) = topic["queues"].as_array() else {
        return Vec::new();
    };
    queues
        .iter()
        .map(|q| {
            (
                q["min_offset"].as_u64().unwrap_or(0),
                q["max_offset"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The bodies of queue `q` in `[from, to)` as replica `http` holds them.
fn bodies(http: &str, q: u32, from: u64, to: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let page = get(
            http,
            &format!("/api/v1/topics/{TOPIC}/queues/{q}/messages?from={at}&max=1000"),
        )
        .expect("a page of messages");
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let offset = m["queue_offset"].as_u64().expect("offset");
            if offset >= to {
                return out;
            }
            out.push((offset, m["body"].as_str().unwrap_or_default().to_owned()));
            at = offset + 1;
        }
    }
    out
}

fn wait_for(what: &str, cluster: &Cluster, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            cluster.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Replica `id` holds the leader's messages: its queues end where the leader's do, start at
/// or before where the leader's start (past 0: retention ran), and every message both hold is
/// the same.
fn assert_same_messages(cluster: &mut Cluster, leader: u64, id: u64) {
    let leader_http = cluster.replica(leader).http_addr.clone().expect("http");
    let http = cluster.replica(id).http_addr.clone().expect("http");
    let want = ranges(&leader_http);
    let have = ranges(&http);
    assert_eq!(want.len(), QUEUES as usize, "leader's queues: {want:?}");
    assert_eq!(have.len(), want.len(), "node {id}'s queues: {have:?}");
    for (q, (w, h)) in want.iter().zip(&have).enumerate() {
        assert_eq!(
            h.1, w.1,
            "queue {q}: node {id} ends at {h:?}, the leader at {w:?}"
        );
        assert!(
            h.0 > 0,
            "queue {q} of node {id} starts at 0: retention never ran"
        );
        assert!(h.0 <= w.0, "queue {q}: node {id} starts after the leader");
        let q = q as u32;
        let theirs = bodies(&leader_http, q, w.0, w.1);
        let ours = bodies(&http, q, w.0, w.1);
        assert_eq!(
            theirs.len() as u64,
            w.1 - w.0,
            "queue {q}: the leader's messages"
        );
        assert!(
            ours == theirs,
            "queue {q}: node {id}'s messages differ from the leader's"
        );
    }
}

#[test]
fn replicas_behind_the_leaders_retention_catch_up_from_a_snapshot() {
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start_with_config(1, 3, EXTRA);
    let servers = cluster.servers().join(",");
    ok_at(
        &servers,
        &["topic", "create", TOPIC, "--queues", &QUEUES.to_string()],
    );
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let behind = (1..=3).find(|id| *id != leader).expect("a follower");

    // Down while the group writes ~5 MB (five segments) and a topic is created.
    cluster.kill(behind);
    ok_at(
        &servers,
        &["topic", "create", "made-meanwhile", "--queues", "1"],
    );
    produce(&servers, 0, 8000);
    let leader_http = cluster.replica(leader).http_addr.clone().expect("http");
    wait_for(
        "retention on the leader",
        &cluster,
        Duration::from_secs(60),
        || ranges(&leader_http).iter().all(|(min, _)| *min > 0),
    );

    cluster.restart(behind);
    let installed = "installing the snapshot received from the leader";
    wait_for(
        "the snapshot installed",
        &cluster,
        Duration::from_secs(60),
        || {
            cluster.replicas[(behind - 1) as usize]
                .log()
                .contains(installed)
        },
    );
    cluster.wait_caught_up(behind, Duration::from_secs(60));
    // It takes new writes after the snapshot like any replica.
    produce(&servers, 8000, 300);
    cluster.wait_caught_up(behind, Duration::from_secs(60));
    assert_same_messages(&mut cluster, leader, behind);
    let http = cluster.replica(behind).http_addr.clone().expect("http");
    assert!(
        get(&http, "/api/v1/topics/made-meanwhile").is_some(),
        "the topic created while node {behind} was down is not on it"
    );

    // A new replica with an empty disk: the log it needs starts past 0.
    let raft_addr = cluster.start_joining(4).to_string();
    let out = ok_at(
        &servers,
        &[
            "cluster",
            "add-replica",
            "--node-id",
            "4",
            "--raft-addr",
            &raft_addr,
            "--timeout",
            "90s",
        ],
    );
    assert!(out.contains("node 4 is a voter"), "{out}");
    cluster.wait_caught_up(4, Duration::from_secs(60));
    assert!(
        cluster.replicas[3].log().contains(installed),
        "node 4 did not start from a snapshot"
    );
    assert_same_messages(&mut cluster, leader, 4);

    // The old leader dies: the group goes on with the replicas that came from snapshots.
    cluster.kill(leader);
    let next = cluster.wait_leader(Duration::from_secs(30));
    assert_ne!(next, leader);
    produce(&servers, 8300, 100);
    for id in [behind, 4] {
        if id != next {
            cluster.wait_caught_up(id, Duration::from_secs(60));
        }
    }
    let next_http = cluster.replica(next).http_addr.clone().expect("http");
    let total: u64 = ranges(&next_http).iter().map(|(_, max)| max).sum();
    assert_eq!(total, 8400, "every message produced has a queue offset");
}

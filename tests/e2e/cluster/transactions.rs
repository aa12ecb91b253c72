//! Transactions across a leader failover. Half messages and decisions are entries of the
//! group's log, but each replica's set of undecided transactions is built when it starts: a
//! new leader must rebuild it from the log when it takes over, or it re-checks (and commits
//! again) a transaction its predecessor decided, and never checks one written while it
//! followed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::nodes::Cluster;
use crate::harness::{WEIR, ok_at};

/// The first check-back 3 s after a half message (or a new leader's take-over), then every
/// second; a transaction nobody decides is rolled back after 30 checks.
const EXTRA: &str = "transaction_check_first_ms = 3000\ntransaction_check_interval_ms = 1000\n\
                     transaction_check_max = 30\n";

/// A half message of producer group `g` on `orders` whose producer exits undecided.
fn undecided(servers: &str, body: &str) {
    let out = ok_at(
        servers,
        &[
            "produce",
            "orders",
            "--transaction",
            "--group",
            "g",
            "--decide",
            "unknown",
            "--body",
            body,
        ],
    );
    assert!(out.contains(r#""event":"half""#), "{out}");
}

/// A member of group `g` that answers every check-back "commit".
fn answerer(servers: &str) -> Child {
    Command::new(WEIR)
        .args([
            "txn", "answer", "--group", "g", "--topic", "orders", "--state", "commit",
        ])
        .env("WEIR_SERVER", servers)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run weir txn answer")
}

/// The bodies in `orders` queue 0, as replica `http` holds them.
fn bodies(http: &str) -> Vec<String> {
    let Ok(mut response) = ureq::get(format!(
        "http://{http}/api/v1/topics/orders/queues/0/messages?max=100"
    ))
    .call() else {
        return Vec::new();
    };
    let page: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
    page["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_bodies(cluster: &mut Cluster, id: u64, want: &[&str], timeout: Duration) {
    let http = cluster.replica(id).http_addr.clone().expect("http");
    let deadline = Instant::now() + timeout;
    loop {
        let have = bodies(&http);
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} holds {have:?}, not {want:?}\n{}",
            cluster.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_new_leader_rebuilds_undecided_transactions_from_the_log() {
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start_with_config(1, 3, EXTRA);
    let servers = cluster.servers().join(",");
    ok_at(&servers, &["topic", "create", "orders", "--queues", "1"]);
    let leader = cluster.wait_leader(Duration::from_secs(30));

    // t1 is undecided when the followers start again: the set they build then holds it.
    undecided(&servers, "t1");
    for id in (1..=3).filter(|id| *id != leader) {
        cluster.kill(id);
        cluster.restart(id);
        cluster.wait_caught_up(id, Duration::from_secs(30));
    }
    // The leader checks t1 back and a member of its group commits it.
    let mut member = answerer(&servers);
    wait_bodies(&mut cluster, leader, &["t1"], Duration::from_secs(30));
    let _ = member.kill();
    let _ = member.wait();

    // t2 is written, and its leader dies before its first check-back.
    undecided(&servers, "t2");
    cluster.kill(leader);
    let next = cluster.wait_leader(Duration::from_secs(30));
    let mut member = answerer(&servers);
    // The new leader checks t2 back (it was written while this replica followed) and does
    // not check t1 again (decided by its predecessor): t1 once, then t2.
    wait_bodies(&mut cluster, next, &["t1", "t2"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(4));
    wait_bodies(&mut cluster, next, &["t1", "t2"], Duration::from_secs(1));
    let _ = member.kill();
    let _ = member.wait();
}

//! Delayed messages across a failover: the leader delivers what comes due while it leads and
//! sends that progress through the group's log; a new leader reschedules, from its own log,
//! every delayed message not delivered yet (including those written while it followed), and
//! does not deliver again what the old leader delivered.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::nodes::Cluster;
use crate::harness::{WEIR, assert_success, ok_at};

const TOPIC: &str = "reminders";

/// Produces one message per line of `bodies`, each delivered `delay` after sending.
fn produce_delayed(servers: &str, bodies: &[String], delay: &str) {
    let args = ["produce", TOPIC, "--delay", delay];
    let mut child = Command::new(WEIR)
        .args(args)
        .env("WEIR_SERVER", servers)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir produce");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        let input: String = bodies.iter().map(|b| format!("{b}\n")).collect();
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait produce");
    assert_success(&args, &out);
}

/// Every message of the topic's one queue, from offset 0.
fn delivered(servers: &str) -> Vec<String> {
    ok_at(
        servers,
        &["consume", TOPIC, "--queue", "0", "--offset", "0"],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Waits until the topic holds `n` messages; returns them.
fn wait_delivered(cluster: &Cluster, servers: &str, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = delivered(servers);
        if got.len() >= n || Instant::now() > deadline {
            assert!(
                got.len() >= n,
                "{} of {n} delayed messages delivered: {got:?}\n{}",
                got.len(),
                cluster.logs_tail()
            );
            return got;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn delayed_messages_are_delivered_once_across_a_leader_failover() {
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start(1, 3);
    let servers = cluster.servers().join(",");
    ok_at(&servers, &["topic", "create", TOPIC, "--queues", "1"]);

    // Delivered by the first leader, and the progress replicated (sent every 500 ms).
    let early: Vec<String> = (0..10).map(|i| format!("early-{i}")).collect();
    produce_delayed(&servers, &early, "1s");
    wait_delivered(&cluster, &servers, 10, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));

    // Not due yet when the leader dies: the next leader delivers them.
    let late: Vec<String> = (0..10).map(|i| format!("late-{i}")).collect();
    produce_delayed(&servers, &late, "4s");
    let leader = cluster.wait_leader(Duration::from_secs(30));
    cluster.kill(leader);
    cluster.wait_leader(Duration::from_secs(30));

    wait_delivered(&cluster, &servers, 20, Duration::from_secs(30));
    // Anything delivered twice would show up within a few more seconds.
    std::thread::sleep(Duration::from_secs(3));
    let mut got = delivered(&servers);
    assert_eq!(got.len(), 20, "delivered twice or more: {got:?}");
    got.sort();
    let mut want: Vec<String> = early.iter().chain(&late).cloned().collect();
    want.sort();
    assert_eq!(got, want);
}

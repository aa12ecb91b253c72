//! Membership change under load: a fourth replica with an empty disk is added with
//! `weir cluster add-replica` (it catches up as a learner, then votes), an original replica is
//! removed with `weir cluster remove-replica` and stopped, and then the leader is SIGKILLed,
//! so that the group of {2, 3, 4} can only go on with the new replica's vote. The checker
//! then finds every acknowledged message and committed offset, nothing doubled, order kept.

use std::time::{Duration, Instant};

use super::checker::check;
use super::load::Load;
use super::nodes::Cluster;
use crate::harness::{cli_at, ok_at};

/// The longest a fault may keep every produce from being acknowledged (a loaded 2-core CI
/// machine).
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// Waits until every running voter of `want` says the group's voters are `want` (a removed
/// replica may never hear of its removal: the leader stops sending it the log).
fn wait_voters(cluster: &Cluster, want: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = cluster.statuses();
        if statuses
            .iter()
            .filter(|(id, _)| want.contains(id))
            .all(|(_, v)| v.as_ref().is_some_and(|v| v.voters == want))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "voters are not {want:?}: {statuses:?}\n{}",
            cluster.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `weir cluster add-replica` for node 4, reached at `raft_addr`; its output.
fn add_replica_4(servers: &str, raft_addr: &str) -> String {
    ok_at(
        servers,
        &[
            "cluster",
            "add-replica",
            "--node-id",
            "4",
            "--raft-addr",
            raft_addr,
            "--timeout",
            "60s",
        ],
    )
}

#[test]
fn a_replica_with_an_empty_disk_joins_and_an_old_one_leaves_under_load() {
    let _heavy = crate::harness::heavy();
    let mut cluster = Cluster::start(3, 3);
    let servers = cluster.servers().join(",");
    let load = Load::start(cluster.load_config());
    assert!(
        load.wait_acked(200, Duration::from_secs(60)),
        "the load did not get going\n{}",
        cluster.logs_tail()
    );

    // Node 4 starts empty and waits; the command adds it, and returns once it votes.
    let raft_addr = cluster.start_joining(4).to_string();
    let out = add_replica_4(&servers, &raft_addr);
    assert!(out.contains("node 4 is a voter"), "{out}");
    wait_voters(&cluster, &[1, 2, 3, 4]);
    cluster.wait_caught_up(4, Duration::from_secs(60));
    let status = ok_at(&servers, &["cluster", "status"]);
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("4")),
        "node 4 is not in the cluster status:\n{status}"
    );

    // Adding it again changes nothing.
    let again = add_replica_4(&servers, &raft_addr);
    assert!(again.contains("voters [1, 2, 3, 4]"), "{again}");

    // Node 1 leaves (leader or not), then goes away.
    let at = load.fault("remove node 1", 1);
    ok_at(&servers, &["cluster", "remove-replica", "--node-id", "1"]);
    wait_voters(&cluster, &[2, 3, 4]);
    cluster.kill(1);
    load.wait_ack_after(at, RECOVERY_LIMIT).unwrap_or_else(|| {
        panic!(
            "no acknowledgement after removing node 1\n{}",
            cluster.logs_tail()
        )
    });

    // Kill the leader of {2, 3, 4}: a quorum of the two left needs node 4's vote (and if
    // node 4 leads, the others must follow the log it built).
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let at = load.fault("SIGKILL leader", leader);
    cluster.kill(leader);
    load.wait_ack_after(at, RECOVERY_LIMIT).unwrap_or_else(|| {
        panic!(
            "no acknowledgement within {RECOVERY_LIMIT:?} of killing leader {leader}\n{}",
            cluster.logs_tail()
        )
    });
    assert!(
        load.wait_acked(load.acked() + 100, Duration::from_secs(30)),
        "the load stalled after the leader of {{2, 3, 4}} died\n{}",
        cluster.logs_tail()
    );

    // A node that is not a replica cannot be removed, and says so.
    let out = cli_at(&servers, &["cluster", "remove-replica", "--node-id", "9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("node 9 is not a replica"),
        "{stderr}"
    );

    let history = load.finish();
    let report = check(&history);
    println!("membership change:\n{report}");
    if !report.violations.is_empty() {
        println!("{}", cluster.logs_tail());
    }
    report.assert_clean(RECOVERY_LIMIT);
}

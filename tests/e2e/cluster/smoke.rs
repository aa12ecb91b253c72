//! The harness on a single standalone broker: the load, the faults and the checker end to end
//! where no replication is needed; and one broker behind three name servers.

use std::time::Duration;

use super::checker::{Report, check};
use super::load::Load;
use super::nodes::{Cluster, ProcessState, replica_view};

/// A standalone broker's recovery includes its restart (no replica takes over).
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// Restarts per test.
const ROUNDS: usize = 3;

/// Runs the load on one standalone broker (no name servers), taking it down with `down` and
/// starting it again [`ROUNDS`] times, and returns the checked report.
fn standalone_rounds(consumers: usize, what: &str, down: impl Fn(&mut Cluster)) -> Report {
    let mut cluster = Cluster::start_standalone(0);
    let (id, view) = cluster.leader().expect("a standalone broker leads");
    assert_eq!((id, view.node_id, view.term), (0, 0, 0));
    let mut config = cluster.load_config();
    config.consumers = consumers;
    let load = Load::start(config);
    assert!(
        load.wait_acked(50, Duration::from_secs(30)),
        "the load did not get going"
    );
    for _ in 0..ROUNDS {
        // Long enough for the group to commit (and the broker to write what it committed).
        std::thread::sleep(Duration::from_millis(1500));
        let at = load.fault(what, 0);
        down(&mut cluster);
        cluster.restart(0);
        assert!(
            load.wait_ack_after(at, RECOVERY_LIMIT).is_some(),
            "no acknowledgement after the restart\n{}",
            cluster.logs_tail()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let history = load.finish();
    let report = check(&history);
    println!("standalone, {what}:\n{report}");
    report.assert_clean(RECOVERY_LIMIT);
    assert!(report.stored >= report.acked, "{report}");
    if consumers > 0 {
        assert!(report.delivered > 0, "the group read nothing: {report}");
        assert!(
            history.commits.iter().any(|c| c.offset > 0),
            "no committed offset was ever seen"
        );
    }
    report
}

#[test]
fn a_standalone_broker_sigkilled_under_sync_load_loses_no_acknowledged_message() {
    standalone_rounds(0, "SIGKILL broker", |c| c.kill(0));
}

#[test]
fn a_standalone_broker_restarted_under_load_keeps_messages_and_committed_offsets() {
    standalone_rounds(2, "SIGTERM broker", |c| c.replica(0).stop());
}

/// A standalone broker writes a commit to `config/offsets.json` before it answers, so a
/// SIGKILL rewinds no group.
#[test]
fn a_standalone_broker_sigkilled_keeps_committed_offsets() {
    standalone_rounds(2, "SIGKILL broker", |c| c.kill(0));
}

#[test]
fn three_name_servers_and_a_standalone_broker_registered_with_them() {
    let cluster = Cluster::start_standalone(3);
    assert_eq!(cluster.servers().len(), 3);
    let load = Load::start(cluster.load_config());
    assert!(
        load.wait_acked(200, Duration::from_secs(30)),
        "no produce acknowledged through the name servers\n{}",
        cluster.logs_tail()
    );
    let (id, view) = cluster.leader().expect("the broker leads");
    assert_eq!((id, view.node_id, view.role.as_str()), (0, 0, "leader"));
    let report = check(&load.finish());
    println!("standalone behind name servers:\n{report}");
    report.assert_clean(RECOVERY_LIMIT);
    assert!(report.delivered > 0, "the group read nothing: {report}");
}

/// The process control of a group's replicas, which needs no replication: each is configured
/// with its Raft peers behind the proxies, and can be paused, resumed, killed, restarted on
/// the same addresses and restarted empty.
#[test]
fn replica_processes_are_paused_resumed_killed_restarted_and_wiped() {
    let mut cluster = Cluster::start(0, 3);
    for (id, view) in cluster.statuses() {
        assert!(view.is_some(), "node {id} does not answer its status");
    }
    let proxy_to_2 = cluster.proxies.addr(1, 2);
    let config = std::fs::read_to_string(cluster.replica(1).config_path()).unwrap();
    assert!(config.contains("node_id = 1\n"), "{config}");
    assert!(config.contains(&format!("\"2={proxy_to_2}\"")), "{config}");

    let http = |c: &mut Cluster, id| c.replica(id).http_addr.clone().unwrap();
    let http_2 = http(&mut cluster, 2);
    cluster.pause(2);
    let asked = std::time::Instant::now();
    assert_eq!(
        replica_view(&http_2, 2),
        None,
        "a stopped process answers nothing"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    cluster.resume(2);
    assert!(
        replica_view(&http_2, 2).is_some(),
        "node 2 answers once resumed"
    );

    let addr_3 = cluster.replica(3).addr.clone();
    let http_3 = http(&mut cluster, 3);
    cluster.kill(3);
    assert_eq!(cluster.replica(3).state(), ProcessState::Down);
    assert_eq!(replica_view(&http_3, 3), None);
    cluster.restart(3);
    assert_eq!(cluster.replica(3).addr, addr_3, "restarted on its address");
    assert!(
        replica_view(&http_3, 3).is_some(),
        "node 3 answers once restarted"
    );

    let marker = cluster.replica(1).data_dir().join("marker");
    std::fs::write(&marker, b"old").unwrap();
    cluster.restart_wiped(1);
    assert!(!marker.exists(), "the data directory was wiped");
    assert!(cluster.replica(1).data_dir().is_dir(), "and made anew");
    assert!(cluster.replica(1).status().is_some());
    cluster.wait_leader(Duration::from_secs(30));
}

//! A replicated log on real files: what a broker group's Raft layer relies on. Records are
//! written (stamped by the leader, copied as they are by followers) before they are
//! committed, and become readable only when the dispatch limit passes them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use weir_proto::batch::Entry;
use weir_store::{Store, StoreConfig, StoreError};

fn replicated(dir: &std::path::Path, limit: u64) -> StoreConfig {
    StoreConfig {
        dispatch_limit: Some(limit),
        ..small_config(dir)
    }
}

#[test]
fn records_are_readable_only_once_committed_and_replicas_hold_the_same_bytes() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = Store::open(replicated(leader_dir.path(), 0)).unwrap();
    let mut ends = Vec::new();
    for i in 0..3 {
        let mut b = batch("t", i * 4, 4, 50);
        let r = leader.append_as_leader("t", 0, &mut b, 7).unwrap();
        assert_eq!(r.queue_offset, i * 4, "queue offsets count written records");
        ends.push(r.end_offset);
    }
    assert_eq!(leader.queue_offsets("t", 0).max, 0, "nothing committed yet");
    leader.set_dispatch_limit(ends[0]);
    assert_eq!(leader.queue_offsets("t", 0).max, 4);

    let entries = leader.read_entries(0, ends[2]).unwrap();
    assert_eq!(Entry::parse(&entries).unwrap().stamp().leader_epoch, 7);
    let follower = Store::open(replicated(follower_dir.path(), 0)).unwrap();
    let mut copy = entries.clone();
    let r = follower.append_replicated(&mut copy).unwrap();
    assert_eq!((r.commit_log_offset, r.end_offset), (0, ends[2]));
    assert_eq!(follower.read_entries(0, ends[2]).unwrap(), entries);
    assert_eq!(follower.queue_offsets("t", 0).max, 0);

    // A new leader's log wins: the follower cuts its uncommitted tail and goes on from there.
    follower.set_dispatch_limit(ends[0]);
    follower.truncate_from(ends[1]).unwrap();
    let mut next = batch("t", 100, 2, 50);
    let r = follower.append_as_leader("t", 0, &mut next, 8).unwrap();
    assert_eq!(
        r.queue_offset, 8,
        "queue offsets continue after the uncommitted records that stay"
    );
    assert!(
        matches!(
            follower.truncate_from(0),
            Err(StoreError::InvalidPosition(0))
        ),
        "committed records are never cut"
    );
    follower.set_dispatch_limit(r.end_offset);
    assert_eq!(follower.queue_offsets("t", 0).max, 10);
}

#[test]
fn a_reopened_replica_keeps_uncommitted_records_unreadable_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let end_first;
    {
        let store = Store::open(replicated(dir.path(), 0)).unwrap();
        let mut b = batch("t", 0, 3, 40);
        end_first = store
            .append_as_leader("t", 1, &mut b, 1)
            .unwrap()
            .end_offset;
        let mut b = batch("t", 3, 3, 40);
        store.append_as_leader("t", 1, &mut b, 1).unwrap();
        store.set_dispatch_limit(end_first);
        store.shutdown().unwrap();
    }
    let store = Store::open(replicated(dir.path(), end_first)).unwrap();
    assert_eq!(
        store.queue_offsets("t", 1).max,
        3,
        "only the committed batch"
    );
    let mut b = batch("t", 6, 1, 40);
    let r = store.append_as_leader("t", 1, &mut b, 2).unwrap();
    assert_eq!(
        r.queue_offset, 6,
        "after the uncommitted batch kept in the log"
    );
    store.set_dispatch_limit(r.end_offset);
    assert_eq!(store.queue_offsets("t", 1).max, 7);
}

#[test]
fn every_readable_queue_offset_names_the_leader_epoch_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(replicated(dir.path(), 0)).unwrap();
    let mut end = 0;
    for (queue, first, n, epoch) in [(0, 0, 3, 1), (1, 0, 2, 9), (0, 3, 2, 1), (0, 5, 4, 4)] {
        let mut b = batch("t", first, n, 40);
        end = store
            .append_as_leader("t", queue, &mut b, epoch)
            .unwrap()
            .end_offset;
    }
    assert_eq!(store.leader_epoch_at("t", 0, 0), None, "not committed yet");
    store.set_dispatch_limit(end);
    let epochs: Vec<Option<i32>> = (0..10).map(|o| store.leader_epoch_at("t", 0, o)).collect();
    let want: Vec<Option<i32>> = [1, 1, 1, 1, 1, 4, 4, 4, 4]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    assert_eq!(epochs, want, "one epoch per batch, none past the end");
    assert_eq!(store.leader_epoch_at("t", 1, 1), Some(9));
    assert_eq!(store.leader_epoch_at("t", 2, 0), None, "no such queue");
    assert_eq!(store.leader_epoch_at("u", 0, 0), None, "no such topic");
}

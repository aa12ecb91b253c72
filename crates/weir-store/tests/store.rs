//! End-to-end tests of the store on real files.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use weir_proto::batch::{Entry, Message};
use weir_store::{FlushMode, Store, StoreConfig, StoreError, TagFilter};

fn read_all(store: &Store, topic: &str, queue: u32) -> Vec<Message> {
    let mut out = Vec::new();
    let mut next = store.queue_offsets(topic, queue).min;
    loop {
        let r = store
            .read(topic, queue, next, 1000, 1 << 20, &TagFilter::All)
            .unwrap();
        out.extend(messages(&r, next));
        if r.next_offset == next {
            return out;
        }
        next = r.next_offset;
    }
}

async fn wait_dispatched(store: &Store) {
    for _ in 0..500 {
        let s = store.stats();
        if s.dispatched_offset == s.written_offset {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("dispatcher did not catch up");
}

#[tokio::test]
async fn segments_roll_and_offsets_are_consecutive_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected_clo = Vec::new();
    {
        let store = Store::open(small_config(dir.path())).unwrap();
        let mut next = [0u64; 3];
        for i in 0..60u64 {
            let q = (i % 3) as u32;
            let r = store
                .append("t", q, batch("t", next[q as usize], 3, 100))
                .await
                .unwrap();
            assert_eq!(r.queue_offset, next[q as usize]);
            assert_eq!(r.count, 3);
            next[q as usize] += 3;
            expected_clo.push(r.commit_log_offset);
        }
        wait_dispatched(&store).await;
        let stats = store.stats();
        assert!(stats.segment_count > 5, "{stats:?}");
        for q in 0..3 {
            let msgs = read_all(&store, "t", q);
            assert_eq!(msgs.len(), 60);
            for (i, m) in msgs.iter().enumerate() {
                assert_eq!(m.queue_offset, i as u64);
                assert_eq!(seq_of(m), i as u64);
                assert_eq!(m.queue_id, q);
            }
        }
        let one = store.read_at(expected_clo[7]).unwrap();
        assert_eq!(
            Message::decode_entry(&one).unwrap()[0].commit_log_offset,
            expected_clo[7]
        );
        store.shutdown().unwrap();
        assert!(matches!(
            store.append("t", 0, batch("t", 0, 1, 10)).await,
            Err(StoreError::Closed)
        ));
    }
    let store = Store::open(small_config(dir.path())).unwrap();
    for q in 0..3 {
        assert_eq!(store.queue_offsets("t", q).max, 60);
    }
    let r = store.append("t", 1, batch("t", 60, 2, 100)).await.unwrap();
    assert_eq!(r.queue_offset, 60);
    wait_dispatched(&store).await;
    assert_eq!(read_all(&store, "t", 1).len(), 62);
}

#[tokio::test]
async fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(small_config(dir.path())).unwrap();
    let err = Store::open(small_config(dir.path())).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }));
    assert_eq!(err.code(), 1001);
}

#[tokio::test]
async fn sync_mode_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        flush: FlushMode::Sync,
        segment_size: 1 << 20,
        ..small_config(dir.path())
    };
    let store = Store::open(config).unwrap();
    let base_fsyncs = store.stats().fsyncs;
    let mut tasks = Vec::new();
    for t in 0..64u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let r = store.append("t", t, batch("t", i, 1, 50)).await.unwrap();
                assert!(store.stats().flushed_offset >= r.end_offset);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fsyncs = store.stats().fsyncs - base_fsyncs;
    assert!(fsyncs < 64 * 20 / 4, "{fsyncs} fsyncs for 1280 appends");
}

/// With a page-cache window of 0, the flusher lets go of everything flushed and dispatched
/// (64 MiB at a time); readers fault it back in from the files, whole and in order.
#[tokio::test]
async fn a_log_let_go_of_by_the_page_cache_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        segment_size: 16 << 20,
        consume_queue_segment_entries: 100_000,
        index_slots: 65_536,
        index_entries: 100_000,
        max_message_size: 4 << 20,
        page_cache_window: Some(0),
        ..small_config(dir.path())
    };
    let store = Store::open(config).unwrap();
    let (batches, per_batch, size) = (100u64, 500u64, 1500);
    for i in 0..batches {
        let r = store
            .append("t", 0, batch("t", i * per_batch, per_batch, size))
            .await
            .unwrap();
        assert_eq!(r.queue_offset, i * per_batch);
    }
    wait_dispatched(&store).await;
    let mut released = 0;
    for _ in 0..250 {
        released = store.stats().cache_released_offset;
        if released >= 64 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released >= 64 << 20, "{:?}", store.stats());
    let msgs = read_all(&store, "t", 0);
    assert_eq!(msgs.len() as u64, batches * per_batch);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.queue_offset, i as u64);
        assert_eq!(seq_of(m), i as u64);
    }
}

#[tokio::test]
async fn tag_filter_skips_using_entries_and_advances() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let mut b = BytesMut::new();
    for i in 0..30u64 {
        let tag = ["A", "B", "C"][(i % 3) as usize];
        b.extend_from_slice(&record("t", "", tag, &body(i, 30)));
    }
    store.append("t", 0, b).await.unwrap();
    wait_dispatched(&store).await;
    let f = TagFilter::parse("A || C");
    let r = store.read("t", 0, 0, 100, 1 << 20, &f).unwrap();
    let msgs = messages(&r, 0);
    assert_eq!(r.count, 20);
    assert!(msgs.iter().all(|m| m.tag() != "B"));
    assert_eq!(r.next_offset, 30);
    let r = store
        .read("t", 0, 29, 100, 1 << 20, &TagFilter::parse("B"))
        .unwrap();
    assert_eq!((r.count, r.next_offset), (0, 30));
    // max_bytes: at least one, then stops.
    let r = store.read("t", 0, 0, 100, 1, &TagFilter::All).unwrap();
    assert_eq!((r.count, r.next_offset), (1, 1));
    // max_messages
    let r = store
        .read("t", 0, 0, 4, 1 << 20, &TagFilter::parse("B"))
        .unwrap();
    assert_eq!((r.count, r.next_offset), (4, 11));
    // at the end: empty, same offset; beyond: out of range.
    let r = store.read("t", 0, 30, 4, 1 << 20, &TagFilter::All).unwrap();
    assert_eq!((r.count, r.next_offset, r.max_offset), (0, 30, 30));
    assert!(matches!(
        store.read("t", 0, 31, 4, 1 << 20, &TagFilter::All),
        Err(StoreError::OffsetOutOfRange {
            requested: 31,
            min: 0,
            max: 30
        })
    ));
    let r = store
        .read("nope", 0, 0, 4, 1 << 20, &TagFilter::All)
        .unwrap();
    assert_eq!(r.count, 0);
}

#[tokio::test]
async fn key_and_time_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let mut stamps = Vec::new();
    for i in 0..40u64 {
        let key = format!("order-{}", i % 4);
        let r = store
            .append("t", 0, record("t", &key, "", &body(i, 40)))
            .await
            .unwrap();
        stamps.push(r.store_timestamp);
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    store
        .append("u", 0, record("u", "order-1", "", &body(99, 40)))
        .await
        .unwrap();
    wait_dispatched(&store).await;
    let found = store.find_by_key("t", "order-1", 100).unwrap();
    let seqs: Vec<u64> = found
        .iter()
        .map(|b| seq_of(&Message::decode_entry(b).unwrap()[0]))
        .collect();
    assert_eq!(seqs, (0..40).filter(|i| i % 4 == 1).collect::<Vec<_>>());
    assert_eq!(store.find_by_key("t", "order-1", 3).unwrap().len(), 3);
    assert!(store.find_by_key("t", "missing", 10).unwrap().is_empty());
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    for (i, ts) in stamps.iter().enumerate() {
        let off = store.offset_for_time("t", 0, *ts).unwrap();
        assert!(off <= i as u64 && stamps[off as usize] == *ts, "{i}");
    }
    assert_eq!(store.offset_for_time("t", 0, i64::MAX).unwrap(), 40);
    assert_eq!(store.offset_for_time("t", 0, 0).unwrap(), 0);
    // The index survives a reopen.
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.find_by_key("t", "order-2", 100).unwrap().len(), 10);
}

#[tokio::test]
async fn truncate_then_append_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let mut results = Vec::new();
    for i in 0..50u64 {
        let q = (i % 2) as u32;
        results.push(
            store
                .append("t", q, batch("t", i / 2, 1, 200))
                .await
                .unwrap(),
        );
    }
    wait_dispatched(&store).await;
    let cut = results[30].commit_log_offset;
    assert!(matches!(
        store.truncate_from(cut + 1),
        Err(StoreError::InvalidPosition(_))
    ));
    store.truncate_from(cut).unwrap();
    assert_eq!(store.stats().written_offset, cut);
    assert_eq!(store.queue_offsets("t", 0).max, 15);
    assert_eq!(store.queue_offsets("t", 1).max, 15);
    assert!(store.find_by_key("t", "k20", 10).unwrap().is_empty());
    assert!(store.read_at(results[31].commit_log_offset).is_err());
    let r = store.append("t", 0, batch("t", 15, 1, 200)).await.unwrap();
    assert_eq!((r.queue_offset, r.commit_log_offset), (15, cut));
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.queue_offsets("t", 0).max, 16);
    assert_eq!(store.queue_offsets("t", 1).max, 15);
    let msgs = read_all(&store, "t", 0);
    assert_eq!(
        msgs.iter().map(seq_of).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
}

/// The state a crash leaves in the middle of `truncate_from`: the checkpoint already says the
/// log ends at the cut (layout in checkpoint.rs), the bytes past it are still there.
#[tokio::test]
async fn a_cut_interrupted_by_a_crash_is_finished_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let mut results = Vec::new();
    for i in 0..40u64 {
        results.push(store.append("t", 0, batch("t", i, 1, 200)).await.unwrap());
    }
    wait_dispatched(&store).await;
    store.shutdown().unwrap();
    drop(store);
    let cut = results[25].commit_log_offset;
    let path = dir.path().join("checkpoint");
    let mut cp = std::fs::read(&path).unwrap();
    assert_eq!(cp.len(), 52, "checkpoint version 3");
    cp[8..16].copy_from_slice(&cut.to_le_bytes());
    cp[28..36].copy_from_slice(&cut.to_le_bytes());
    // The queue totals (36..48) are left as they were before the cut: the queues then do not
    // add up, they are rebuilt from the log, and the cut is still finished.
    let crc = crc32c::crc32c(&cp[..48]);
    cp[48..52].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, cp).unwrap();

    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.stats().written_offset, cut);
    assert_eq!(store.queue_offsets("t", 0).max, 25);
    assert!(store.find_by_key("t", "k30", 10).unwrap().is_empty());
    let r = store.append("t", 0, batch("t", 25, 1, 200)).await.unwrap();
    assert_eq!((r.queue_offset, r.commit_log_offset), (25, cut));
    // What is appended after the cut is not cut again by a later recovery.
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(
        read_all(&store, "t", 0)
            .iter()
            .map(seq_of)
            .collect::<Vec<_>>(),
        (0..26).collect::<Vec<_>>()
    );
}

/// A deleted topic, then a recovery that re-reads the whole log (no checkpoint): its records
/// are still in the log, but its queues and keys do not come back, and a topic made anew
/// under its name starts empty.
#[tokio::test]
async fn a_deleted_topic_stays_deleted_through_a_full_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    for i in 0..10u64 {
        store.append("t", 0, batch("t", i, 1, 200)).await.unwrap();
    }
    store.append("u", 0, batch("u", 0, 1, 200)).await.unwrap();
    wait_dispatched(&store).await;
    store.delete_queues("t").unwrap();
    assert_eq!(store.queue_offsets("t", 0).max, 0);
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();

    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.queue_offsets("t", 0).max, 0);
    assert!(store.find_by_key("t", "k3", 10).unwrap().is_empty());
    assert_eq!(store.queue_offsets("u", 0).max, 1);
    let r = store.append("t", 0, batch("t", 100, 1, 200)).await.unwrap();
    assert_eq!(r.queue_offset, 0);
    assert_eq!(
        read_all(&store, "t", 0)
            .iter()
            .map(seq_of)
            .collect::<Vec<_>>(),
        vec![100]
    );
}

/// A crash inside `delete_queues` after the tombstone was written (layout in tombstones.rs)
/// but before the queues were dropped: the next open drops them.
#[tokio::test]
async fn a_deletion_interrupted_after_its_tombstone_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    for i in 0..10u64 {
        store.append("t", 0, batch("t", i, 1, 200)).await.unwrap();
    }
    wait_dispatched(&store).await;
    let end = store.stats().written_offset;
    store.shutdown().unwrap();
    drop(store);
    std::fs::write(dir.path().join("deleted_topics"), format!("{end} t\n")).unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.queue_offsets("t", 0).max, 0);
    let r = store.append("t", 0, batch("t", 100, 1, 200)).await.unwrap();
    assert_eq!(r.queue_offset, 0);
}

#[tokio::test]
async fn replicated_records_append_as_they_are() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = Store::open(small_config(leader_dir.path())).unwrap();
    let follower = Store::open(small_config(follower_dir.path())).unwrap();
    for i in 0..30u64 {
        leader
            .append("t", (i % 2) as u32, batch("t", i, 2, 300))
            .await
            .unwrap();
    }
    wait_dispatched(&leader).await;
    let end = leader.stats().written_offset;
    let mut at = 0;
    while at < end {
        let Ok(rec) = leader.read_at(at) else {
            at = (at / 4096 + 1) * 4096;
            continue;
        };
        at += rec.len() as u64;
        follower
            .append_replicated(&mut BytesMut::from(&rec[..]))
            .unwrap();
    }
    assert_eq!(follower.stats().written_offset, end);
    wait_dispatched(&follower).await;
    assert_eq!(follower.queue_offsets("t", 1).max, 30);
    let bad = leader.read_at(0).unwrap();
    assert!(matches!(
        follower.append_replicated(&mut BytesMut::from(&bad[..])),
        Err(StoreError::ReplicaMismatch(_))
    ));
}

#[tokio::test]
async fn retention_by_disk_ratio_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    for i in 0..40u64 {
        store.append("t", 0, batch("t", i, 1, 500)).await.unwrap();
    }
    wait_dispatched(&store).await;
    assert_eq!(store.run_retention().unwrap(), 0);
    let before = store.stats().segment_count;
    assert!(before > 3);
    drop(store);

    let config = StoreConfig {
        retention_disk_ratio: 0.0,
        ..small_config(dir.path())
    };
    let store = Store::open(config).unwrap();
    let deleted = store.run_retention().unwrap();
    assert_eq!(deleted, before - 1);
    assert_eq!(store.stats().segment_count, 1);
    let offs = store.queue_offsets("t", 0);
    assert!(offs.min > 0 && offs.max == 40, "{offs:?}");
    match store.read("t", 0, 0, 10, 1 << 20, &TagFilter::All) {
        Err(StoreError::OffsetOutOfRange {
            requested: 0,
            min,
            max: 40,
        }) => assert_eq!(min, offs.min),
        other => panic!("{other:?}"),
    }
    let msgs = read_all(&store, "t", 0);
    assert_eq!(msgs.len() as u64, 40 - offs.min);
    assert!(store.find_by_key("t", "k0", 10).unwrap().is_empty());
    drop(store);

    let config = StoreConfig {
        retention_age: Duration::from_millis(1),
        ..small_config(dir.path())
    };
    let store = Store::open(config).unwrap();
    for i in 40..80u64 {
        store.append("t", 0, batch("t", i, 1, 500)).await.unwrap();
    }
    wait_dispatched(&store).await;
    std::thread::sleep(Duration::from_millis(20));
    assert!(store.run_retention().unwrap() > 0);
    assert_eq!(store.stats().segment_count, 1);
    assert_eq!(store.queue_offsets("t", 0).max, 80);
}

#[tokio::test]
async fn bad_input_is_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let big = record("t", "", "", &vec![0u8; 3000]);
    assert!(matches!(
        store.append("t", 0, big).await,
        Err(StoreError::MessageTooLarge { max: 2048, .. })
    ));
    let mut mixed = batch("t", 0, 2, 10);
    mixed.extend_from_slice(&record("other", "", "", b"x"));
    let err = store.append("t", 0, mixed).await.unwrap_err();
    assert!(matches!(err, StoreError::TopicMismatch { .. }), "{err}");
    let mut corrupt = batch("t", 0, 3, 10);
    let n = corrupt.len();
    corrupt[n - 1] ^= 0xFF;
    assert!(matches!(
        store.append("t", 0, corrupt).await,
        Err(StoreError::CorruptRecord(_))
    ));
    let mut torn = batch("t", 0, 2, 10);
    torn.truncate(torn.len() - 3);
    assert!(matches!(
        store.append("t", 0, torn).await,
        Err(StoreError::CorruptRecord(_))
    ));
    assert!(matches!(
        store.append("t", 0, BytesMut::new()).await,
        Err(StoreError::EmptyBatch)
    ));
    assert!(matches!(
        store.append("../x", 0, record("../x", "", "", b"x")).await,
        Err(StoreError::InvalidTopic(_))
    ));
    assert_eq!(store.stats().written_offset, 0);
    let r = store.append("t", 0, batch("t", 0, 1, 10)).await.unwrap();
    assert_eq!((r.queue_offset, r.commit_log_offset), (0, 0));
}

#[tokio::test]
async fn dispatch_listener_hears_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<std::time::Instant>();
    let tx = parking_lot::Mutex::new(tx);
    let s = Arc::clone(&seen);
    store.set_dispatch_listener(Arc::new(move |topic, queue, max| {
        assert_eq!((topic, queue), ("t", 4));
        s.store(max, Ordering::SeqCst);
        let _ = tx.lock().send(std::time::Instant::now());
    }));
    let mut delays = Vec::new();
    for i in 0..20u64 {
        let sent = std::time::Instant::now();
        store.append("t", 4, batch("t", i, 1, 10)).await.unwrap();
        let heard = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        delays.push(heard - sent);
        assert_eq!(seen.load(Ordering::SeqCst), i + 1);
    }
    // Woken, not polled (the dispatcher's idle poll is 200 ms): the typical delay is tiny. The
    // median, not the worst, because other tests' fsyncs can stall one write on a shared disk.
    delays.sort();
    assert!(
        delays[delays.len() / 2] < Duration::from_millis(20),
        "{delays:?}"
    );
}

#[tokio::test]
async fn delete_queues_drops_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store
        .append("gone", 0, batch("gone", 0, 5, 10))
        .await
        .unwrap();
    store
        .append("kept", 0, batch("kept", 0, 5, 10))
        .await
        .unwrap();
    store.delete_queues("gone").unwrap();
    assert_eq!(store.queue_offsets("gone", 0).max, 0);
    assert_eq!(store.queue_offsets("kept", 0).max, 5);
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.queue_offsets("gone", 0).max, 0);
    let r = store
        .append("gone", 0, batch("gone", 0, 1, 10))
        .await
        .unwrap();
    assert_eq!(r.queue_offset, 0);
}

#[test]
fn error_codes_are_stable() {
    assert_eq!(StoreError::DiskFull.code(), 1003);
    assert_eq!(
        StoreError::OffsetOutOfRange {
            requested: 0,
            min: 1,
            max: 2
        }
        .code(),
        1008
    );
    assert_eq!("sync".parse::<FlushMode>().unwrap(), FlushMode::Sync);
    assert!("fast".parse::<FlushMode>().is_err());
    let _: Bytes = Bytes::new();
    let _ = Entry::parse(&[]);
}

#[tokio::test]
async fn reads_return_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    // Two batches: offsets 0..5 (tags A B A B A) and 5..8 (tags C C C).
    let first: Vec<(&str, &str, Vec<u8>)> = (0..5u64)
        .map(|i| ("", ["A", "B"][(i % 2) as usize], body(i, 20)))
        .collect();
    let second: Vec<(&str, &str, Vec<u8>)> = (5..8u64).map(|i| ("", "C", body(i, 20))).collect();
    let a = store.append("t", 0, entry("t", &first)).await.unwrap();
    let b = store.append("t", 0, entry("t", &second)).await.unwrap();
    assert_eq!(
        (a.queue_offset, a.count, b.queue_offset, b.count),
        (0, 5, 5, 3)
    );
    wait_dispatched(&store).await;
    // From the middle of the first batch: the whole batch comes, counted from the offset on,
    // and reading does not stop inside a batch.
    let r = store.read("t", 0, 3, 1, 1 << 20, &TagFilter::All).unwrap();
    assert_eq!((r.count, r.next_offset), (2, 5));
    let all = Message::decode_all(&r.records).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(
        messages(&r, 3).iter().map(seq_of).collect::<Vec<_>>(),
        [3, 4]
    );
    // A tag filter counts only matching messages; a batch without one is not read at all.
    let r = store
        .read("t", 0, 0, 100, 1 << 20, &TagFilter::parse("B"))
        .unwrap();
    assert_eq!((r.count, r.next_offset), (2, 8));
    assert_eq!(Message::decode_all(&r.records).unwrap().len(), 5);
    let r = store
        .read("t", 0, 0, 100, 1 << 20, &TagFilter::parse("C"))
        .unwrap();
    assert_eq!((r.count, r.next_offset), (3, 8));
    assert_eq!(Message::decode_all(&r.records).unwrap().len(), 3);
}

#[test]
fn a_data_directory_in_the_old_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("commitlog");
    std::fs::create_dir_all(&log).unwrap();
    // An old-format record: total_len u32 LE, magic 0xA1, then its fields.
    let mut old = vec![0u8; 4096];
    old[..4].copy_from_slice(&120u32.to_le_bytes());
    old[4] = 0xA1;
    std::fs::write(log.join("00000000000000000000"), &old).unwrap();
    let err = Store::open(small_config(dir.path()))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, StoreError::OldFormat { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("old record format") && !text.contains('\n'),
        "{text}"
    );
    // Nothing was changed: the file is as it was.
    assert_eq!(
        std::fs::read(log.join("00000000000000000000")).unwrap(),
        old
    );
}

#[tokio::test]
async fn topic_sizes_follow_appends_restarts_retention_cuts_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    // (topic, commit-log offset, length) of each batch appended.
    let mut batches = Vec::new();
    for i in 0..40u64 {
        let topic = if i % 4 == 0 { "b" } else { "a" };
        let batch = batch(topic, i, 3, 200);
        let len = batch.len() as u64;
        let r = store.append(topic, 0, batch).await.unwrap();
        batches.push((topic, r.commit_log_offset, len));
    }
    wait_dispatched(&store).await;
    let size = |batches: &[(&str, u64, u64)], topic: &str, from: u64| -> u64 {
        batches
            .iter()
            .filter(|(t, at, _)| *t == topic && *at >= from)
            .map(|(_, _, len)| len)
            .sum()
    };
    assert_eq!(store.topic_bytes("a"), size(&batches, "a", 0));
    assert_eq!(store.topic_bytes("b"), size(&batches, "b", 0));
    assert_eq!(store.topic_bytes("none"), 0);

    // A cut takes the cut batches off (the last two, both of "a").
    store.truncate_from(batches[38].1).unwrap();
    batches.truncate(38);
    assert_eq!(store.topic_bytes("a"), size(&batches, "a", 0));
    drop(store);

    // After a clean restart, from the size files; after losing them, from the log.
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.topic_bytes("a"), size(&batches, "a", 0));
    assert_eq!(store.topic_bytes("b"), size(&batches, "b", 0));
    drop(store);
    std::fs::remove_dir_all(dir.path().join("topicbytes")).unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.topic_bytes("a"), size(&batches, "a", 0));
    assert_eq!(store.topic_bytes("b"), size(&batches, "b", 0));

    // Deleting a topic empties its size, for good; a topic made anew counts from zero.
    store.delete_queues("b").unwrap();
    assert_eq!(store.topic_bytes("b"), 0);
    let fresh = batch("b", 0, 1, 50);
    let fresh_len = fresh.len() as u64;
    store.append("b", 0, fresh).await.unwrap();
    wait_dispatched(&store).await;
    assert_eq!(store.topic_bytes("b"), fresh_len);
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.topic_bytes("b"), fresh_len);
    drop(store);

    // Retention: what is left is what the remaining segments hold.
    let config = StoreConfig {
        retention_disk_ratio: 0.0,
        ..small_config(dir.path())
    };
    let store = Store::open(config).unwrap();
    assert!(store.run_retention().unwrap() > 0);
    let log_min = store.stats().min_offset;
    assert!(size(&batches, "a", log_min) < size(&batches, "a", 0));
    assert_eq!(store.topic_bytes("a"), size(&batches, "a", log_min));
    assert_eq!(store.topic_bytes("b"), fresh_len);
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.topic_bytes("a"), size(&batches, "a", log_min));
    assert_eq!(store.topic_bytes("b"), fresh_len);
}

/// A broker group's retention floor holds retention back until it is raised; a copy of the
/// log made with `log_span` / `read_log_bytes` / `StagedLog` and put in place with
/// `replace_log` opens into the same queues, offsets and messages (from the first segment
/// still on disk), and takes appends after them.
#[tokio::test]
async fn the_retention_floor_holds_retention_and_a_log_copy_opens_as_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        retention_disk_ratio: 0.0,
        retention_floor: Some(0),
        ..small_config(dir.path())
    };
    let store = Store::open(config).unwrap();
    for i in 0..60u64 {
        let topic = if i % 3 == 0 { "a" } else { "b" };
        store
            .append(topic, (i % 2) as u32, batch(topic, i, 1, 500))
            .await
            .unwrap();
    }
    wait_dispatched(&store).await;
    let segments = store.stats().segment_count;
    assert!(segments > 3, "{segments} segments");
    // Nothing goes while the floor is 0, although the disk is "full".
    assert_eq!(store.run_retention().unwrap(), 0);
    let wanted = store
        .retention_wanted()
        .unwrap()
        .expect("retention wants a segment");
    store.set_retention_floor(wanted);
    assert_eq!(store.run_retention().unwrap(), 1);
    assert_eq!(store.stats().segment_count, segments - 1);

    // Copy what is left, up to the end, into a staging directory, then into a new data dir.
    let end = store.stats().written_offset;
    let span = store.log_span(end).unwrap();
    assert_eq!(span.start, store.stats().min_offset);
    assert!(span.start > 0);
    let staging = tempfile::tempdir().unwrap();
    let mut staged = weir_store::StagedLog::create(&staging.path().join("s")).unwrap();
    for (base, capacity) in &span.segments {
        let upto = (base + capacity).min(end);
        let mut at = *base;
        while at < upto {
            let len = (upto - at).min(1000);
            let bytes = store.read_log_bytes(at, len as usize).unwrap();
            staged.write(*base, *capacity, at - base, &bytes).unwrap();
            at += len;
        }
    }
    staged.write_tombstones(&span.tombstones).unwrap();
    staged.finish().unwrap();
    let copy = tempfile::tempdir().unwrap();
    // Whatever the replica had before goes.
    {
        let old = Store::open(small_config(copy.path())).unwrap();
        old.append("old", 0, batch("old", 0, 3, 100)).await.unwrap();
        old.shutdown().unwrap();
    }
    weir_store::replace_log(copy.path(), &staging.path().join("s")).unwrap();
    let copied = Store::open(small_config(copy.path())).unwrap();
    wait_dispatched(&copied).await;
    assert_eq!(copied.queue_offsets("old", 0).max, 0);
    for (topic, queue) in [("a", 0), ("a", 1), ("b", 0), ("b", 1)] {
        let want = store.queue_offsets(topic, queue);
        let have = copied.queue_offsets(topic, queue);
        assert_eq!(have.max, want.max, "{topic}/{queue}");
        assert!(
            have.min <= want.min && have.min > 0,
            "{topic}/{queue}: {have:?} {want:?}"
        );
        let from = want.min;
        let theirs: Vec<_> = read_all(&store, topic, queue);
        let ours: Vec<_> = read_all(&copied, topic, queue)
            .into_iter()
            .filter(|m| m.queue_offset >= from)
            .collect();
        assert_eq!(ours, theirs, "{topic}/{queue}");
    }
    let r = copied.append("a", 0, batch("a", 99, 1, 100)).await.unwrap();
    assert_eq!(r.queue_offset, store.queue_offsets("a", 0).max);
    assert_eq!(r.commit_log_offset, end);
}

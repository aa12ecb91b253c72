//! Damaged files (property test): random logs, random damage — bit flips, truncated segments,
//! zeroed ranges, deleted or stale consume-queue files, a garbled consume-queue entry, a
//! deleted key index, a missing checkpoint — then reopen: every undamaged record is still
//! readable (by queue and by key), no damaged byte is ever served, and no queue is blocked.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use proptest::prelude::*;

use weir_store::{DamageLocation, Store, TagFilter};

const TOPICS: [&str; 3] = ["a", "b", "c"];
const QUEUES: u32 = 3;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One stored record, as it was stored.
#[derive(Debug, Clone)]
struct Stored {
    topic: usize,
    queue_id: u32,
    queue_offset: u64,
    commit_log_offset: u64,
    bytes: Bytes,
    key: String,
}

impl Stored {
    fn end(&self) -> u64 {
        self.commit_log_offset + self.bytes.len() as u64
    }
}

/// What is done to the files while the store is closed.
#[derive(Debug, Clone)]
enum Damage {
    /// Flip one bit of a record.
    BitFlip { record: usize, at: usize, bit: u8 },
    /// Zero `len` bytes from inside a record on.
    Zero { record: usize, at: usize, len: u64 },
    /// Cut the segment holding a record inside that record.
    Truncate { record: usize, at: usize },
    /// Delete one queue's consume-queue directory.
    DeleteQueue { topic: usize, queue: u32 },
    /// Delete every consume queue.
    DeleteAllQueues,
    /// Copy another queue's consume-queue files over one's (a stale or misplaced copy).
    StaleQueue {
        topic: usize,
        queue: u32,
        from_topic: usize,
        from_queue: u32,
    },
    /// Garble one consume-queue entry (not a queue's newest: that one is checked at open).
    GarbleEntry { record: usize, garbage: u64 },
    /// Delete the key index.
    DeleteIndex,
    /// Delete the checkpoint.
    DeleteCheckpoint,
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    let record = any::<prop::sample::Index>();
    prop_oneof![
        3 => (record.clone(), 0usize..1000, 0u8..8)
            .prop_map(|(r, at, bit)| Damage::BitFlip { record: r.index(1 << 20), at, bit }),
        2 => (record.clone(), 0usize..1000, 1u64..600)
            .prop_map(|(r, at, len)| Damage::Zero { record: r.index(1 << 20), at, len }),
        2 => (record.clone(), 0usize..1000)
            .prop_map(|(r, at)| Damage::Truncate { record: r.index(1 << 20), at }),
        1 => (0usize..3, 0u32..QUEUES).prop_map(|(topic, queue)| Damage::DeleteQueue { topic, queue }),
        1 => Just(Damage::DeleteAllQueues),
        1 => (0usize..3, 0u32..QUEUES, 0usize..3, 0u32..QUEUES).prop_map(
            |(topic, queue, from_topic, from_queue)| Damage::StaleQueue { topic, queue, from_topic, from_queue }),
        2 => (record, any::<u64>()).prop_map(|(r, garbage)| Damage::GarbleEntry { record: r.index(1 << 20), garbage }),
        1 => Just(Damage::DeleteIndex),
        1 => Just(Damage::DeleteCheckpoint),
    ]
}

/// The segment file holding commit-log offset `offset`, and its base.
fn segment_of(dir: &Path, offset: u64) -> (PathBuf, u64) {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_str().unwrap().parse().unwrap(), p))
        .collect();
    files.sort();
    let (base, path) = files.into_iter().rev().find(|(b, _)| *b <= offset).unwrap();
    (path, base)
}

fn queue_dir(dir: &Path, topic: usize, queue: u32) -> PathBuf {
    dir.join("consumequeue")
        .join(TOPICS[topic])
        .join(queue.to_string())
}

/// Whether `s`'s bytes are still on disk exactly as stored, as the reopened store sees them:
/// a cut segment is preallocated to its full size again, so what was cut off reads as zeros
/// (a record whose cut-off tail was zeros is whole again).
fn intact(dir: &Path, s: &Stored) -> bool {
    let (path, base) = segment_of(dir, s.commit_log_offset);
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; s.bytes.len()];
    let mut at = 0;
    while at < b.len() {
        match f.read_at(&mut b[at..], s.commit_log_offset - base + at as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => at += n,
        }
    }
    b[..] == s.bytes[..]
}

/// Applies `damage`.
fn apply(dir: &Path, damage: &Damage, stored: &[Stored], entries_per_file: u64) {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(p)
            .unwrap()
    };
    match damage {
        Damage::BitFlip { record, at, bit } => {
            let r = &stored[record % stored.len()];
            let abs = r.commit_log_offset + (*at % r.bytes.len()) as u64;
            let (path, base) = segment_of(dir, abs);
            let f = open(&path);
            let mut b = [0u8; 1];
            if f.read_exact_at(&mut b, abs - base).is_ok() {
                b[0] ^= 1 << bit;
                f.write_all_at(&b, abs - base).unwrap();
            }
        }
        Damage::Zero { record, at, len } => {
            let r = &stored[record % stored.len()];
            let abs = r.commit_log_offset + (*at % r.bytes.len()) as u64;
            let (path, base) = segment_of(dir, abs);
            let f = open(&path);
            let flen = f.metadata().unwrap().len();
            let len = (*len).min(flen.saturating_sub(abs - base));
            f.write_all_at(&vec![0u8; len as usize], abs - base)
                .unwrap();
        }
        Damage::Truncate { record, at } => {
            let r = &stored[record % stored.len()];
            let abs = r.commit_log_offset + (*at % r.bytes.len()) as u64;
            let (path, base) = segment_of(dir, abs);
            open(&path).set_len(abs - base).unwrap();
        }
        Damage::DeleteQueue { topic, queue } => {
            let _ = std::fs::remove_dir_all(queue_dir(dir, *topic, *queue));
        }
        Damage::DeleteAllQueues => {
            let _ = std::fs::remove_dir_all(dir.join("consumequeue"));
        }
        Damage::StaleQueue {
            topic,
            queue,
            from_topic,
            from_queue,
        } => {
            let (to, from) = (
                queue_dir(dir, *topic, *queue),
                queue_dir(dir, *from_topic, *from_queue),
            );
            if to != from && from.exists() {
                let _ = std::fs::remove_dir_all(&to);
                std::fs::create_dir_all(&to).unwrap();
                for e in std::fs::read_dir(&from).unwrap() {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
        }
        Damage::GarbleEntry { record, garbage } => {
            let r = &stored[record % stored.len()];
            let newest = stored
                .iter()
                .filter(|s| s.topic == r.topic && s.queue_id == r.queue_id)
                .map(|s| s.queue_offset)
                .max()
                .unwrap();
            if r.queue_offset < newest {
                let file_base = r.queue_offset - r.queue_offset % entries_per_file;
                let path = queue_dir(dir, r.topic, r.queue_id).join(format!("{file_base:020}"));
                if path.exists() {
                    let mut entry = [0u8; 20];
                    entry[..8].copy_from_slice(&garbage.to_le_bytes());
                    entry[8..12].copy_from_slice(&((garbage >> 7) as u32 % 4096).to_le_bytes());
                    open(&path)
                        .write_all_at(&entry, (r.queue_offset - file_base) * 20)
                        .unwrap();
                }
            }
        }
        Damage::DeleteIndex => {
            let _ = std::fs::remove_dir_all(dir.join("index"));
        }
        Damage::DeleteCheckpoint => {
            let _ = std::fs::remove_file(dir.join("checkpoint"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn damage_is_isolated_and_never_served(
        appends in proptest::collection::vec((0usize..3, 0u32..QUEUES, 1u64..4, 10usize..400), 1..40),
        damages in proptest::collection::vec(damage_strategy(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(dir.path());
        let entries_per_file = config.consume_queue_segment_entries;
        let rt = runtime();
        let mut stored: Vec<Stored> = Vec::new();
        {
            let store = Store::open(config.clone()).unwrap();
            let mut seq = 0u64;
            for (t, q, n, size) in &appends {
                rt.block_on(store.append(TOPICS[*t], *q, batch(TOPICS[*t], seq, *n, *size))).unwrap();
                seq += n;
            }
            for (t, topic) in TOPICS.iter().enumerate() {
                for q in 0..QUEUES {
                    let r = store.read(topic, q, 0, 100_000, u32::MAX, &TagFilter::All).unwrap();
                    for (bytes, msgs) in entries_with_messages(&r.records) {
                        for m in msgs {
                            stored.push(Stored {
                                topic: t,
                                queue_id: q,
                                queue_offset: m.queue_offset,
                                commit_log_offset: m.commit_log_offset,
                                bytes: bytes.clone(),
                                key: m.key_str().to_owned(),
                            });
                        }
                    }
                }
            }
            store.shutdown().unwrap();
        }
        for d in &damages {
            apply(dir.path(), d, &stored, entries_per_file);
        }
        // Damaged: the bytes on disk are no longer exactly what was stored.
        let spoiled: HashSet<u64> = stored
            .iter()
            .filter(|s| !intact(dir.path(), s))
            .map(|s| s.commit_log_offset)
            .collect();
        let damaged = |s: &Stored| spoiled.contains(&s.commit_log_offset);

        let store = Store::open(config).unwrap();
        let originals: BTreeMap<(usize, u32, u64), &Stored> =
            stored.iter().map(|s| ((s.topic, s.queue_id, s.queue_offset), s)).collect();
        let mut served: HashSet<(usize, u32, u64)> = HashSet::new();
        for (t, topic) in TOPICS.iter().enumerate() {
            for q in 0..QUEUES {
                let offs = store.queue_offsets(topic, q);
                let mut at = offs.min;
                // No queue is blocked: reads walk from min to max.
                let mut rounds = 0;
                while at < offs.max {
                    let r = store.read(topic, q, at, 7, u32::MAX, &TagFilter::All).unwrap();
                    prop_assert!(r.next_offset > at, "read at {} of {}/{} did not move", at, topic, q);
                    for (bytes, msgs) in entries_with_messages(&r.records) {
                        // A whole batch is served: it reaches into [at, next_offset).
                        prop_assert!(msgs.iter().any(|m| m.queue_offset >= at && m.queue_offset < r.next_offset));
                        for m in msgs {
                            prop_assert_eq!(m.topic.as_str(), *topic);
                            prop_assert_eq!(m.queue_id, q);
                            // Never a damaged byte: exactly what was stored there.
                            let original = originals.get(&(t, q, m.queue_offset));
                            prop_assert!(original.is_some(), "served an unknown record");
                            let original = original.unwrap();
                            prop_assert_eq!(&original.bytes[..], &bytes[..]);
                            prop_assert!(!damaged(original), "served a damaged record");
                            if m.queue_offset >= at && m.queue_offset < r.next_offset {
                                served.insert((t, q, m.queue_offset));
                            }
                        }
                    }
                    at = r.next_offset;
                    rounds += 1;
                    prop_assert!(rounds < 10_000);
                }
            }
        }
        // Every undamaged record is served.
        let log_end = store.stats().written_offset;
        for s in &stored {
            if damaged(s) {
                continue;
            }
            prop_assert!(
                served.contains(&(s.topic, s.queue_id, s.queue_offset)),
                "undamaged record {}/{}@{} (log {}) not served; damage {:?}",
                TOPICS[s.topic], s.queue_id, s.queue_offset, s.commit_log_offset, damages
            );
            // And found by key.
            let found = store.find_by_key(TOPICS[s.topic], &s.key, 16).unwrap();
            prop_assert!(found.iter().any(|b| b[..] == s.bytes[..]), "key {} not found", s.key);
        }
        // Damage that was skipped is listed.
        let listed = store.damaged_ranges();
        // (A damaged record at the very end of the log is a torn tail: cut, as after a crash.)
        for s in stored.iter().filter(|s| damaged(s) && s.end() <= log_end) {
            if served.contains(&(s.topic, s.queue_id, s.queue_offset)) {
                continue;
            }
            let in_list = listed.iter().any(|r| match &r.location {
                DamageLocation::Queue { topic, queue_id } => {
                    topic == TOPICS[s.topic] && *queue_id == s.queue_id
                        && (r.from..r.to).contains(&s.queue_offset)
                }
                DamageLocation::Log => r.from < s.end() && s.commit_log_offset < r.to,
            });
            prop_assert!(in_list, "damaged record {}/{}@{} not listed", TOPICS[s.topic], s.queue_id, s.queue_offset);
        }
        // Every queue takes and serves new messages.
        for (t, topic) in TOPICS.iter().enumerate() {
            for q in 0..QUEUES {
                let a = rt.block_on(store.append(topic, q, batch(topic, 9_000_000 + t as u64, 1, 10))).unwrap();
                let r = store.read(topic, q, a.queue_offset, 1, u32::MAX, &TagFilter::All).unwrap();
                prop_assert_eq!(r.count, 1);
                let m = &messages(&r, a.queue_offset)[0];
                prop_assert_eq!(m.queue_offset, a.queue_offset);
            }
        }
    }
}

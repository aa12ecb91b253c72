//! Crash recovery: torn and corrupt tails (property test), a full disk, and real SIGKILLs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use weir_store::{FlushMode, Store, StoreConfig, StoreError, TagFilter};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn durable_records_survive_torn_and_corrupt_tails(
        appends in proptest::collection::vec((0usize..3, 0u32..3, 1u64..4, 10usize..600), 1..40),
        tail in proptest::collection::vec((0usize..3, 0u32..3, 1u64..4, 10usize..600), 1..10),
        cut in any::<prop::sample::Index>(),
        corrupt in any::<bool>(),
    ) {
        let topics = ["a", "b", "c"];
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut durable: HashMap<(usize, u32), Vec<u64>> = HashMap::new();
        let mut seq = 0u64;
        let durable_end;
        let checkpoint;
        {
            let store = Store::open(small_config(dir.path())).unwrap();
            for (t, q, n, size) in &appends {
                let r = rt.block_on(store.append(topics[*t], *q, batch(topics[*t], seq, *n, *size))).unwrap();
                let list = durable.entry((*t, *q)).or_default();
                prop_assert_eq!(r.queue_offset, list.len() as u64);
                list.extend(seq..seq + n);
                seq += n;
            }
            rt.block_on(store.wait_durable(store.stats().written_offset)).unwrap();
            store.checkpoint().unwrap();
            checkpoint = std::fs::read(dir.path().join("checkpoint")).unwrap();
            durable_end = store.stats().flushed_offset;
            for (t, q, n, size) in &tail {
                rt.block_on(store.append(topics[*t], *q, batch(topics[*t], 1_000_000 + seq, *n, *size))).unwrap();
                seq += n;
            }
            drop(store);
        }
        // Power loss after the last checkpoint: the checkpoint on disk is the one taken at
        // `durable_end` (a later one could only have been written after a later fsync)...
        std::fs::write(dir.path().join("checkpoint"), &checkpoint).unwrap();
        // ...and the last segment loses or garbles bytes past the durable end.
        let seg = last_segment(dir.path());
        let base: u64 = seg.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        let from = durable_end.saturating_sub(base).min(len);
        let at = from + cut.index((len - from).max(1) as usize) as u64;
        if corrupt {
            let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(&[0x5A; 16], at.min(len.saturating_sub(16))).unwrap();
        } else {
            std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(at).unwrap();
        }
        let store = Store::open(small_config(dir.path())).unwrap();
        for ((t, q), seqs) in &durable {
            let offs = store.queue_offsets(topics[*t], *q);
            prop_assert!(offs.max >= seqs.len() as u64);
            let r = store.read(topics[*t], *q, 0, 10_000, u32::MAX, &TagFilter::All).unwrap();
            let msgs = messages(&r, 0);
            // Garbled bytes in the tail with valid records after them are isolated: the
            // messages they held are skipped (and said so), the others are all there.
            let skipped: u64 = r.skipped.iter().map(|s| s.to - s.from).sum();
            prop_assert_eq!(msgs.len() as u64 + skipped, offs.max);
            prop_assert_eq!(r.next_offset, offs.max);
            for m in &msgs {
                let i = m.queue_offset as usize;
                prop_assert!(!r.skipped.iter().any(|s| (s.from..s.to).contains(&m.queue_offset)));
                if i < seqs.len() {
                    prop_assert_eq!(seq_of(m), seqs[i]);
                } else {
                    prop_assert!(seq_of(m) >= 1_000_000);
                }
            }
            for (i, m) in msgs.iter().take(seqs.len()).enumerate() {
                prop_assert_eq!(m.queue_offset, i as u64);
            }
            let r = rt.block_on(store.append(topics[*t], *q, batch(topics[*t], 0, 1, 10))).unwrap();
            prop_assert_eq!(r.queue_offset, offs.max);
        }
    }
}

const CHILD_ENV: &str = "WEIR_STORE_CRASH_CHILD_DIR";

/// Child mode of `sigkill_loses_nothing_reported_durable`: appends forever in sync mode and
/// prints each durable record as `queue_offset seq`. Does nothing when run as a normal test.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = StoreConfig {
        flush: FlushMode::Sync,
        ..small_config(std::path::Path::new(&dir))
    };
    let store = Store::open(config).unwrap();
    let rt = runtime();
    let start = store.queue_offsets("t", 0).max;
    let mut out = std::io::stdout().lock();
    for seq in start.. {
        let r = rt
            .block_on(store.append("t", 0, batch("t", seq, 1, 64 + (seq % 300) as usize)))
            .unwrap();
        writeln!(out, "DURABLE {} {}", r.queue_offset, seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_loses_nothing_reported_durable() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut reported = 0u64;
    for round in 0..20u64 {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let want = 5 + (round * 7919) % 40;
        let mut got = 0;
        while got < want {
            let Some(Ok(line)) = lines.next() else { break };
            let mut parts = line.split(' ');
            let (Some("DURABLE"), Some(q), Some(s)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (q, s): (u64, u64) = (q.parse().unwrap(), s.parse().unwrap());
            assert_eq!(q, s, "queue offsets and sequence numbers move together");
            reported = reported.max(q + 1);
            got += 1;
        }
        assert_eq!(
            got, want,
            "round {round}: the child stopped reporting durable records"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open(small_config(dir.path())).unwrap();
        let max = store.queue_offsets("t", 0).max;
        assert!(max >= reported, "round {round}: {max} < {reported}");
        let r = store
            .read("t", 0, 0, 100_000, u32::MAX, &TagFilter::All)
            .unwrap();
        let msgs = messages(&r, 0);
        assert_eq!(msgs.len() as u64, max);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!((m.queue_offset, seq_of(m)), (i as u64, i as u64));
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn full_disk_fails_cleanly_and_recovers() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIP full_disk_fails_cleanly_and_recovers: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.path().to_path_buf());
    let rt = runtime();
    let data = mnt.path().join("data");
    let config = StoreConfig {
        segment_size: 64 * 1024,
        ..small_config(&data)
    };
    let store = Store::open(config).unwrap();
    // Fill the disk.
    let filler = mnt.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    drop(f);
    let mut ok = 0u64;
    let err = loop {
        match rt.block_on(store.append("t", 0, batch("t", ok, 1, 1000))) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 10_000, "the disk never filled");
    };
    assert!(matches!(err, StoreError::DiskFull), "{err}");
    let written = store.stats().written_offset;
    assert!(matches!(
        rt.block_on(store.append("t", 0, batch("t", ok, 1, 1000))),
        Err(StoreError::DiskFull)
    ));
    assert_eq!(store.stats().written_offset, written);
    std::fs::remove_file(&filler).unwrap();
    let r = rt
        .block_on(store.append("t", 0, batch("t", ok, 1, 1000)))
        .unwrap();
    assert_eq!(r.queue_offset, ok);
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(StoreConfig {
        segment_size: 64 * 1024,
        ..small_config(&data)
    })
    .unwrap();
    let r = store
        .read("t", 0, 0, 100_000, u32::MAX, &TagFilter::All)
        .unwrap();
    let msgs = messages(&r, 0);
    assert_eq!(msgs.len() as u64, ok + 1);
    assert!(msgs.iter().enumerate().all(|(i, m)| seq_of(m) == i as u64));
}

//! Storage-engine throughput: `cargo bench -p weir-store`. Prints a Markdown table.
//! `cargo bench -p weir-store --bench store -- read` runs only the cases whose name holds
//! `read` (likewise `append`, `sync`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use weir_proto::batch::{BatchBuilder, BatchOptions, Compression, RecordFields};
use weir_store::{FlushMode, Store, StoreConfig, TagFilter};

const CASE_TIME: Duration = Duration::from_secs(3);

fn config(dir: &std::path::Path, flush: FlushMode) -> StoreConfig {
    StoreConfig {
        segment_size: 256 << 20,
        flush,
        ..StoreConfig::new(dir)
    }
}

/// One entry of `n` messages of `body_len` bytes, tagged `TagA`.
fn batch(topic: &str, n: usize, body_len: usize) -> BytesMut {
    batch_with(topic, n, &vec![b'x'; body_len], Compression::None)
}

/// A JSON log line of about 100 bytes, different for every `i`.
fn log_line(i: usize) -> Vec<u8> {
    format!(
        r#"{{"ts":"2026-11-27T19:{:02}:{:02}.{:03}Z","level":"info","svc":"orders","order":{},"ms":{}}}"#,
        i / 60_000 % 60,
        i / 1000 % 60,
        i % 1000,
        100_000 + i,
        i % 97
    )
    .into_bytes()
}

/// One entry of `n` messages with `body`, tagged `TagA`, compressed with `codec`.
fn batch_with(topic: &str, n: usize, body: &[u8], codec: Compression) -> BytesMut {
    let mut builder =
        BatchBuilder::with_capacity(topic, BatchOptions::default(), n * (body.len() + 20)).unwrap();
    let tags = [("TAGS", Some(&b"TagA"[..]))];
    for _ in 0..n {
        let fields = RecordFields {
            timestamp: 1_800_000_000_000,
            key: None,
            value: Some(body),
        };
        builder.push(&fields, tags.iter().copied()).unwrap();
    }
    builder.finish(codec).unwrap()
}

/// Appends batches of 1,000 JSON log lines (~100 B) compressed with `codec` to 8 queues,
/// async: what dispatch pays to index keys and tags of compressed batches, and the bytes the
/// log takes per message.
fn append_compressed(codec: Compression, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FlushMode::Async)).unwrap();
    let mut builder =
        BatchBuilder::with_capacity("bench", BatchOptions::default(), 128 * 1000).unwrap();
    let tags = [("TAGS", Some(&b"TagA"[..]))];
    let lines: Vec<Vec<u8>> = (0..1000).map(log_line).collect();
    for line in &lines {
        let fields = RecordFields {
            timestamp: 1_800_000_000_000,
            key: None,
            value: Some(line),
        };
        builder.push(&fields, tags.iter().copied()).unwrap();
    }
    let template = builder.finish(codec).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let start = Instant::now();
    let (mut msgs, mut q) = (0u64, 0u32);
    let body_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let mut bytes = 0u64;
    while start.elapsed() < CASE_TIME {
        rt.block_on(store.append("bench", q, template.clone()))
            .unwrap();
        msgs += 1000;
        bytes += body_bytes;
        q = (q + 1) % 8;
    }
    let took = start.elapsed();
    let log = store.stats().written_offset;
    store.shutdown().unwrap();
    row(
        &format!(
            "{name} ({:.1} log bytes per message)",
            log as f64 / msgs as f64
        ),
        msgs,
        bytes,
        took,
    );
}

fn row(name: &str, msgs: u64, bytes: u64, took: Duration) {
    let s = took.as_secs_f64();
    println!(
        "| {name} | {:.0} | {:.1} |",
        msgs as f64 / s,
        bytes as f64 / s / 1e6
    );
}

/// Appends batches of `per_batch` messages round-robin over `queues` queues, async mode.
fn append_async(body_len: usize, per_batch: usize, queues: u32, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FlushMode::Async)).unwrap();
    let template = batch("bench", per_batch, body_len);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Touch every queue once first, so the timed part measures steady-state appends rather
    // than the one-time creation of each queue's consume-queue file.
    for q in 0..queues {
        rt.block_on(store.append("bench", q, template.clone()))
            .unwrap();
    }
    let start = Instant::now();
    let (mut msgs, mut bytes, mut q) = (0u64, 0u64, 0u32);
    while start.elapsed() < CASE_TIME {
        for _ in 0..16 {
            let b = template.clone();
            bytes += b.len() as u64;
            rt.block_on(store.append("bench", q, b)).unwrap();
            msgs += per_batch as u64;
            q = (q + 1) % queues;
        }
    }
    store.shutdown().unwrap();
    row(name, msgs, bytes, start.elapsed());
}

/// `appenders` tasks each appending one message at a time, sync mode.
fn append_sync(appenders: u32, body_len: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FlushMode::Sync)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let fsyncs = store.stats().fsyncs;
    let start = Instant::now();
    let msgs: u64 = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..appenders {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let template = batch("bench", 1, body_len);
                let mut n = 0u64;
                while start.elapsed() < CASE_TIME {
                    store
                        .append("bench", t % 8, template.clone())
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let took = start.elapsed();
    let fsyncs = store.stats().fsyncs - fsyncs;
    store.shutdown().unwrap();
    row(
        &format!("sync, {appenders} appenders, {body_len} B body, 1 msg/append ({fsyncs} fsyncs)"),
        msgs,
        msgs * (body_len as u64 + 100),
        took,
    );
}

/// Writes ~1 GB of 1 KiB messages, then reads them back sequentially, cold then warm.
fn read_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path(), FlushMode::Async)).unwrap();
        let template = batch("bench", 256, 1024);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..(1 << 30) / template.len() {
            rt.block_on(store.append("bench", 0, template.clone()))
                .unwrap();
        }
        store.shutdown().unwrap();
    }
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    for label in [
        if dropped {
            "cold (drop_caches)"
        } else {
            "cold (reopened; page cache not dropped)"
        },
        "warm",
    ] {
        let store = Store::open(config(dir.path(), FlushMode::Async)).unwrap();
        let start = Instant::now();
        let (mut next, mut msgs, mut bytes) = (0u64, 0u64, 0u64);
        loop {
            let r = store
                .read("bench", 0, next, 256, 1 << 20, &TagFilter::All)
                .unwrap();
            if r.count == 0 {
                break;
            }
            msgs += r.count as u64;
            bytes += r.records.len() as u64;
            next = r.next_offset;
        }
        row(
            &format!("sequential read 1 KiB body, {label}"),
            msgs,
            bytes,
            start.elapsed(),
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    println!("| case | msgs/s | MB/s |");
    println!("|---|---:|---:|");
    let appends = [(100, 256, 8), (1024, 256, 8)];
    for (body, per_batch, queues) in appends {
        let name = format!(
            "async append, {} body, batches of {per_batch}, {queues} queues",
            if body == 100 { "100 B" } else { "1 KiB" }
        );
        if wants(&name) {
            append_async(body, per_batch, queues, &name);
        }
    }
    for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let name = format!("async append, JSON log lines ~100 B, batches of 1000, {codec}");
        if wants(&name) {
            append_compressed(codec, &name);
        }
    }
    if wants("sync") {
        for n in [1, 16, 64] {
            append_sync(n, 100);
        }
    }
    if wants("sequential read") {
        read_back();
    }
    for queues in [8, 10_000] {
        let name = format!(
            "async append, 100 B body, batches of 16, {} queues",
            if queues == 8 { "8" } else { "10,000" }
        );
        if wants(&name) {
            append_async(100, 16, queues, &name);
        }
    }
}

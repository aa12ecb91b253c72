//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use weir_proto::batch::{BatchBuilder, BatchOptions, Compression, Entries, Message, RecordFields};
use weir_store::{FlushMode, ReadResult, StoreConfig};

/// A config with tiny files so everything rolls often.
pub fn small_config(dir: &Path) -> StoreConfig {
    StoreConfig {
        segment_size: 4096,
        consume_queue_segment_entries: 16,
        max_message_size: 2048,
        flush_interval: Duration::from_millis(20),
        checkpoint_interval: Duration::from_millis(50),
        retention_check_interval: Duration::from_secs(3600),
        retention_disk_ratio: 1.0,
        index_slots: 64,
        index_entries: 256,
        flush: FlushMode::Async,
        ..StoreConfig::new(dir)
    }
}

/// One message as its own entry.
pub fn record(topic: &str, key: &str, tag: &str, body: &[u8]) -> BytesMut {
    entry(topic, &[(key, tag, body.to_vec())])
}

/// One entry holding `messages` (key, tag, body); empty key or tag for none.
pub fn entry(topic: &str, messages: &[(&str, &str, Vec<u8>)]) -> BytesMut {
    let mut builder = BatchBuilder::new(topic, BatchOptions::default()).unwrap();
    for (key, tag, body) in messages {
        let tags = [("TAGS", Some(tag.as_bytes()))];
        let headers = if tag.is_empty() {
            &tags[..0]
        } else {
            &tags[..]
        };
        builder
            .push(
                &RecordFields {
                    timestamp: 1,
                    key: (!key.is_empty()).then_some(key.as_bytes()),
                    value: Some(body),
                },
                headers.iter().copied(),
            )
            .unwrap();
    }
    builder.finish(Compression::None).unwrap()
}

/// One entry of `n` messages whose bodies are `seq` as text, padded to `size` bytes.
pub fn batch(topic: &str, first_seq: u64, n: u64, size: usize) -> BytesMut {
    let keys: Vec<String> = (first_seq..first_seq + n)
        .map(|s| format!("k{s}"))
        .collect();
    let messages: Vec<(&str, &str, Vec<u8>)> = (first_seq..first_seq + n)
        .zip(&keys)
        .map(|(seq, key)| (key.as_str(), "", body(seq, size)))
        .collect();
    entry(topic, &messages)
}

/// The messages a read returned that the reader asked for: queue offsets in
/// `[from, next_offset)` (a read returns whole batches).
pub fn messages(r: &ReadResult, from: u64) -> Vec<Message> {
    Message::decode_all(&r.records)
        .unwrap()
        .into_iter()
        .filter(|m| m.queue_offset >= from && m.queue_offset < r.next_offset)
        .collect()
}

/// Each entry of a read (its bytes) with its messages.
pub fn entries_with_messages(records: &Bytes) -> Vec<(Bytes, Vec<Message>)> {
    Entries::new(records)
        .map(|e| {
            let bytes = records.slice_ref(e.unwrap().as_bytes());
            let msgs = Message::decode_entry(&bytes).unwrap();
            (bytes, msgs)
        })
        .collect()
}

pub fn body(seq: u64, size: usize) -> Vec<u8> {
    let mut b = format!("{seq:020}").into_bytes();
    b.resize(size.max(20), b'x');
    b
}

pub fn seq_of(m: &Message) -> u64 {
    let body = m.body.as_deref().unwrap();
    std::str::from_utf8(&body[..20]).unwrap().parse().unwrap()
}

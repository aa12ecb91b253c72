//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use weir_proto::record::{Message, RecordFields, encode};
use weir_store::{FlushMode, StoreConfig};

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

/// One record.
pub fn record(topic: &str, key: &str, tag: &str, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(
        &RecordFields {
            topic,
            key,
            tag,
            body,
            born_timestamp: 1,
            ..Default::default()
        },
        &mut buf,
    )
    .unwrap();
    buf
}

/// A batch of `n` records whose bodies are `seq` as text, padded to `size` bytes.
pub fn batch(topic: &str, first_seq: u64, n: u64, size: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for seq in first_seq..first_seq + n {
        buf.extend_from_slice(&record(topic, &format!("k{seq}"), "", &body(seq, size)));
    }
    buf
}

pub fn body(seq: u64, size: usize) -> Vec<u8> {
    let mut b = format!("{seq:020}").into_bytes();
    b.resize(size.max(20), b'x');
    b
}

pub fn seq_of(m: &Message) -> u64 {
    std::str::from_utf8(&m.body[..20]).unwrap().parse().unwrap()
}

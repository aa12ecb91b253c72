//! [`Message`]: one message of a stored entry, decoded into owned fields.

use std::borrow::Cow;

use bytes::Bytes;

use super::{BatchError, Entries, Entry, HEADER_DELIVER_MS, HEADER_TAGS, RecordIter};

/// The most a compressed batch may expand to when decoded: 64 MiB.
pub const MAX_UNCOMPRESSED_LEN: usize = 64 << 20;

/// A stored message decoded into owned fields; key, body and header values share the buffer
/// they came in (or the batch's decompressed records).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Index within the queue.
    pub queue_offset: u64,
    /// Byte position of the message's entry in the commit log.
    pub commit_log_offset: u64,
    /// Index of the message in its batch.
    pub index: u32,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// When the producer created it (the record timestamp), ms since the Unix epoch.
    pub born_timestamp: i64,
    /// Idempotent producer id, -1 for none.
    pub producer_id: i64,
    /// Idempotent sequence, -1 for none.
    pub sequence: i32,
    /// The batch's attributes.
    pub attributes: u16,
    /// Key; `None` for null.
    pub key: Option<Bytes>,
    /// Body; `None` for null.
    pub body: Option<Bytes>,
    /// Headers (Weir's properties), in order; keys may repeat, values may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl Message {
    /// The value of the first header named `name`, when it is there, not null and UTF-8.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The tag (header `TAGS`), empty for none.
    pub fn tag(&self) -> &str {
        self.property(HEADER_TAGS).unwrap_or("")
    }

    /// The requested delivery time (header `TIMER_DELIVER_MS`), 0 for at once.
    pub fn deliver_at(&self) -> i64 {
        self.property(HEADER_DELIVER_MS)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The key as text: empty when null or not UTF-8.
    pub fn key_str(&self) -> &str {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("")
    }

    /// The body, empty when null.
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone().unwrap_or_default()
    }

    /// Decodes every message of the entry at the start of `buf`, checking the batch CRC.
    pub fn decode_entry(buf: &Bytes) -> Result<Vec<Message>, BatchError> {
        let mut out = Vec::new();
        let entry = Entry::parse(buf)?;
        Message::decode_into(buf, &entry, &mut out)?;
        Ok(out)
    }

    /// Decodes every message of every entry in `buf` (entries laid end to end).
    pub fn decode_all(buf: &Bytes) -> Result<Vec<Message>, BatchError> {
        let mut out = Vec::new();
        for entry in Entries::new(buf) {
            Message::decode_into(buf, &entry?, &mut out)?;
        }
        Ok(out)
    }

    /// Decodes the messages of `entry`, which lies inside `buf`, into `out`.
    pub fn decode_into(
        buf: &Bytes,
        entry: &Entry<'_>,
        out: &mut Vec<Message>,
    ) -> Result<(), BatchError> {
        entry.verify_batch()?;
        let stamp = entry.stamp();
        let (data, count, base_ts) = entry.records(MAX_UNCOMPRESSED_LEN)?.into_parts();
        let shared = match data {
            Cow::Borrowed(section) => buf.slice_ref(section),
            Cow::Owned(v) => Bytes::from(v),
        };
        // A record takes at least 7 bytes: a count the bytes cannot hold reserves no more.
        out.reserve((count as usize).min(shared.len() / 7 + 1));
        for record in RecordIter::over(&shared, count, base_ts) {
            let record = record?;
            let headers = record
                .headers()
                .map(|h| h.map(|(k, v)| (k.to_owned(), v.map(|v| shared.slice_ref(v)))))
                .collect::<Result<_, _>>()?;
            let sequence = if entry.base_sequence() < 0 {
                entry.base_sequence()
            } else {
                entry
                    .base_sequence()
                    .wrapping_add(record.offset_delta as i32)
            };
            out.push(Message {
                topic: entry.topic().to_owned(),
                queue_id: stamp.queue_id,
                queue_offset: stamp.base_offset + u64::from(record.offset_delta),
                commit_log_offset: stamp.commit_log_offset,
                index: record.offset_delta,
                store_timestamp: stamp.store_timestamp,
                born_timestamp: record.timestamp,
                producer_id: entry.producer_id(),
                sequence,
                attributes: entry.attributes(),
                key: record.key.map(|k| shared.slice_ref(k)),
                body: record.value.map(|v| shared.slice_ref(v)),
                headers,
            });
        }
        Ok(())
    }
}

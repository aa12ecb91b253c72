//! The record format, one end to end: a Kafka RecordBatch v2 inside a thin Weir envelope.
//!
//! A producer encodes the messages for one (topic, queue) as one *entry*: the envelope, then a
//! Kafka batch. The broker checks the batch's CRC once, stamps the broker fields in place
//! ([`stamp`]) and appends the bytes as they came; the same bytes go back to consumers. Every
//! byte is covered by one of two CRC32Cs: the producer's batch CRC (Kafka's, bytes 21.. of the
//! batch) and the broker's envelope CRC (the envelope, the topic and the batch's first 21
//! bytes, which hold the stamped base offset and leader epoch).
//!
//! All integers are big-endian, as in Kafka.
//!
//! ```text
//! envelope
//! offset  size  field                   set by   covered by
//!  0      4     entry_len u32           client   envelope_crc  (whole entry, this field included)
//!  4      1     magic u8 = 0xB2         client   envelope_crc  (Weir log format 2)
//!  5      1     flags u8                client   envelope_crc  (see [`envelope_flags`])
//!  6      1     topic_len u8            client   envelope_crc
//!  7      1     reserved, zero          client   envelope_crc
//!  8      8     commit_log_offset u64   broker   envelope_crc  (byte position in the commit log)
//! 16      8     store_timestamp i64     broker   envelope_crc  (ms since the Unix epoch)
//! 24      4     queue_id u32            broker   envelope_crc
//! 28      4     envelope_crc u32        broker   -             (CRC32C of 0..28, topic, batch 0..21)
//! 32      n     topic (UTF-8)           client   envelope_crc
//!
//! Kafka RecordBatch v2, at b = 32 + n
//! b+ 0    8     base_offset i64         broker   envelope_crc  (queue offset of the first record)
//! b+ 8    4     batch_length i32        client   envelope_crc  (bytes after this field)
//! b+12    4     partition_leader_epoch  broker   envelope_crc
//! b+16    1     magic i8 = 2            client   envelope_crc
//! b+17    4     crc u32                 client   envelope_crc  (CRC32C of b+21..end)
//! b+21    2     attributes i16          client   crc           (see [`attributes`])
//! b+23    4     last_offset_delta i32   client   crc           (record_count - 1)
//! b+27    8     base_timestamp i64      client   crc           (first record's timestamp)
//! b+35    8     max_timestamp i64       client   crc
//! b+43    8     producer_id i64         client   crc           (-1: not idempotent)
//! b+51    2     producer_epoch i16      client   crc
//! b+53    4     base_sequence i32       client   crc           (-1: not idempotent)
//! b+57    4     record_count i32        client   crc
//! b+61          records, compressed as one stream when attributes say so
//!
//! record (Kafka varints, zigzag)
//!   length varint                 bytes after this field
//!   attributes i8 = 0
//!   timestamp_delta varlong       from base_timestamp
//!   offset_delta varint           index in the batch, 0, 1, 2, ...
//!   key_length varint (-1: null), key
//!   value_length varint (-1: null), value
//!   header_count varint
//!     header_key_length varint, header_key (UTF-8), header_value_length varint (-1: null), value
//! ```
//!
//! Weir's message fields are Kafka's: key = record key, body = value, born timestamp = record
//! timestamp, properties = headers (in order, keys may repeat, values binary or null), tag =
//! header [`HEADER_TAGS`], deliver-at = header [`HEADER_DELIVER_MS`] (decimal milliseconds).
//! A message's queue offset is `base_offset + offset_delta`; its idempotent sequence is
//! `base_sequence + offset_delta`.

mod builder;
pub mod compression;
mod message;
mod records;
pub mod varint;

use thiserror::Error;

pub use builder::{BatchBuilder, BatchOptions, RecordFields};
pub use compression::Compression;
pub use message::{MAX_UNCOMPRESSED_LEN, Message};
pub use records::{Decoded, Headers, RecordIter, RecordView};

/// Magic byte of the envelope (Weir log format 2).
pub const MAGIC: u8 = 0xB2;
/// Magic byte of the record format the first versions of Weir wrote (one record per message);
/// recognised only to refuse old data with a clear message.
pub const LEGACY_MAGIC: u8 = 0xA1;
/// Kafka's magic for RecordBatch v2.
pub const BATCH_MAGIC: u8 = 2;
/// Bytes of the envelope before the topic.
pub const ENVELOPE_LEN: usize = 32;
/// Bytes of Kafka's batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// The smallest entry: empty topic, a batch with no records.
pub const MIN_ENTRY_LEN: usize = ENVELOPE_LEN + BATCH_HEADER_LEN;
/// Header carrying a message's tag (RocketMQ's name).
pub const HEADER_TAGS: &str = "TAGS";
/// Header carrying a message's deliver-at time, decimal ms since the Unix epoch (RocketMQ's).
pub const HEADER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
/// Header asking for delivery this many seconds after the broker stores it (RocketMQ's).
pub const HEADER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
/// Kafka's "no producer id".
pub const NO_PRODUCER_ID: i64 = -1;
/// Kafka's "no sequence".
pub const NO_SEQUENCE: i32 = -1;

const OFF_ENTRY_LEN: usize = 0;
const OFF_MAGIC: usize = 4;
const OFF_FLAGS: usize = 5;
const OFF_TOPIC_LEN: usize = 6;
const OFF_COMMIT_LOG_OFFSET: usize = 8;
const OFF_STORE_TIMESTAMP: usize = 16;
const OFF_QUEUE_ID: usize = 24;
const OFF_ENVELOPE_CRC: usize = 28;

// Offsets inside the Kafka batch.
const B_BASE_OFFSET: usize = 0;
const B_LENGTH: usize = 8;
const B_LEADER_EPOCH: usize = 12;
const B_MAGIC: usize = 16;
const B_CRC: usize = 17;
const B_ATTRIBUTES: usize = 21;
const B_LAST_OFFSET_DELTA: usize = 23;
const B_BASE_TIMESTAMP: usize = 27;
const B_MAX_TIMESTAMP: usize = 35;
const B_PRODUCER_ID: usize = 43;
const B_PRODUCER_EPOCH: usize = 51;
const B_BASE_SEQUENCE: usize = 53;
const B_RECORD_COUNT: usize = 57;

/// Bits of the envelope's `flags` byte.
pub mod envelope_flags {
    /// Some message of the batch carries a deliver-at header ([`super::HEADER_DELIVER_MS`] or
    /// [`super::HEADER_DELAY_SEC`]): the broker looks at each message's headers only then.
    pub const DELAYED: u8 = 1 << 0;
}

/// Bits of a batch's `attributes` (Kafka's).
pub mod attributes {
    /// Bits 0–2: the compression codec.
    pub const COMPRESSION_MASK: u16 = 0x07;
    /// Bit 3: timestamps are the broker's append time, not the producer's.
    pub const LOG_APPEND_TIME: u16 = 1 << 3;
    /// Bit 4: the batch belongs to a transaction (Weir: a transaction's half message).
    pub const TRANSACTIONAL: u16 = 1 << 4;
    /// Bit 5: a control batch (Weir: a transaction's op record in `%HALF_OP%`).
    pub const CONTROL: u16 = 1 << 5;
}

/// What is wrong with bytes that should hold an entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// Fewer bytes are there than the entry needs (a torn tail, or a short buffer).
    #[error("entry truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the entry says it needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The data was written by the first, one-record-per-message format.
    #[error(
        "data in the old record format (magic 0xA1): this version reads only format 2; \
         move the data directory aside and start with an empty one"
    )]
    LegacyFormat,
    /// The envelope's magic byte is not a known format.
    #[error("unknown entry magic {0:#04x}")]
    BadMagic(u8),
    /// The batch is not a Kafka RecordBatch v2.
    #[error("unsupported batch magic {0} (only RecordBatch v2 is accepted)")]
    BadBatchMagic(u8),
    /// The lengths inside do not add up.
    #[error("entry lengths are inconsistent: {0}")]
    Malformed(&'static str),
    /// The producer's batch CRC does not match.
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BatchCrc {
        /// Checksum stored in the batch.
        stored: u32,
        /// Checksum computed over the bytes.
        computed: u32,
    },
    /// The broker's envelope CRC does not match.
    #[error("envelope checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    EnvelopeCrc {
        /// Checksum stored in the envelope.
        stored: u32,
        /// Checksum computed over the bytes.
        computed: u32,
    },
    /// A field is longer than the format allows.
    #[error("field {field} is too long: {len} bytes, at most {max}")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The most the format allows.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("field {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// The attributes name a codec that does not exist.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// Compressing or decompressing failed.
    #[error("compression: {0}")]
    Compression(String),
    /// The batch has no message at that index.
    #[error("the batch has no message {0}")]
    NoSuchRecord(u32),
    /// A compressed batch expands past the allowed size.
    #[error("batch expands past {limit} bytes when decompressed")]
    TooLargeUncompressed {
        /// The most it may expand to.
        limit: usize,
    },
}

/// The broker-assigned fields of an entry, written by [`stamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Byte position of the entry in the commit log.
    pub commit_log_offset: u64,
    /// Queue offset of the batch's first message (Kafka's base offset).
    pub base_offset: u64,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// The queue it was stored in.
    pub queue_id: u32,
    /// The broker group's leader epoch (Raft term) when it was stored; 0 standalone.
    pub leader_epoch: i32,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// The envelope CRC of `entry` (laid out as parsed, `batch_at` = where the batch starts).
fn envelope_crc(entry: &[u8], batch_at: usize) -> u32 {
    let crc = crc32c::crc32c(&entry[..OFF_ENVELOPE_CRC]);
    crc32c::crc32c_append(crc, &entry[ENVELOPE_LEN..batch_at + B_ATTRIBUTES])
}

/// Writes the broker fields into the entry at the start of `entry` and seals them with the
/// envelope CRC. `entry` must be a parsed entry (see [`Entry::parse`]).
pub fn stamp(entry: &mut [u8], stamp: Stamp) {
    let batch_at = ENVELOPE_LEN + entry[OFF_TOPIC_LEN] as usize;
    entry[OFF_COMMIT_LOG_OFFSET..OFF_COMMIT_LOG_OFFSET + 8]
        .copy_from_slice(&stamp.commit_log_offset.to_be_bytes());
    entry[OFF_STORE_TIMESTAMP..OFF_STORE_TIMESTAMP + 8]
        .copy_from_slice(&stamp.store_timestamp.to_be_bytes());
    entry[OFF_QUEUE_ID..OFF_QUEUE_ID + 4].copy_from_slice(&stamp.queue_id.to_be_bytes());
    let b = batch_at;
    entry[b + B_BASE_OFFSET..b + B_BASE_OFFSET + 8]
        .copy_from_slice(&stamp.base_offset.to_be_bytes());
    entry[b + B_LEADER_EPOCH..b + B_LEADER_EPOCH + 4]
        .copy_from_slice(&stamp.leader_epoch.to_be_bytes());
    let crc = envelope_crc(entry, batch_at);
    entry[OFF_ENVELOPE_CRC..OFF_ENVELOPE_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Appends to `dst` the envelope of an entry of `entry_len` bytes for `topic` (broker fields
/// zero, flags none), the topic included; the batch follows.
pub(crate) fn put_envelope(
    dst: &mut bytes::BytesMut,
    topic: &str,
    entry_len: u32,
) -> Result<(), BatchError> {
    use bytes::BufMut;
    let topic_len = u8::try_from(topic.len()).map_err(|_| BatchError::FieldTooLong {
        field: "topic",
        len: topic.len(),
        max: u8::MAX as usize,
    })?;
    dst.put_u32(entry_len);
    dst.put_u8(MAGIC);
    dst.put_u8(0);
    dst.put_u8(topic_len);
    dst.put_u8(0);
    dst.put_bytes(0, ENVELOPE_LEN - 8);
    dst.put_slice(topic.as_bytes());
    Ok(())
}

/// Appends to `dst` an entry for `topic` around `batch`, a Kafka RecordBatch v2 as a Kafka
/// producer sends it (one batch, checked by [`Entry::parse`] afterwards); broker fields zero.
pub fn wrap_batch(topic: &str, batch: &[u8], dst: &mut bytes::BytesMut) -> Result<(), BatchError> {
    let total = ENVELOPE_LEN + topic.len() + batch.len();
    let total = u32::try_from(total).map_err(|_| BatchError::FieldTooLong {
        field: "entry",
        len: total,
        max: u32::MAX as usize,
    })?;
    dst.reserve(total as usize);
    put_envelope(dst, topic, total)?;
    dst.extend_from_slice(batch);
    Ok(())
}

/// Sets the envelope's [`envelope_flags::DELAYED`] bit of the entry at the start of `entry`
/// when one of its records has a `TIMER_DELIVER_MS` or `TIMER_DELAY_SEC` header (a batch a
/// Kafka producer made, whose envelope the broker wrote: Weir's own builder sets the bit as
/// it adds the header). Walks the records once, decompressing a compressed batch (bounded by
/// [`MAX_UNCOMPRESSED_LEN`]); answers whether the bit is set.
pub fn mark_delayed(entry: &mut [u8]) -> Result<bool, BatchError> {
    let parsed = Entry::parse(entry)?;
    let records = parsed.records(MAX_UNCOMPRESSED_LEN)?;
    let mut timed = false;
    for record in records.iter() {
        let record = record?;
        if record.header(HEADER_DELIVER_MS).is_some() || record.header(HEADER_DELAY_SEC).is_some() {
            timed = true;
            break;
        }
    }
    if timed {
        entry[OFF_FLAGS] |= envelope_flags::DELAYED;
    }
    Ok(timed)
}

/// Reads the `entry_len` field at the start of `buf`, if four bytes are there.
pub fn peek_entry_len(buf: &[u8]) -> Option<u32> {
    (buf.len() >= 4).then(|| be_u32(buf, OFF_ENTRY_LEN))
}

/// An entry inside a byte slice: the envelope and the batch header located, nothing copied.
///
/// [`Entry::parse`] checks the layout (magics, lengths, the topic's UTF-8) but not the
/// checksums: call [`Entry::verify_batch`] and [`Entry::verify_envelope`] for those, and
/// [`Entry::records`] to walk (and so check) the records.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    bytes: &'a [u8],
    batch_at: usize,
}

impl<'a> Entry<'a> {
    /// Parses the entry at the start of `buf`; it may be followed by more bytes.
    pub fn parse(buf: &'a [u8]) -> Result<Self, BatchError> {
        if buf.len() > OFF_MAGIC && buf[OFF_MAGIC] == LEGACY_MAGIC {
            return Err(BatchError::LegacyFormat);
        }
        if buf.len() < ENVELOPE_LEN {
            return Err(BatchError::Truncated {
                needed: ENVELOPE_LEN,
                available: buf.len(),
            });
        }
        if buf[OFF_MAGIC] != MAGIC {
            return Err(BatchError::BadMagic(buf[OFF_MAGIC]));
        }
        let total = be_u32(buf, OFF_ENTRY_LEN) as usize;
        let batch_at = ENVELOPE_LEN + buf[OFF_TOPIC_LEN] as usize;
        if total < batch_at + BATCH_HEADER_LEN {
            return Err(BatchError::Malformed(
                "entry shorter than its envelope and batch header",
            ));
        }
        if buf.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        let bytes = &buf[..total];
        let batch = &bytes[batch_at..];
        if batch[B_MAGIC] != BATCH_MAGIC {
            return Err(BatchError::BadBatchMagic(batch[B_MAGIC]));
        }
        if be_u32(batch, B_LENGTH) as usize != batch.len() - 12 {
            return Err(BatchError::Malformed(
                "batch length does not match the entry length",
            ));
        }
        std::str::from_utf8(&bytes[ENVELOPE_LEN..batch_at])
            .map_err(|_| BatchError::NotUtf8("topic"))?;
        let entry = Entry { bytes, batch_at };
        let count = be_u32(batch, B_RECORD_COUNT);
        if count == 0 || count > i32::MAX as u32 {
            return Err(BatchError::Malformed("record count"));
        }
        if be_u32(batch, B_LAST_OFFSET_DELTA) != count - 1 {
            return Err(BatchError::Malformed(
                "last offset delta is not record count - 1",
            ));
        }
        Compression::from_code((entry.attributes() & attributes::COMPRESSION_MASK) as u8)?;
        Ok(entry)
    }

    /// Checks the producer's batch CRC (Kafka's).
    pub fn verify_batch(&self) -> Result<(), BatchError> {
        let batch = self.batch();
        let stored = be_u32(batch, B_CRC);
        let computed = crc32c::crc32c(&batch[B_ATTRIBUTES..]);
        if stored != computed {
            return Err(BatchError::BatchCrc { stored, computed });
        }
        Ok(())
    }

    /// Checks the broker's envelope CRC.
    pub fn verify_envelope(&self) -> Result<(), BatchError> {
        let stored = be_u32(self.bytes, OFF_ENVELOPE_CRC);
        let computed = envelope_crc(self.bytes, self.batch_at);
        if stored != computed {
            return Err(BatchError::EnvelopeCrc { stored, computed });
        }
        Ok(())
    }

    /// The whole entry.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Length of the whole entry in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Always false: a parsed entry holds at least its envelope and batch header.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The Kafka batch: what a Kafka fetch returns for this entry.
    pub fn batch(&self) -> &'a [u8] {
        &self.bytes[self.batch_at..]
    }
    /// Where the Kafka batch starts inside the entry.
    pub fn batch_start(&self) -> usize {
        self.batch_at
    }
    /// The broker-assigned fields.
    pub fn stamp(&self) -> Stamp {
        let b = self.batch();
        Stamp {
            commit_log_offset: be_u64(self.bytes, OFF_COMMIT_LOG_OFFSET),
            base_offset: be_u64(b, B_BASE_OFFSET),
            store_timestamp: be_u64(self.bytes, OFF_STORE_TIMESTAMP) as i64,
            queue_id: be_u32(self.bytes, OFF_QUEUE_ID),
            leader_epoch: be_u32(b, B_LEADER_EPOCH) as i32,
        }
    }
    /// The topic.
    pub fn topic(&self) -> &'a str {
        // Checked to be UTF-8 by `parse`.
        std::str::from_utf8(&self.bytes[ENVELOPE_LEN..self.batch_at]).unwrap_or_default()
    }
    /// The envelope's flags (see [`envelope_flags`]).
    pub fn envelope_flags(&self) -> u8 {
        self.bytes[OFF_FLAGS]
    }
    /// Kafka's batch attributes (see [`attributes`]).
    pub fn attributes(&self) -> u16 {
        be_u16(self.batch(), B_ATTRIBUTES)
    }
    /// How the records are compressed.
    pub fn compression(&self) -> Compression {
        Compression::from_code((self.attributes() & attributes::COMPRESSION_MASK) as u8)
            .unwrap_or_default()
    }
    /// Whether the batch is a transaction's (Weir: a half message).
    pub fn is_transactional(&self) -> bool {
        self.attributes() & attributes::TRANSACTIONAL != 0
    }
    /// Whether the batch is a control batch (Weir: a transaction's op record).
    pub fn is_control(&self) -> bool {
        self.attributes() & attributes::CONTROL != 0
    }
    /// How many messages the batch holds (at least one).
    pub fn record_count(&self) -> u32 {
        be_u32(self.batch(), B_RECORD_COUNT)
    }
    /// The first record's timestamp.
    pub fn base_timestamp(&self) -> i64 {
        be_u64(self.batch(), B_BASE_TIMESTAMP) as i64
    }
    /// The largest record timestamp.
    pub fn max_timestamp(&self) -> i64 {
        be_u64(self.batch(), B_MAX_TIMESTAMP) as i64
    }
    /// Idempotent producer id, [`NO_PRODUCER_ID`] for none.
    pub fn producer_id(&self) -> i64 {
        be_u64(self.batch(), B_PRODUCER_ID) as i64
    }
    /// Idempotent producer epoch.
    pub fn producer_epoch(&self) -> i16 {
        be_u16(self.batch(), B_PRODUCER_EPOCH) as i16
    }
    /// Sequence of the first record, [`NO_SEQUENCE`] for none.
    pub fn base_sequence(&self) -> i32 {
        be_u32(self.batch(), B_BASE_SEQUENCE) as i32
    }
    /// Whether the batch carries an idempotent producer's id.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id() >= 0
    }
    /// The records section as stored (compressed when the attributes say so).
    pub fn records_section(&self) -> &'a [u8] {
        &self.batch()[BATCH_HEADER_LEN..]
    }
    /// The records, decompressed (into a buffer of at most `limit` bytes) when compressed.
    pub fn records(&self, limit: usize) -> Result<Decoded<'a>, BatchError> {
        Decoded::new(self, limit)
    }
}

/// Calls `f` with the entry at the start of `bytes` and its message `index` (decompressing
/// the batch when it is compressed).
pub fn with_record<T>(
    bytes: &[u8],
    index: u32,
    f: impl FnOnce(&Entry<'_>, &RecordView<'_>) -> T,
) -> Result<T, BatchError> {
    let entry = Entry::parse(bytes)?;
    let records = entry.records(MAX_UNCOMPRESSED_LEN)?;
    let record = records
        .iter()
        .nth(index as usize)
        .transpose()?
        .filter(|r| r.offset_delta == index)
        .ok_or(BatchError::NoSuchRecord(index))?;
    Ok(f(&entry, &record))
}

/// Calls `f` with the entry among `entries` (laid end to end, as a read returns them) that
/// holds queue offset `queue_offset`, and that message; `Ok(None)` when none holds it.
pub fn with_queue_record<T>(
    entries: &[u8],
    queue_offset: u64,
    f: impl FnOnce(&Entry<'_>, &RecordView<'_>) -> T,
) -> Result<Option<T>, BatchError> {
    for entry in Entries::new(entries) {
        let entry = entry?;
        let base = entry.stamp().base_offset;
        if base <= queue_offset && queue_offset - base < u64::from(entry.record_count()) {
            let index = (queue_offset - base) as u32;
            return with_record(entry.as_bytes(), index, f).map(Some);
        }
    }
    Ok(None)
}

/// Iterator over entries laid end to end, as in a produce request or a pull response.
///
/// Yields `Err` once for the first malformed entry and stops.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    /// Iterates the entries in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Entries { rest: buf }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Entry::parse(self.rest) {
            Ok(entry) => {
                self.rest = &self.rest[entry.len()..];
                Some(Ok(entry))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// The hash of a tag stored in consume-queue entries; 0 means "no tag".
///
/// XXH3-64, so it is stable across versions and platforms. Hashes collide: a filter that
/// matches a hash must still compare the tag itself.
pub fn tag_hash(tag: &str) -> u64 {
    if tag.is_empty() {
        return 0;
    }
    match xxhash_rust::xxh3::xxh3_64(tag.as_bytes()) {
        0 => 1,
        h => h,
    }
}

#[cfg(test)]
mod tests;

//! The message record: one format from the producer, through the commit log, to the consumer.
//!
//! A producer encodes each message as one record and sends a batch as the records laid end to
//! end. The broker checks each record's body checksum, stamps the broker-assigned fields in
//! place, and appends the bytes as they came. Consumers receive the same bytes back.
//!
//! All integers are little-endian.
//!
//! ```text
//! offset  size  field               set by   covered by
//!  0      4     total_len u32       client   header_crc  (whole record, this field included)
//!  4      1     magic u8 = 0xA1     client   header_crc  (format version 1)
//!  5      3     reserved, zero      client   header_crc
//!  8      8     commit_log_offset   broker   header_crc  (byte position in the commit log)
//! 16      8     queue_offset        broker   header_crc  (index in the (topic, queue))
//! 24      8     store_timestamp     broker   header_crc  (ms since the Unix epoch)
//! 32      4     queue_id u32        broker   header_crc
//! 36      4     header_crc u32      broker   -           (CRC32C of bytes 0..36)
//! 40      4     body_crc u32        client   -           (CRC32C of bytes 44..total_len)
//! 44      8     born_timestamp i64  client   body_crc    (ms since the Unix epoch)
//! 52      8     deliver_at i64      client   body_crc    (ms; 0 = deliver at once)
//! 60      8     producer_id u64     client   body_crc    (0 = not idempotent)
//! 68      4     sequence u32        client   body_crc
//! 72      2     flags u16           client   body_crc    (see [`flags`])
//! 74      1     topic_len u8        client   body_crc
//! 75      n     topic (UTF-8)
//!         2     key_len u16, then the key (UTF-8, empty = none)
//!         1     tag_len u8, then the tag (UTF-8, empty = none)
//!         2     properties_len u16, then the properties:
//!                 repeated { key_len u16, key, value_len u16, value } (UTF-8)
//!         4     body_len u32, then the body (opaque bytes)
//! ```
//!
//! The client leaves the broker fields and `header_crc` zero; the broker's [`stamp`] fills them
//! and computes `header_crc`, so the client's `body_crc` is never recomputed on the hot path.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Magic byte of record format version 1.
pub const MAGIC_V1: u8 = 0xA1;
/// Offset of the `body_crc` field; the fixed header (everything before it) is this long.
pub const HEADER_LEN: usize = 40;
/// Offset where the bytes covered by `body_crc` start.
pub const BODY_CRC_START: usize = 44;
/// Length of a record with an empty topic, no key, no tag, no properties and an empty body.
pub const MIN_RECORD_LEN: usize = 75 + 2 + 1 + 2 + 4;

const OFF_TOTAL_LEN: usize = 0;
const OFF_MAGIC: usize = 4;
const OFF_COMMIT_LOG_OFFSET: usize = 8;
const OFF_QUEUE_OFFSET: usize = 16;
const OFF_STORE_TIMESTAMP: usize = 24;
const OFF_QUEUE_ID: usize = 32;
const OFF_HEADER_CRC: usize = 36;
const OFF_BODY_CRC: usize = 40;
const OFF_BORN_TIMESTAMP: usize = 44;
const OFF_DELIVER_AT: usize = 52;
const OFF_PRODUCER_ID: usize = 60;
const OFF_SEQUENCE: usize = 68;
const OFF_FLAGS: usize = 72;
const OFF_TOPIC_LEN: usize = 74;

/// Bits of the record's `flags` field.
pub mod flags {
    /// A transaction's half message: stored, but invisible until its transaction commits.
    pub const TRANSACTION_HALF: u16 = 1 << 0;
    /// A transaction's op record in `%HALF_OP%`: a decision (commit or rollback) or a
    /// check-back sent (see [`crate::transaction`]).
    pub const TRANSACTION_DECISION: u16 = 1 << 1;
}

/// What is wrong with bytes that should hold a record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Fewer bytes are there than the record needs (a torn tail, or a short buffer).
    #[error("record truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the record says it needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The magic byte is not a known record format.
    #[error("unknown record magic {0:#04x}")]
    BadMagic(u8),
    /// The record's inner lengths do not add up to its total length.
    #[error("record lengths are inconsistent: {0}")]
    Malformed(&'static str),
    /// The checksum over the client's fields does not match.
    #[error("record body checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BodyCrc {
        /// Checksum stored in the record.
        stored: u32,
        /// Checksum computed over the bytes.
        computed: u32,
    },
    /// The checksum over the header (the broker-assigned fields) does not match.
    #[error("record header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// Checksum stored in the record.
        stored: u32,
        /// Checksum computed over the bytes.
        computed: u32,
    },
    /// A field is longer than its length prefix can say.
    #[error("record field {field} is too long: {len} bytes, at most {max}")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The most its length prefix allows.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("record field {0} is not UTF-8")]
    NotUtf8(&'static str),
}

/// The fields a producer sets, borrowed, for [`encode`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordFields<'a> {
    /// Topic the message is sent to.
    pub topic: &'a str,
    /// Business key, indexed for lookup; empty for none.
    pub key: &'a str,
    /// One short tag used for broker-side filtering; empty for none.
    pub tag: &'a str,
    /// User properties.
    pub properties: &'a [(String, String)],
    /// The payload.
    pub body: &'a [u8],
    /// When the producer created the message, ms since the Unix epoch.
    pub born_timestamp: i64,
    /// When the message may be delivered, ms since the Unix epoch; 0 for at once.
    pub deliver_at: i64,
    /// Idempotent producer id; 0 for none.
    pub producer_id: u64,
    /// Idempotent sequence number of this message within (producer, queue).
    pub sequence: u32,
    /// See [`flags`].
    pub flags: u16,
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
    if len > max {
        return Err(RecordError::FieldTooLong { field, len, max });
    }
    Ok(())
}

/// Bytes the record for `fields` takes, or why it cannot be encoded.
pub fn encoded_len(fields: &RecordFields<'_>) -> Result<usize, RecordError> {
    Layout::new(fields, as_byte_pairs(fields.properties)).map(|l| l.total)
}

/// Appends the record for `fields` to `dst`, broker fields zero, `body_crc` computed.
pub fn encode(fields: &RecordFields<'_>, dst: &mut BytesMut) -> Result<(), RecordError> {
    let properties = as_byte_pairs(fields.properties);
    let layout = Layout::new(fields, properties.clone())?;
    layout.write(fields, properties, dst);
    Ok(())
}

/// What a copy of a record made by the broker changes (see [`rewrite`]).
#[derive(Debug, Clone, Copy)]
pub struct Rewrite<'a> {
    /// Topic of the copy.
    pub topic: &'a str,
    /// `deliver_at` of the copy.
    pub deliver_at: i64,
    /// Idempotent producer id of the copy (0 for a copy that is not the producer's own write).
    pub producer_id: u64,
    /// Idempotent sequence of the copy.
    pub sequence: u32,
    /// Properties of the original left out of the copy, by name.
    pub drop: &'a [&'a str],
    /// Properties added to the copy, after the kept ones.
    pub add: &'a [(&'a str, &'a str)],
}

/// Appends to `dst` a copy of `record` with the changes in `rewrite`; key, tag, body, born
/// timestamp and flags are kept, broker fields are zero and `body_crc` is computed. The
/// original's properties are copied as bytes (they were checked when it was parsed), so a
/// copy costs no allocation.
pub fn rewrite(
    record: &Record<'_>,
    rewrite: &Rewrite<'_>,
    dst: &mut BytesMut,
) -> Result<(), RecordError> {
    let properties = RawProperties {
        bytes: &record.bytes[record.properties.0..record.properties.1],
    }
    .filter(|(k, _)| !rewrite.drop.iter().any(|d| d.as_bytes() == *k))
    .chain(
        rewrite
            .add
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    let fields = RecordFields {
        topic: rewrite.topic,
        key: record.key(),
        tag: record.tag(),
        properties: &[],
        body: record.body(),
        born_timestamp: record.born_timestamp(),
        deliver_at: rewrite.deliver_at,
        producer_id: rewrite.producer_id,
        sequence: rewrite.sequence,
        flags: record.flags(),
    };
    let layout = Layout::new(&fields, properties.clone())?;
    layout.write(&fields, properties, dst);
    Ok(())
}

/// `(key, value)` properties as byte slices.
fn as_byte_pairs(properties: &[(String, String)]) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    properties.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
}

/// The checked sizes of a record to encode.
struct Layout {
    total: usize,
    properties: usize,
}

impl Layout {
    /// Checks every length of `fields` with `properties` in place of `fields.properties`.
    fn new<'p>(
        fields: &RecordFields<'_>,
        properties: impl Iterator<Item = (&'p [u8], &'p [u8])>,
    ) -> Result<Layout, RecordError> {
        check_len("topic", fields.topic.len(), u8::MAX as usize)?;
        check_len("key", fields.key.len(), u16::MAX as usize)?;
        check_len("tag", fields.tag.len(), u8::MAX as usize)?;
        let mut props = 0usize;
        for (k, v) in properties {
            check_len("property key", k.len(), u16::MAX as usize)?;
            check_len("property value", v.len(), u16::MAX as usize)?;
            props += 4 + k.len() + v.len();
        }
        check_len("properties", props, u16::MAX as usize)?;
        let total = MIN_RECORD_LEN
            + fields.topic.len()
            + fields.key.len()
            + fields.tag.len()
            + props
            + fields.body.len();
        check_len("record", total, u32::MAX as usize)?;
        Ok(Layout {
            total,
            properties: props,
        })
    }

    /// Appends the record: `fields` with `properties` (the ones this layout was checked with).
    fn write<'p>(
        &self,
        fields: &RecordFields<'_>,
        properties: impl Iterator<Item = (&'p [u8], &'p [u8])>,
        dst: &mut BytesMut,
    ) {
        dst.reserve(self.total);
        let start = dst.len();
        dst.put_u32_le(self.total as u32);
        dst.put_u8(MAGIC_V1);
        dst.put_bytes(0, 3 + 8 + 8 + 8 + 4 + 4 + 4);
        dst.put_i64_le(fields.born_timestamp);
        dst.put_i64_le(fields.deliver_at);
        dst.put_u64_le(fields.producer_id);
        dst.put_u32_le(fields.sequence);
        dst.put_u16_le(fields.flags);
        dst.put_u8(fields.topic.len() as u8);
        dst.put_slice(fields.topic.as_bytes());
        dst.put_u16_le(fields.key.len() as u16);
        dst.put_slice(fields.key.as_bytes());
        dst.put_u8(fields.tag.len() as u8);
        dst.put_slice(fields.tag.as_bytes());
        dst.put_u16_le(self.properties as u16);
        for (k, v) in properties {
            dst.put_u16_le(k.len() as u16);
            dst.put_slice(k);
            dst.put_u16_le(v.len() as u16);
            dst.put_slice(v);
        }
        dst.put_u32_le(fields.body.len() as u32);
        dst.put_slice(fields.body);
        let record = &mut dst[start..];
        let crc = crc32c::crc32c(&record[BODY_CRC_START..]);
        record[OFF_BODY_CRC..OFF_BODY_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The broker-assigned position of a record, written by [`stamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Byte position of the record in the commit log.
    pub commit_log_offset: u64,
    /// Index of the record in its (topic, queue).
    pub queue_offset: u64,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// The queue it was stored in.
    pub queue_id: u32,
}

/// Writes the broker-assigned fields into the record at the start of `record` and seals them
/// with `header_crc`. `record` must hold at least [`HEADER_LEN`] bytes (a parsed record does).
pub fn stamp(record: &mut [u8], stamp: Stamp) {
    record[OFF_COMMIT_LOG_OFFSET..OFF_COMMIT_LOG_OFFSET + 8]
        .copy_from_slice(&stamp.commit_log_offset.to_le_bytes());
    record[OFF_QUEUE_OFFSET..OFF_QUEUE_OFFSET + 8]
        .copy_from_slice(&stamp.queue_offset.to_le_bytes());
    record[OFF_STORE_TIMESTAMP..OFF_STORE_TIMESTAMP + 8]
        .copy_from_slice(&stamp.store_timestamp.to_le_bytes());
    record[OFF_QUEUE_ID..OFF_QUEUE_ID + 4].copy_from_slice(&stamp.queue_id.to_le_bytes());
    let crc = crc32c::crc32c(&record[..OFF_HEADER_CRC]);
    record[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads the `total_len` field at the start of `buf`, if four bytes are there.
pub fn peek_total_len(buf: &[u8]) -> Option<u32> {
    (buf.len() >= 4).then(|| u32_at(buf, OFF_TOTAL_LEN))
}

/// The `deliver_at` field of the record at the start of `buf`, read from its fixed header
/// without parsing the rest (not checked: parse the record to trust it); `None` when `buf` is
/// shorter than the field's end.
pub fn peek_deliver_at(buf: &[u8]) -> Option<i64> {
    let bytes = buf.get(OFF_DELIVER_AT..OFF_DELIVER_AT + 8)?;
    let mut x = [0u8; 8];
    x.copy_from_slice(bytes);
    Some(i64::from_le_bytes(x))
}

/// A record inside a byte slice, its variable fields located but not copied.
///
/// [`Record::parse`] checks the layout (magic, lengths, UTF-8 of the text fields) but not the
/// checksums: call [`Record::verify_body`] and [`Record::verify_header`] for those.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    bytes: &'a [u8],
    topic: (usize, usize),
    key: (usize, usize),
    tag: (usize, usize),
    properties: (usize, usize),
    body: (usize, usize),
}

impl<'a> Record<'a> {
    /// Parses the record at the start of `buf`; the record may be followed by more bytes.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RecordError> {
        let total = peek_total_len(buf).ok_or(RecordError::Truncated {
            needed: 4,
            available: buf.len(),
        })? as usize;
        if buf.len() < OFF_MAGIC + 1 {
            return Err(RecordError::Truncated {
                needed: OFF_MAGIC + 1,
                available: buf.len(),
            });
        }
        if buf[OFF_MAGIC] != MAGIC_V1 {
            return Err(RecordError::BadMagic(buf[OFF_MAGIC]));
        }
        if total < MIN_RECORD_LEN {
            return Err(RecordError::Malformed("total length below the minimum"));
        }
        if buf.len() < total {
            return Err(RecordError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        let bytes = &buf[..total];
        let mut at = OFF_TOPIC_LEN;
        let mut field = |len_size: usize| -> Result<(usize, usize), RecordError> {
            if at + len_size > total {
                return Err(RecordError::Malformed("length prefix past the end"));
            }
            let len = match len_size {
                1 => bytes[at] as usize,
                2 => u16_at(bytes, at) as usize,
                _ => u32_at(bytes, at) as usize,
            };
            let start = at + len_size;
            let end = start
                .checked_add(len)
                .filter(|end| *end <= total)
                .ok_or(RecordError::Malformed("field past the end"))?;
            at = end;
            Ok((start, end))
        };
        let topic = field(1)?;
        let key = field(2)?;
        let tag = field(1)?;
        let properties = field(2)?;
        let body = field(4)?;
        if at != total {
            return Err(RecordError::Malformed("trailing bytes after the body"));
        }
        let record = Record {
            bytes,
            topic,
            key,
            tag,
            properties,
            body,
        };
        for (name, range) in [("topic", topic), ("key", key), ("tag", tag)] {
            std::str::from_utf8(&bytes[range.0..range.1])
                .map_err(|_| RecordError::NotUtf8(name))?;
        }
        for item in record.properties() {
            item?;
        }
        Ok(record)
    }

    /// Checks `body_crc`, the producer's checksum.
    pub fn verify_body(&self) -> Result<(), RecordError> {
        let stored = u32_at(self.bytes, OFF_BODY_CRC);
        let computed = crc32c::crc32c(&self.bytes[BODY_CRC_START..]);
        if stored != computed {
            return Err(RecordError::BodyCrc { stored, computed });
        }
        Ok(())
    }

    /// Checks `header_crc`, the broker's checksum over its stamped fields.
    pub fn verify_header(&self) -> Result<(), RecordError> {
        let stored = u32_at(self.bytes, OFF_HEADER_CRC);
        let computed = crc32c::crc32c(&self.bytes[..OFF_HEADER_CRC]);
        if stored != computed {
            return Err(RecordError::HeaderCrc { stored, computed });
        }
        Ok(())
    }

    /// The whole record.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Length of the whole record in bytes.
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }
    /// The broker-assigned fields.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            commit_log_offset: u64_at(self.bytes, OFF_COMMIT_LOG_OFFSET),
            queue_offset: u64_at(self.bytes, OFF_QUEUE_OFFSET),
            store_timestamp: u64_at(self.bytes, OFF_STORE_TIMESTAMP) as i64,
            queue_id: u32_at(self.bytes, OFF_QUEUE_ID),
        }
    }
    /// When the producer created the message, ms since the Unix epoch.
    pub fn born_timestamp(&self) -> i64 {
        u64_at(self.bytes, OFF_BORN_TIMESTAMP) as i64
    }
    /// When the message may be delivered (ms since the Unix epoch), 0 for at once.
    pub fn deliver_at(&self) -> i64 {
        u64_at(self.bytes, OFF_DELIVER_AT) as i64
    }
    /// Idempotent producer id, 0 for none.
    pub fn producer_id(&self) -> u64 {
        u64_at(self.bytes, OFF_PRODUCER_ID)
    }
    /// Idempotent sequence number.
    pub fn sequence(&self) -> u32 {
        u32_at(self.bytes, OFF_SEQUENCE)
    }
    /// See [`flags`].
    pub fn flags(&self) -> u16 {
        u16_at(self.bytes, OFF_FLAGS)
    }
    fn text(&self, range: (usize, usize)) -> &'a str {
        // Checked to be UTF-8 by `parse`.
        std::str::from_utf8(&self.bytes[range.0..range.1]).unwrap_or_default()
    }
    /// The topic.
    pub fn topic(&self) -> &'a str {
        self.text(self.topic)
    }
    /// The key, empty for none.
    pub fn key(&self) -> &'a str {
        self.text(self.key)
    }
    /// The tag, empty for none.
    pub fn tag(&self) -> &'a str {
        self.text(self.tag)
    }
    /// The body.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[self.body.0..self.body.1]
    }
    /// Byte range of the body inside the record.
    pub fn body_range(&self) -> std::ops::Range<usize> {
        self.body.0..self.body.1
    }
    /// The properties, in the order they were written.
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            bytes: &self.bytes[self.properties.0..self.properties.1],
        }
    }
    /// The value of property `name`, if present.
    pub fn property(&self, name: &str) -> Option<&'a str> {
        self.properties()
            .filter_map(Result::ok)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// Iterator over a record's properties as `(key, value)`.
#[derive(Debug, Clone)]
pub struct Properties<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<(&'a str, &'a str), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let mut take = || -> Result<&'a str, RecordError> {
            let (text, rest) = split_field(self.bytes)?;
            let text = std::str::from_utf8(text).map_err(|_| RecordError::NotUtf8("property"))?;
            self.bytes = rest;
            Ok(text)
        };
        let item = take().and_then(|k| Ok((k, take()?)));
        if item.is_err() {
            self.bytes = &[];
        }
        Some(item)
    }
}

/// One length-prefixed (u16) property field at the start of `bytes`, and the rest.
fn split_field(bytes: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    if bytes.len() < 2 {
        return Err(RecordError::Malformed("property length past the end"));
    }
    let len = u16_at(bytes, 0) as usize;
    let rest = &bytes[2..];
    if rest.len() < len {
        return Err(RecordError::Malformed("property past the end"));
    }
    Ok(rest.split_at(len))
}

/// The properties of a parsed record (so known to be well formed) as raw byte pairs.
#[derive(Clone)]
struct RawProperties<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for RawProperties<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (k, rest) = split_field(self.bytes).ok()?;
        let (v, rest) = split_field(rest).ok()?;
        self.bytes = rest;
        Some((k, v))
    }
}

/// Iterator over records laid end to end, as in a produce batch or a pull response.
///
/// Yields `Err` once for the first malformed record and stops.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    /// Iterates the records in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Records { rest: buf }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Record::parse(self.rest) {
            Ok(record) => {
                self.rest = &self.rest[record.total_len()..];
                Some(Ok(record))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// A record decoded into owned fields, the body shared with the buffer it came in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Index within the queue.
    pub queue_offset: u64,
    /// Byte position in the commit log.
    pub commit_log_offset: u64,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// When the producer created it, ms since the Unix epoch.
    pub born_timestamp: i64,
    /// Deliver-at time, ms since the Unix epoch; 0 for at once.
    pub deliver_at: i64,
    /// Idempotent producer id, 0 for none.
    pub producer_id: u64,
    /// Idempotent sequence number.
    pub sequence: u32,
    /// See [`flags`].
    pub flags: u16,
    /// Key, empty for none.
    pub key: String,
    /// Tag, empty for none.
    pub tag: String,
    /// User properties, in order.
    pub properties: Vec<(String, String)>,
    /// Payload.
    pub body: Bytes,
}

impl Message {
    /// Decodes the record at the start of `buf` (checking its body checksum), sharing the body.
    pub fn decode(buf: &Bytes) -> Result<Message, RecordError> {
        let record = Record::parse(buf)?;
        record.verify_body()?;
        let stamp = record.stamp();
        let properties = record
            .properties()
            .map(|p| p.map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(Message {
            topic: record.topic().to_owned(),
            queue_id: stamp.queue_id,
            queue_offset: stamp.queue_offset,
            commit_log_offset: stamp.commit_log_offset,
            store_timestamp: stamp.store_timestamp,
            born_timestamp: record.born_timestamp(),
            deliver_at: record.deliver_at(),
            producer_id: record.producer_id(),
            sequence: record.sequence(),
            flags: record.flags(),
            key: record.key().to_owned(),
            tag: record.tag().to_owned(),
            properties,
            body: buf.slice(record.body_range()),
        })
    }

    /// Decodes every record in `buf`.
    pub fn decode_all(buf: &Bytes) -> Result<Vec<Message>, RecordError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let rest = buf.slice(at..);
            let message = Message::decode(&rest)?;
            at += peek_total_len(&rest).unwrap_or(0) as usize;
            out.push(message);
        }
        Ok(out)
    }

    /// The value of property `name`, if present.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Owned producer fields, for generating records.
    #[derive(Debug, Clone)]
    struct Owned {
        topic: String,
        key: String,
        tag: String,
        properties: Vec<(String, String)>,
        body: Vec<u8>,
        born: i64,
        deliver: i64,
        producer_id: u64,
        sequence: u32,
        flags: u16,
    }

    prop_compose! {
        fn owned_fields()(
            topic in "[a-zA-Z0-9_%-]{0,40}",
            key in "\\PC{0,30}",
            tag in "[a-zA-Z0-9]{0,20}",
            properties in proptest::collection::vec(("\\PC{0,10}", "\\PC{0,20}"), 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            born in any::<i64>(),
            deliver in any::<i64>(),
            producer_id in any::<u64>(),
            sequence in any::<u32>(),
            flags in any::<u16>(),
        ) -> Owned {
            Owned { topic, key, tag, properties, body, born, deliver, producer_id, sequence, flags }
        }
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(
            o in owned_fields(),
            st in (any::<u64>(), any::<u64>(), any::<i64>(), any::<u32>()),
        ) {
            let fields = RecordFields {
                topic: &o.topic, key: &o.key, tag: &o.tag, properties: &o.properties, body: &o.body,
                born_timestamp: o.born, deliver_at: o.deliver, producer_id: o.producer_id,
                sequence: o.sequence, flags: o.flags,
            };
            let mut buf = BytesMut::new();
            encode(&fields, &mut buf).unwrap();
            prop_assert_eq!(buf.len(), encoded_len(&fields).unwrap());
            let s = Stamp { commit_log_offset: st.0, queue_offset: st.1, store_timestamp: st.2, queue_id: st.3 };
            stamp(&mut buf, s);
            let bytes = buf.freeze();
            let record = Record::parse(&bytes).unwrap();
            record.verify_body().unwrap();
            record.verify_header().unwrap();
            prop_assert_eq!(record.stamp(), s);
            let m = Message::decode(&bytes).unwrap();
            prop_assert_eq!(&m.topic, &o.topic);
            prop_assert_eq!(&m.key, &o.key);
            prop_assert_eq!(&m.tag, &o.tag);
            prop_assert_eq!(&m.properties, &o.properties);
            prop_assert_eq!(&m.body[..], &o.body[..]);
            prop_assert_eq!((m.born_timestamp, m.deliver_at, m.producer_id, m.sequence, m.flags),
                (o.born, o.deliver, o.producer_id, o.sequence, o.flags));
        }

        #[test]
        fn rewrite_equals_encoding_the_changed_fields(
            o in owned_fields(),
            st in (any::<u64>(), any::<u64>(), any::<i64>(), any::<u32>()),
            topic in "[a-z%]{1,20}",
            deliver in any::<i64>(),
            drop_first in any::<bool>(),
            added in proptest::collection::vec(("[A-Z_]{1,10}", "\\PC{0,20}"), 0..3),
        ) {
            let fields = RecordFields {
                topic: &o.topic, key: &o.key, tag: &o.tag, properties: &o.properties, body: &o.body,
                born_timestamp: o.born, deliver_at: o.deliver, producer_id: o.producer_id,
                sequence: o.sequence, flags: o.flags,
            };
            let mut original = BytesMut::new();
            encode(&fields, &mut original).unwrap();
            stamp(&mut original, Stamp { commit_log_offset: st.0, queue_offset: st.1, store_timestamp: st.2, queue_id: st.3 });
            let dropped: Vec<&str> = o.properties.first().filter(|_| drop_first).map(|(k, _)| k.as_str()).into_iter().collect();
            let add: Vec<(&str, &str)> = added.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut copy = BytesMut::new();
            let record = Record::parse(&original).unwrap();
            rewrite(&record, &Rewrite { topic: &topic, deliver_at: deliver, producer_id: 0, sequence: 0, drop: &dropped, add: &add }, &mut copy).unwrap();
            let mut properties: Vec<(String, String)> = o.properties.iter().filter(|(k, _)| !dropped.contains(&k.as_str())).cloned().collect();
            properties.extend(added.iter().cloned());
            let mut expected = BytesMut::new();
            encode(&RecordFields { topic: &topic, deliver_at: deliver, producer_id: 0, sequence: 0, properties: &properties, ..fields }, &mut expected).unwrap();
            prop_assert_eq!(copy, expected);
        }

        #[test]
        fn any_corruption_is_detected(body in proptest::collection::vec(any::<u8>(), 1..500),
                                      flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let props = vec![("a".to_string(), "b".to_string())];
            let fields = RecordFields { topic: "t", key: "k", tag: "x", properties: &props, body: &body, ..Default::default() };
            let mut buf = BytesMut::new();
            encode(&fields, &mut buf).unwrap();
            stamp(&mut buf, Stamp { commit_log_offset: 7, queue_offset: 3, store_timestamp: 1, queue_id: 2 });
            let i = flip.index(buf.len());
            buf[i] ^= 1 << bit;
            let ok = Record::parse(&buf).and_then(|r| { r.verify_header()?; r.verify_body() });
            prop_assert!(ok.is_err());
        }

        #[test]
        fn parse_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Records::new(&bytes).count();
        }

        #[test]
        fn truncated_records_are_rejected(body in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<prop::sample::Index>()) {
            let fields = RecordFields { topic: "topic", body: &body, ..Default::default() };
            let mut buf = BytesMut::new();
            encode(&fields, &mut buf).unwrap();
            let cut = cut.index(buf.len());
            prop_assert!(Record::parse(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn records_iterates_a_batch() {
        let mut buf = BytesMut::new();
        for i in 0..10u32 {
            let body = i.to_le_bytes();
            encode(
                &RecordFields {
                    topic: "t",
                    body: &body,
                    ..Default::default()
                },
                &mut buf,
            )
            .unwrap();
        }
        let bodies: Vec<_> = Records::new(&buf)
            .map(|r| r.unwrap().body().to_vec())
            .collect();
        assert_eq!(bodies.len(), 10);
        assert_eq!(bodies[9], 9u32.to_le_bytes());
    }

    #[test]
    fn oversized_fields_are_refused() {
        let topic = "x".repeat(256);
        let err = encode(
            &RecordFields {
                topic: &topic,
                ..Default::default()
            },
            &mut BytesMut::new(),
        );
        assert!(matches!(
            err,
            Err(RecordError::FieldTooLong { field: "topic", .. })
        ));
    }

    #[test]
    fn tag_hash_is_stable_and_nonzero() {
        assert_eq!(tag_hash(""), 0);
        assert_ne!(tag_hash("TagA"), 0);
        assert_eq!(tag_hash("TagA"), tag_hash("TagA"));
        assert_ne!(tag_hash("TagA"), tag_hash("TagB"));
    }
}

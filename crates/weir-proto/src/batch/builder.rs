//! Encoding an entry: [`BatchBuilder`] writes records straight into one buffer as they come
//! and seals the batch (header, optional compression, CRC) once.

use bytes::{BufMut, BytesMut};

use super::records::RecordView;
use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use super::{
    B_ATTRIBUTES, B_CRC, BATCH_HEADER_LEN, BATCH_MAGIC, BatchError, Compression, ENVELOPE_LEN,
    HEADER_DELAY_SEC, HEADER_DELIVER_MS, NO_PRODUCER_ID, NO_SEQUENCE, OFF_FLAGS, attributes,
    envelope_flags,
};

/// The batch-level fields a producer sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Idempotent producer id, [`NO_PRODUCER_ID`] for none.
    pub producer_id: i64,
    /// Idempotent producer epoch (-1 for none).
    pub producer_epoch: i16,
    /// Sequence of the first record, [`NO_SEQUENCE`] for none.
    pub base_sequence: i32,
    /// [`attributes::TRANSACTIONAL`] and/or [`attributes::CONTROL`]; the codec is set by
    /// [`BatchBuilder::finish`].
    pub flags: u16,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: NO_SEQUENCE,
            flags: 0,
        }
    }
}

/// One record to encode, its fields borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordFields<'a> {
    /// Timestamp (Weir: born timestamp), ms since the Unix epoch.
    pub timestamp: i64,
    /// Key; `None` for null.
    pub key: Option<&'a [u8]>,
    /// Value (Weir: body); `None` for null.
    pub value: Option<&'a [u8]>,
}

fn nullable_len(field: Option<&[u8]>) -> usize {
    match field {
        None => 1,
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(dst: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        None => put_varint(dst, -1),
        Some(b) => {
            put_varint(dst, b.len() as i32);
            dst.put_slice(b);
        }
    }
}

fn check_len(field: &'static str, len: usize) -> Result<(), BatchError> {
    const MAX: usize = i32::MAX as usize;
    if len > MAX {
        return Err(BatchError::FieldTooLong {
            field,
            len,
            max: MAX,
        });
    }
    Ok(())
}

/// Builds one entry (envelope + batch) for a topic: records are appended as they come, the
/// batch is sealed by [`BatchBuilder::finish`]. Broker fields are left zero.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    batch_at: usize,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
    options: BatchOptions,
}

impl BatchBuilder {
    /// An empty batch for `topic` (at most 255 bytes).
    pub fn new(topic: &str, options: BatchOptions) -> Result<BatchBuilder, BatchError> {
        BatchBuilder::with_capacity(topic, options, 0)
    }

    /// [`BatchBuilder::new`] with room for `capacity` bytes of records.
    pub fn with_capacity(
        topic: &str,
        options: BatchOptions,
        capacity: usize,
    ) -> Result<BatchBuilder, BatchError> {
        let batch_at = ENVELOPE_LEN + topic.len();
        let mut buf = BytesMut::with_capacity(batch_at + BATCH_HEADER_LEN + capacity);
        // The entry length is written by `finish`.
        super::put_envelope(&mut buf, topic, 0)?;
        buf.put_bytes(0, BATCH_HEADER_LEN);
        Ok(BatchBuilder {
            buf,
            batch_at,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            options,
        })
    }

    /// One uncompressed entry for `topic` holding one message with `fields` and `headers`.
    pub fn single(
        topic: &str,
        fields: &RecordFields<'_>,
        headers: &[(&str, &[u8])],
    ) -> Result<BytesMut, BatchError> {
        let mut builder = BatchBuilder::new(topic, BatchOptions::default())?;
        builder.push(fields, headers.iter().map(|(k, v)| (*k, Some(*v))))?;
        builder.finish(Compression::None)
    }

    /// One uncompressed entry for `topic` made with `options`, holding a copy of `record`
    /// (see [`BatchBuilder::push_copy`] for `drop` and `add`): how the broker moves a message
    /// to another topic (delay, retry, dead letter, transaction).
    pub fn copy_of(
        topic: &str,
        options: BatchOptions,
        record: &RecordView<'_>,
        drop: &[&str],
        add: &[(&str, &[u8])],
    ) -> Result<BytesMut, BatchError> {
        let mut builder = BatchBuilder::new(topic, options)?;
        builder.push_copy(record, drop, add)?;
        builder.finish(Compression::None)
    }

    /// Records so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes so far (uncompressed), envelope and header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was added yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch-level fields, to set before [`BatchBuilder::finish`] (an idempotent producer
    /// sets the base sequence when the first record joins).
    pub fn options_mut(&mut self) -> &mut BatchOptions {
        &mut self.options
    }

    /// Bytes a record with these fields and headers adds to a batch whose base timestamp is
    /// `base_timestamp`, at index `offset_delta`.
    pub fn record_len<'h>(
        fields: &RecordFields<'_>,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
        base_timestamp: i64,
        offset_delta: u32,
    ) -> usize {
        let (count, headers_len) = headers.fold((0usize, 0usize), |(n, len), (k, v)| {
            (
                n + 1,
                len + nullable_len(Some(k.as_bytes())) + nullable_len(v),
            )
        });
        let body = 1
            + varlong_len(fields.timestamp.wrapping_sub(base_timestamp))
            + varint_len(offset_delta as i32)
            + nullable_len(fields.key)
            + nullable_len(fields.value)
            + varint_len(count as i32)
            + headers_len;
        varint_len(body as i32) + body
    }

    /// Appends a record with `headers` (in order; keys may repeat).
    pub fn push<'h>(
        &mut self,
        fields: &RecordFields<'_>,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)> + Clone,
    ) -> Result<(), BatchError> {
        check_len("key", fields.key.map_or(0, <[u8]>::len))?;
        check_len("value", fields.value.map_or(0, <[u8]>::len))?;
        if self.count == 0 {
            self.base_timestamp = fields.timestamp;
        }
        let mut count = 0usize;
        let mut headers_len = 0usize;
        for (k, v) in headers.clone() {
            if k == HEADER_DELIVER_MS || k == HEADER_DELAY_SEC {
                self.buf[OFF_FLAGS] |= envelope_flags::DELAYED;
            }
            check_len("header key", k.len())?;
            check_len("header value", v.map_or(0, <[u8]>::len))?;
            count += 1;
            headers_len += nullable_len(Some(k.as_bytes())) + nullable_len(v);
        }
        let delta = fields.timestamp.wrapping_sub(self.base_timestamp);
        let body = 1
            + varlong_len(delta)
            + varint_len(self.count as i32)
            + nullable_len(fields.key)
            + nullable_len(fields.value)
            + varint_len(count as i32)
            + headers_len;
        check_len("record", body)?;
        self.buf.reserve(varint_len(body as i32) + body);
        put_varint(&mut self.buf, body as i32);
        self.buf.put_u8(0);
        put_varlong(&mut self.buf, delta);
        put_varint(&mut self.buf, self.count as i32);
        put_nullable(&mut self.buf, fields.key);
        put_nullable(&mut self.buf, fields.value);
        put_varint(&mut self.buf, count as i32);
        for (k, v) in headers {
            put_nullable(&mut self.buf, Some(k.as_bytes()));
            put_nullable(&mut self.buf, v);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(fields.timestamp);
        Ok(())
    }

    /// Appends a copy of `record` (another batch's record): timestamp, key and value kept,
    /// its headers kept in order except those named in `drop`, then `add` appended.
    pub fn push_copy(
        &mut self,
        record: &RecordView<'_>,
        drop: &[&str],
        add: &[(&str, &[u8])],
    ) -> Result<(), BatchError> {
        let kept = record
            .headers()
            .filter_map(Result::ok)
            .filter(|(k, _)| !drop.contains(k));
        let added = add.iter().map(|(k, v)| (*k, Some(*v)));
        self.push(
            &RecordFields {
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
            },
            kept.chain(added),
        )
    }

    /// Seals the batch: compresses the records with `codec`, writes the lengths and the
    /// header, computes the batch CRC. Returns the entry, broker fields zero.
    pub fn finish(self, codec: Compression) -> Result<BytesMut, BatchError> {
        let BatchBuilder {
            mut buf,
            batch_at,
            count,
            base_timestamp,
            max_timestamp,
            options,
        } = self;
        if count == 0 {
            return Err(BatchError::Malformed("a batch needs at least one record"));
        }
        let records_at = batch_at + BATCH_HEADER_LEN;
        if codec != Compression::None {
            let mut packed = Vec::with_capacity((buf.len() - records_at) / 2);
            super::compression::compress(codec, &buf[records_at..], &mut packed)?;
            buf.truncate(records_at);
            buf.extend_from_slice(&packed);
        }
        let total = buf.len();
        check_len("entry", total)?;
        buf[0..4].copy_from_slice(&(total as u32).to_be_bytes());
        let flags = options.flags & (attributes::TRANSACTIONAL | attributes::CONTROL);
        let mut header = [0u8; BATCH_HEADER_LEN];
        let mut h = &mut header[..];
        h.put_i64(0);
        h.put_i32((total - batch_at - 12) as i32);
        h.put_i32(0);
        h.put_u8(BATCH_MAGIC);
        h.put_u32(0);
        h.put_u16(flags | u16::from(codec.code()));
        h.put_i32(count as i32 - 1);
        h.put_i64(base_timestamp);
        h.put_i64(max_timestamp);
        h.put_i64(options.producer_id);
        h.put_i16(options.producer_epoch);
        h.put_i32(options.base_sequence);
        h.put_i32(count as i32);
        buf[batch_at..records_at].copy_from_slice(&header);
        let crc = crc32c::crc32c(&buf[batch_at + B_ATTRIBUTES..]);
        buf[batch_at + B_CRC..batch_at + B_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(buf)
    }
}

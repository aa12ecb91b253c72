//! Walking a batch's records: [`Decoded`] holds the records section (decompressed when it
//! was compressed), [`RecordIter`] walks it, [`RecordView`] is one record, nothing copied.

use std::borrow::Cow;

use super::varint::{get_varint, get_varlong};
use super::{BatchError, Compression, Entry, HEADER_DELIVER_MS, HEADER_TAGS};

/// A batch's records section, ready to walk: borrowed from the entry when uncompressed,
/// decompressed into its own buffer otherwise.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    data: Cow<'a, [u8]>,
    count: u32,
    base_timestamp: i64,
}

impl<'a> Decoded<'a> {
    pub(super) fn new(entry: &Entry<'a>, limit: usize) -> Result<Decoded<'a>, BatchError> {
        let section = entry.records_section();
        let data = match entry.compression() {
            Compression::None => Cow::Borrowed(section),
            codec => Cow::Owned(super::compression::decompress(codec, section, limit)?),
        };
        Ok(Decoded {
            data,
            count: entry.record_count(),
            base_timestamp: entry.base_timestamp(),
        })
    }

    /// The records, in order.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            rest: &self.data,
            left: self.count,
            base_timestamp: self.base_timestamp,
        }
    }

    /// The records section and how to walk it, for a caller that keeps the bytes elsewhere
    /// (see [`RecordIter::over`]): `(bytes, record count, base timestamp)`.
    pub fn into_parts(self) -> (Cow<'a, [u8]>, u32, i64) {
        (self.data, self.count, self.base_timestamp)
    }

    /// The uncompressed records section.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Whether the records were decompressed into a buffer of their own.
    pub fn is_owned(&self) -> bool {
        matches!(self.data, Cow::Owned(_))
    }

    /// Walks every record and its headers, checking the layout: exactly the batch's record
    /// count, offset deltas 0, 1, 2, ..., nothing left over, header keys UTF-8.
    pub fn check(&self) -> Result<(), BatchError> {
        let mut iter = self.iter();
        let mut expected = 0u32;
        for record in iter.by_ref() {
            let record = record?;
            if record.offset_delta != expected {
                return Err(BatchError::Malformed("offset deltas are not 0, 1, 2, ..."));
            }
            let mut headers = record.headers();
            for header in headers.by_ref() {
                header?;
            }
            if !headers.rest.is_empty() {
                return Err(BatchError::Malformed("bytes left after a record's headers"));
            }
            expected += 1;
        }
        if expected != self.count || !iter.rest.is_empty() {
            return Err(BatchError::Malformed(
                "records do not fill the batch exactly",
            ));
        }
        Ok(())
    }
}

/// Iterator over a batch's records; yields `Err` once for the first malformed one and stops.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    left: u32,
    base_timestamp: i64,
}

impl<'a> RecordIter<'a> {
    /// Walks `count` records in `section` (an uncompressed records section).
    pub fn over(section: &'a [u8], count: u32, base_timestamp: i64) -> RecordIter<'a> {
        RecordIter {
            rest: section,
            left: count,
            base_timestamp,
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match RecordView::parse(&mut self.rest, self.base_timestamp) {
            Ok(view) => Some(Ok(view)),
            Err(e) => {
                self.left = 0;
                self.rest = &[];
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// One record of a batch, its fields borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Index in the batch: the message's queue offset minus the batch's base offset.
    pub offset_delta: u32,
    /// The record's timestamp (Weir: the born timestamp), ms since the Unix epoch.
    pub timestamp: i64,
    /// The key; `None` for null.
    pub key: Option<&'a [u8]>,
    /// The value (Weir: the body); `None` for null.
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
}

/// Reads a varint length (-1 = null) and that many bytes.
fn take_nullable<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    let len = get_varint(buf)?;
    if len < 0 {
        return if len == -1 {
            Ok(None)
        } else {
            Err(BatchError::Malformed("negative length"))
        };
    }
    let len = len as usize;
    if buf.len() < len {
        return Err(BatchError::Malformed("field past the end of its record"));
    }
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(Some(field))
}

impl<'a> RecordView<'a> {
    fn parse(buf: &mut &'a [u8], base_timestamp: i64) -> Result<RecordView<'a>, BatchError> {
        let len = get_varint(buf)?;
        let len = usize::try_from(len).map_err(|_| BatchError::Malformed("record length"))?;
        if buf.len() < len {
            return Err(BatchError::Malformed("record past the end of the batch"));
        }
        let (mut body, rest) = buf.split_at(len);
        *buf = rest;
        let (_attributes, tail) = body
            .split_first()
            .ok_or(BatchError::Malformed("empty record"))?;
        body = tail;
        let timestamp_delta = get_varlong(&mut body)?;
        let offset_delta = get_varint(&mut body)?;
        let offset_delta =
            u32::try_from(offset_delta).map_err(|_| BatchError::Malformed("offset delta"))?;
        let key = take_nullable(&mut body)?;
        let value = take_nullable(&mut body)?;
        let header_count = get_varint(&mut body)?;
        let header_count =
            u32::try_from(header_count).map_err(|_| BatchError::Malformed("header count"))?;
        Ok(RecordView {
            offset_delta,
            timestamp: base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers: body,
            header_count,
        })
    }

    /// The headers, in order: `(key, value)`, the value `None` for null.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            rest: self.headers,
            left: self.header_count,
        }
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    /// The headers' bytes as stored (a copy of a record can take them as they are).
    pub fn raw_headers(&self) -> &'a [u8] {
        self.headers
    }

    /// The value of the first header named `name`; `Some(None)` when it is null.
    pub fn header(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.headers()
            .filter_map(Result::ok)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The first header named `name` as text (`None` when absent, null or not UTF-8).
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name)
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The tag (header [`HEADER_TAGS`]), empty for none.
    pub fn tag(&self) -> &'a str {
        if self.header_count == 0 {
            return "";
        }
        self.header_str(HEADER_TAGS).unwrap_or("")
    }

    /// The requested delivery time (header [`HEADER_DELIVER_MS`]), 0 for at once.
    pub fn deliver_at(&self) -> i64 {
        if self.header_count == 0 {
            return 0;
        }
        self.header_str(HEADER_DELIVER_MS)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The key as text: empty when null or not UTF-8.
    pub fn key_str(&self) -> &'a str {
        self.key
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("")
    }

    /// The value, empty when null.
    pub fn body(&self) -> &'a [u8] {
        self.value.unwrap_or(&[])
    }
}

/// Iterator over a record's headers; yields `Err` once for the first malformed one and stops.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut take = || -> Result<(&'a str, Option<&'a [u8]>), BatchError> {
            let key =
                take_nullable(&mut self.rest)?.ok_or(BatchError::Malformed("null header key"))?;
            let key = std::str::from_utf8(key).map_err(|_| BatchError::NotUtf8("header key"))?;
            let value = take_nullable(&mut self.rest)?;
            Ok((key, value))
        };
        let item = take();
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }
}

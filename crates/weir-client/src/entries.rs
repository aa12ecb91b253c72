//! Response payloads: whole stored entries laid end to end (each a Weir envelope around a
//! Kafka RecordBatch v2, see `weir_proto::batch`), and picking the asked messages out of them.
//!
//! The broker serves entries as they are stored, so a payload may hold more than was asked
//! for: a pull's first entry may begin before the asked offset, a batch that mixes tags holds
//! messages the tag filter does not match, a lookup's entry holds the message's batch-mates.
//! Each reader keeps what it asked for:
//!
//! | request          | keeps                                                              |
//! |------------------|--------------------------------------------------------------------|
//! | Pull             | `offset <= queue offset < next_offset`, tag matching the filter    |
//! | Receive          | the listed (queue id, queue offset)s, in the listed order          |
//! | GetMessage       | the record at the id's index                                       |
//! | FindByKey        | records of the asked topic whose key is the asked key              |
//! | CheckTransaction | the one record of the half message's entry                         |
//!
//! An entry nothing is kept from is stepped over without checking its CRC or decompressing
//! it; a kept entry's batch CRC is checked once.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use weir_proto::batch::{Entries, Entry, MAX_UNCOMPRESSED_LEN, RecordIter, RecordView};

use crate::error::Result;
use crate::message::ReceivedMessage;

/// Decodes into `out` the records of `payload` that `keep` accepts, in payload order, from
/// the entries `want_entry` accepts; the messages' ids name `broker`.
pub(crate) fn decode(
    payload: &Bytes,
    broker: Option<&Arc<str>>,
    mut want_entry: impl FnMut(&Entry<'_>) -> bool,
    mut keep: impl FnMut(&Entry<'_>, &RecordView<'_>) -> bool,
    out: &mut Vec<ReceivedMessage>,
) -> Result<()> {
    for entry in Entries::new(payload) {
        let entry = entry?;
        if !want_entry(&entry) {
            continue;
        }
        entry.verify_batch()?;
        let (data, count, base_timestamp) = entry.records(MAX_UNCOMPRESSED_LEN)?.into_parts();
        // Uncompressed records stay in the response buffer; decompressed ones get one buffer
        // per batch. Either way keys, bodies and header values are slices of it.
        let section = match data {
            Cow::Borrowed(section) => payload.slice_ref(section),
            Cow::Owned(records) => Bytes::from(records),
        };
        for record in RecordIter::over(&section, count, base_timestamp) {
            let record = record?;
            if keep(&entry, &record) {
                out.push(ReceivedMessage::from_record(
                    &entry, &section, &record, broker,
                )?);
            }
        }
    }
    Ok(())
}

/// A pull's messages: those with `from <= queue offset < to` whose tag `filter` matches.
pub(crate) fn pulled(
    payload: &Bytes,
    broker: Option<&Arc<str>>,
    from: u64,
    to: u64,
    filter: &TagFilter,
) -> Result<Vec<ReceivedMessage>> {
    let mut out = Vec::new();
    decode(
        payload,
        broker,
        |entry| {
            let base = entry.stamp().base_offset;
            base < to && base + u64::from(entry.record_count()) > from
        },
        |entry, record| {
            let offset = entry.stamp().base_offset + u64::from(record.offset_delta);
            (from..to).contains(&offset) && filter.matches(record.tag())
        },
        &mut out,
    )?;
    Ok(out)
}

/// The messages at `wanted` (queue id, queue offset) positions, in that order; positions no
/// entry of `payload` holds are left out.
pub(crate) fn at_positions(
    payload: &Bytes,
    broker: Option<&Arc<str>>,
    wanted: &[(u32, u64)],
) -> Result<Vec<Option<ReceivedMessage>>> {
    let mut decoded = Vec::new();
    decode(
        payload,
        broker,
        |entry| {
            let stamp = entry.stamp();
            let end = stamp.base_offset + u64::from(entry.record_count());
            wanted
                .iter()
                .any(|&(q, o)| q == stamp.queue_id && (stamp.base_offset..end).contains(&o))
        },
        |entry, record| {
            let stamp = entry.stamp();
            let offset = stamp.base_offset + u64::from(record.offset_delta);
            wanted.contains(&(stamp.queue_id, offset))
        },
        &mut decoded,
    )?;
    // A message listed twice is delivered twice, as listed.
    Ok(wanted
        .iter()
        .map(|&(q, o)| {
            decoded
                .iter()
                .find(|m| m.queue_id == q && m.queue_offset == o)
                .cloned()
        })
        .collect())
}

/// The message at index `index` of the entry at `commit_log_offset`.
pub(crate) fn at_index(
    payload: &Bytes,
    broker: Option<&Arc<str>>,
    commit_log_offset: u64,
    index: u32,
) -> Result<Option<ReceivedMessage>> {
    let mut out = Vec::new();
    decode(
        payload,
        broker,
        |entry| entry.stamp().commit_log_offset == commit_log_offset,
        |_, record| record.offset_delta == index,
        &mut out,
    )?;
    Ok(out.into_iter().next())
}

/// The messages of `topic` whose key is `key`.
pub(crate) fn with_key(
    payload: &Bytes,
    broker: Option<&Arc<str>>,
    topic: &str,
    key: &[u8],
) -> Result<Vec<ReceivedMessage>> {
    let mut out = Vec::new();
    decode(
        payload,
        broker,
        |entry| entry.topic() == topic,
        |_, record| record.key == Some(key),
        &mut out,
    )?;
    Ok(out)
}

/// A consumer's tag filter, RocketMQ's expression: `"TagA || TagB"`; `"*"` or `""` for all.
/// The broker filters by tag hash, which may collide, and serves whole batches: the consumer
/// compares the tags themselves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum TagFilter {
    /// Every message.
    #[default]
    All,
    /// Messages whose tag is one of these.
    Tags(Vec<String>),
}

impl TagFilter {
    /// Parses an expression.
    pub(crate) fn parse(expression: &str) -> TagFilter {
        let tags: Vec<String> = expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if tags.is_empty() || tags.iter().any(|t| t == "*") {
            TagFilter::All
        } else {
            TagFilter::Tags(tags)
        }
    }

    /// Whether a message tagged `tag` (empty for none) matches.
    pub(crate) fn matches(&self, tag: &str) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(tags) => tags.iter().any(|t| t == tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use weir_proto::batch::{BatchOptions, Compression, Stamp, stamp};

    use super::*;
    use crate::message::Message;

    /// An entry of `messages` of topic `t`, stamped as stored at `commit_log_offset` with
    /// queue offsets from `base`, sealed with `codec`.
    fn stored(
        messages: &[Message],
        commit_log_offset: u64,
        base: u64,
        codec: Compression,
    ) -> BytesMut {
        let mut batch = weir_proto::batch::BatchBuilder::new("t", BatchOptions::default()).unwrap();
        for m in messages {
            m.push_to(&mut batch, 1_700_000_000_000).unwrap();
        }
        let mut entry = batch.finish(codec).unwrap();
        stamp(
            &mut entry,
            Stamp {
                commit_log_offset,
                base_offset: base,
                store_timestamp: 1_700_000_000_001,
                queue_id: 2,
                leader_epoch: 0,
            },
        );
        entry
    }

    fn numbered(n: usize, tag: impl Fn(usize) -> &'static str) -> Vec<Message> {
        (0..n)
            .map(|i| Message::new("t", format!("m{i}")).with_tag(tag(i)))
            .collect()
    }

    fn bodies(messages: &[ReceivedMessage]) -> Vec<String> {
        messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }

    #[test]
    fn a_pull_from_the_middle_of_a_batch_keeps_that_offset_on() {
        for codec in Compression::ALL {
            let mut payload = stored(&numbered(5, |_| ""), 0, 10, codec);
            payload.extend_from_slice(&stored(&numbered(3, |_| ""), 500, 15, codec));
            let payload = payload.freeze();
            let broker: Arc<str> = Arc::from("b");
            let got = pulled(&payload, Some(&broker), 12, 17, &TagFilter::All).unwrap();
            assert_eq!(bodies(&got), ["m2", "m3", "m4", "m0", "m1"], "{codec}");
            let offsets: Vec<u64> = got.iter().map(|m| m.queue_offset).collect();
            assert_eq!(offsets, [12, 13, 14, 15, 16]);
            let id = got[3].id.as_ref().unwrap();
            assert_eq!((id.commit_log_offset, id.index), (500, 0));
            assert_eq!(got[1].id.as_ref().unwrap().index, 3);
        }
    }

    #[test]
    fn a_pull_drops_tags_the_filter_does_not_match() {
        let tags = |i: usize| ["A", "B", ""][i % 3];
        let payload = stored(&numbered(6, tags), 0, 0, Compression::None).freeze();
        let got = pulled(&payload, None, 0, 6, &TagFilter::parse("A || B")).unwrap();
        assert_eq!(bodies(&got), ["m0", "m1", "m3", "m4"]);
        let got = pulled(&payload, None, 0, 6, &TagFilter::parse("*")).unwrap();
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn positions_pick_listed_messages_in_the_listed_order() {
        let mut payload = stored(&numbered(4, |_| ""), 0, 0, Compression::Lz4);
        payload.extend_from_slice(&stored(&numbered(2, |_| ""), 900, 4, Compression::None));
        let payload = payload.freeze();
        let got = at_positions(&payload, None, &[(2, 5), (2, 1), (2, 9), (3, 0)]).unwrap();
        let got: Vec<Option<String>> = got
            .iter()
            .map(|m| {
                m.as_ref()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            })
            .collect();
        assert_eq!(
            got,
            [Some("m1".to_owned()), Some("m1".to_owned()), None, None]
        );
    }

    #[test]
    fn lookups_pick_by_index_and_by_key() {
        let messages: Vec<Message> = (0..4)
            .map(|i| Message::new("t", format!("m{i}")).with_key(["k", "other"][i % 2]))
            .collect();
        let payload = stored(&messages, 4096, 0, Compression::Zstd).freeze();
        let broker: Arc<str> = Arc::from("b");
        let m = at_index(&payload, Some(&broker), 4096, 2).unwrap().unwrap();
        assert_eq!(&m.body[..], b"m2");
        assert_eq!(
            m.id,
            Some(weir_proto::MessageId::new(broker.clone(), 4096, 2))
        );
        assert!(at_index(&payload, None, 4095, 2).unwrap().is_none());
        let found = with_key(&payload, None, "t", b"k").unwrap();
        assert_eq!(bodies(&found), ["m0", "m2"]);
        assert!(with_key(&payload, None, "u", b"k").unwrap().is_empty());
    }

    #[test]
    fn headers_round_trip_repeated_binary_and_null() {
        let message = Message::new("t", "body")
            .with_key_bytes(vec![0xFF, 0x00])
            .with_tag("T")
            .with_property("p", "1")
            .with_header("p", Some(Bytes::from_static(&[0, 159, 146, 150])))
            .with_header("n", None)
            .with_property("p", "3");
        let payload = stored(&[message], 0, 0, Compression::Snappy).freeze();
        let got = ReceivedMessage::decode_all(&payload, "").unwrap();
        let m = &got[0];
        assert_eq!(m.tag, "T");
        assert_eq!(m.key_bytes.as_deref(), Some(&[0xFF, 0x00][..]));
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            headers,
            [
                ("TAGS", Some(&b"T"[..])),
                ("p", Some(&b"1"[..])),
                ("p", Some(&[0, 159, 146, 150][..])),
                ("n", None),
                ("p", Some(&b"3"[..])),
            ]
        );
        assert_eq!(m.property("p"), Some("1"));
        let props: Vec<_> = m.properties().collect();
        assert_eq!(
            props,
            [("p", Some("1")), ("p", None), ("n", None), ("p", Some("3"))]
        );
    }

    #[test]
    fn a_corrupt_kept_entry_is_an_error() {
        let mut entry = stored(&numbered(2, |_| ""), 0, 0, Compression::None);
        let last = entry.len() - 1;
        entry[last] ^= 1;
        let payload = entry.freeze();
        assert!(pulled(&payload, None, 0, 2, &TagFilter::All).is_err());
    }
}

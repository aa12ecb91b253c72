//! Property tests of the format: round trips, agreement with the `kafka-protocol` crate's
//! codec, and every flipped bit caught.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KCompression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

use super::*;

/// One generated record: key, value, headers (keys may repeat), timestamp.
#[derive(Debug, Clone)]
struct Gen {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn bytes_opt(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.85, proptest::collection::vec(any::<u8>(), 0..max))
}

prop_compose! {
    fn gen_record(unique_headers: bool)(
        timestamp in 0i64..4_000_000_000_000,
        key in bytes_opt(40),
        value in bytes_opt(600),
        headers in proptest::collection::vec(("[A-Za-z_]{1,8}", bytes_opt(30)), 0..5),
    ) -> Gen {
        let mut headers = headers;
        if unique_headers {
            let mut seen = std::collections::HashSet::new();
            headers.retain(|(k, _)| seen.insert(k.clone()));
        }
        Gen { timestamp, key, value, headers }
    }
}

fn codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

fn build(topic: &str, records: &[Gen], options: BatchOptions, codec: Compression) -> BytesMut {
    let mut builder = BatchBuilder::new(topic, options).unwrap();
    for r in records {
        let fields = RecordFields {
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
        };
        builder
            .push(
                &fields,
                r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            )
            .unwrap();
    }
    builder.finish(codec).unwrap()
}

fn kafka_codec(codec: Compression) -> KCompression {
    match codec {
        Compression::None => KCompression::None,
        Compression::Gzip => KCompression::Gzip,
        Compression::Snappy => KCompression::Snappy,
        Compression::Lz4 => KCompression::Lz4,
        Compression::Zstd => KCompression::Zstd,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// encode → stamp → parse → verify → decode gives back every field.
    #[test]
    fn round_trip(
        topic in "[a-zA-Z0-9_%-]{0,40}",
        records in proptest::collection::vec(gen_record(false), 1..20),
        codec in codec(),
        producer in (any::<bool>(), 0i64..1_000_000, any::<i16>(), 0i32..1_000_000),
        transactional in any::<bool>(),
        st in (any::<u64>(), 0u64..(1 << 60), any::<i64>(), any::<u32>(), any::<i32>()),
    ) {
        let options = BatchOptions {
            producer_id: if producer.0 { producer.1 } else { NO_PRODUCER_ID },
            producer_epoch: producer.2,
            base_sequence: if producer.0 { producer.3 } else { NO_SEQUENCE },
            flags: if transactional { attributes::TRANSACTIONAL } else { 0 },
        };
        let mut entry = build(&topic, &records, options, codec);
        let s = Stamp { commit_log_offset: st.0, base_offset: st.1, store_timestamp: st.2, queue_id: st.3, leader_epoch: st.4 };
        stamp(&mut entry, s);
        let bytes = entry.freeze();
        let parsed = Entry::parse(&bytes).unwrap();
        parsed.verify_batch().unwrap();
        parsed.verify_envelope().unwrap();
        parsed.records(usize::MAX).unwrap().check().unwrap();
        prop_assert_eq!(parsed.stamp(), s);
        prop_assert_eq!(parsed.topic(), topic.as_str());
        prop_assert_eq!(parsed.compression(), codec);
        prop_assert_eq!(parsed.is_transactional(), transactional);
        prop_assert_eq!(parsed.record_count() as usize, records.len());
        let messages = Message::decode_entry(&bytes).unwrap();
        prop_assert_eq!(messages.len(), records.len());
        for (i, (m, r)) in messages.iter().zip(&records).enumerate() {
            prop_assert_eq!(m.index as usize, i);
            prop_assert_eq!(m.queue_offset, s.base_offset + i as u64);
            prop_assert_eq!(m.born_timestamp, r.timestamp);
            prop_assert_eq!(m.key.as_deref(), r.key.as_deref());
            prop_assert_eq!(m.body.as_deref(), r.value.as_deref());
            let headers: Vec<(String, Option<Vec<u8>>)> = m.headers.iter().map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.to_vec()))).collect();
            prop_assert_eq!(&headers, &r.headers);
            if options.producer_id >= 0 {
                prop_assert_eq!(m.sequence, options.base_sequence + i as i32);
            }
        }
    }

    /// What this codec writes, the crate's decoder reads the same; what the crate writes,
    /// this parser reads the same (header keys unique: the crate keeps headers in a map).
    #[test]
    fn agrees_with_the_kafka_protocol_crate(
        records in proptest::collection::vec(gen_record(true), 1..12),
        codec in codec(),
        base_offset in 0i64..(1 << 40),
    ) {
        // Ours → crate.
        let mut entry = build("t", &records, BatchOptions::default(), codec);
        stamp(&mut entry, Stamp { base_offset: base_offset as u64, ..Stamp::default() });
        let parsed = Entry::parse(&entry).unwrap();
        let mut batch = Bytes::copy_from_slice(parsed.batch());
        let set = RecordBatchDecoder::decode(&mut batch).unwrap();
        prop_assert_eq!(set.records.len(), records.len());
        for (i, (k, r)) in set.records.iter().zip(&records).enumerate() {
            prop_assert_eq!(k.offset, base_offset + i as i64);
            prop_assert_eq!(k.timestamp, r.timestamp);
            prop_assert_eq!(k.key.as_deref(), r.key.as_deref());
            prop_assert_eq!(k.value.as_deref(), r.value.as_deref());
            let headers: Vec<(String, Option<Vec<u8>>)> = k.headers.iter().map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_vec()))).collect();
            prop_assert_eq!(&headers, &r.headers);
        }

        // Crate → ours.
        let krecords: Vec<KRecord> = records.iter().enumerate().map(|(i, r)| KRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The crate starts a new batch where offset - sequence changes.
            sequence: i as i32,
            timestamp: r.timestamp,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r.headers.iter().map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from))).collect::<IndexMap<_, _>>(),
        }).collect();
        let mut kbatch = BytesMut::new();
        RecordBatchEncoder::encode(&mut kbatch, &krecords, &RecordEncodeOptions { version: 2, compression: kafka_codec(codec) }).unwrap();
        let mut wrapped = BytesMut::new();
        wrap_batch("t", &kbatch, &mut wrapped).unwrap();
        let bytes = wrapped.freeze();
        let parsed = Entry::parse(&bytes).unwrap();
        parsed.verify_batch().unwrap();
        parsed.records(usize::MAX).unwrap().check().unwrap();
        let messages = Message::decode_entry(&bytes).unwrap();
        for (m, r) in messages.iter().zip(&records) {
            prop_assert_eq!(m.born_timestamp, r.timestamp);
            prop_assert_eq!(m.key.as_deref(), r.key.as_deref());
            prop_assert_eq!(m.body.as_deref(), r.value.as_deref());
            prop_assert_eq!(m.headers.len(), r.headers.len());
        }
    }

    /// Any flipped bit is caught by one of the two CRCs (or makes the entry unparseable).
    #[test]
    fn any_flipped_bit_is_caught(
        records in proptest::collection::vec(gen_record(false), 1..5),
        codec in codec(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut entry = build("topic", &records, BatchOptions::default(), codec);
        stamp(&mut entry, Stamp { commit_log_offset: 4096, base_offset: 17, store_timestamp: 1, queue_id: 3, leader_epoch: 2 });
        let i = flip.index(entry.len());
        entry[i] ^= 1 << bit;
        let ok = Entry::parse(&entry).and_then(|e| {
            e.verify_envelope()?;
            e.verify_batch()?;
            e.records(usize::MAX)?.check()
        });
        prop_assert!(ok.is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for entry in Entries::new(&bytes).flatten() {
            if let Ok(records) = entry.records(1 << 20) {
                let _ = records.check();
            }
        }
    }

    #[test]
    fn truncated_entries_are_refused(
        records in proptest::collection::vec(gen_record(false), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let entry = build("topic", &records, BatchOptions::default(), Compression::None);
        let cut = cut.index(entry.len());
        prop_assert!(Entry::parse(&entry[..cut]).is_err());
    }
}

#[test]
fn a_thousand_small_messages_cost_little_over_their_bodies() {
    let body = [7u8; 100];
    let mut builder = BatchBuilder::new("bench", BatchOptions::default()).unwrap();
    for i in 0..1000 {
        let fields = RecordFields {
            timestamp: 1_800_000_000_000 + i,
            key: None,
            value: Some(&body),
        };
        builder.push(&fields, std::iter::empty()).unwrap();
    }
    let entry = builder.finish(Compression::None).unwrap();
    let per_message = entry.len() as f64 / 1000.0;
    assert!(
        per_message <= 115.0,
        "{per_message} bytes per 100-byte message"
    );
}

#[test]
fn old_format_is_refused_with_an_explanation() {
    let mut old = vec![0u8; 120];
    old[..4].copy_from_slice(&120u32.to_le_bytes());
    old[4] = LEGACY_MAGIC;
    let err = Entry::parse(&old).unwrap_err();
    assert_eq!(err, BatchError::LegacyFormat);
    assert!(err.to_string().contains("old record format"));
}

#[test]
fn tag_and_deliver_at_come_from_headers() {
    let mut builder = BatchBuilder::new("t", BatchOptions::default()).unwrap();
    let headers = [
        ("TAGS", Some(&b"TagA"[..])),
        ("TIMER_DELIVER_MS", Some(&b"1800000000123"[..])),
        ("a", None),
        ("a", Some(&b"\xff\x00"[..])),
    ];
    builder
        .push(
            &RecordFields {
                timestamp: 5,
                key: Some(b"k"),
                value: None,
            },
            headers.iter().copied(),
        )
        .unwrap();
    let bytes = builder.finish(Compression::None).unwrap().freeze();
    let entry = Entry::parse(&bytes).unwrap();
    let records = entry.records(1 << 20).unwrap();
    let view = records.iter().next().unwrap().unwrap();
    assert_eq!(view.tag(), "TagA");
    assert_eq!(view.deliver_at(), 1_800_000_000_123);
    assert_eq!(view.key_str(), "k");
    assert_eq!(view.value, None);
    assert_eq!(view.headers().count(), 4);
    assert_eq!(tag_hash("TagA"), tag_hash(view.tag()));
    assert_eq!(tag_hash(""), 0);
}

#[test]
fn a_kafka_batch_with_a_timer_header_is_marked_delayed() {
    for (codec, timed) in [
        (Compression::None, false),
        (Compression::None, true),
        (Compression::Zstd, true),
    ] {
        let mut builder = BatchBuilder::new("t", BatchOptions::default()).unwrap();
        for i in 0..3u8 {
            let header = (timed && i == 2).then_some(("TIMER_DELAY_SEC", Some(&b"5"[..])));
            let fields = RecordFields {
                timestamp: 1,
                key: None,
                value: Some(&[i][..]),
            };
            builder.push(&fields, header.into_iter()).unwrap();
        }
        let built = builder.finish(codec).unwrap();
        // As a Kafka producer sends it: the batch alone, wrapped by the broker (flags 0).
        let mut entry = BytesMut::new();
        wrap_batch("t", Entry::parse(&built).unwrap().batch(), &mut entry).unwrap();
        assert_eq!(Entry::parse(&entry).unwrap().envelope_flags(), 0);
        assert_eq!(mark_delayed(&mut entry).unwrap(), timed);
        let flags = Entry::parse(&entry).unwrap().envelope_flags();
        assert_eq!(flags & envelope_flags::DELAYED != 0, timed, "{codec:?}");
    }
}

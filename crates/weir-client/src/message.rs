//! Messages: [`Message`] to produce, [`SendResult`] for where it was stored, and
//! [`ReceivedMessage`] for what consumers get.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::io::Write;

use bytes::{Bytes, BytesMut};
use weir_proto::batch::{
    BatchBuilder, BatchOptions, Compression, Entry, HEADER_DELIVER_MS, HEADER_TAGS, RecordFields,
    RecordView,
};
use weir_proto::{MessageId, names};

use crate::error::{ClientError, Result};

/// A message to send, built with `Message::new(topic, body)` and the `with_*` methods.
///
/// On the wire it is one record of a Kafka RecordBatch v2 (see `weir_proto::batch`): the key
/// is the record key, the body its value, the tag the header `TAGS`, the deliver-at time the
/// header `TIMER_DELIVER_MS`, and the properties the other headers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    topic: String,
    body: Bytes,
    key: Option<Bytes>,
    tag: String,
    headers: Vec<(String, Option<Bytes>)>,
    sharding_key: Option<String>,
    deliver_at: i64,
}

impl Message {
    /// A message for `topic` carrying `body`.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.into(),
            body: body.into(),
            key: None,
            tag: String::new(),
            headers: Vec::new(),
            sharding_key: None,
            deliver_at: 0,
        }
    }

    /// Sets the business key: indexed by the broker (find by key) and, unless a sharding key
    /// is set, hashed to pick the queue so one key's messages stay in order. An empty key is
    /// no key.
    pub fn with_key(self, key: impl Into<String>) -> Message {
        let key: String = key.into();
        if key.is_empty() {
            return Message { key: None, ..self };
        }
        self.with_key_bytes(key)
    }

    /// Sets a key that need not be text (see [`Message::with_key`]).
    pub fn with_key_bytes(mut self, key: impl Into<Bytes>) -> Message {
        self.key = Some(key.into());
        self
    }

    /// Sets the tag, used by consumers' tag filters.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Message {
        self.tag = tag.into();
        self
    }

    /// Adds a user property (a text header). Names may repeat: each is kept, in order.
    pub fn with_property(self, name: impl Into<String>, value: impl Into<String>) -> Message {
        let value: String = value.into();
        self.with_header(name, Some(Bytes::from(value)))
    }

    /// Adds a header whose value may be binary, or null (`None`). Names may repeat.
    pub fn with_header(mut self, name: impl Into<String>, value: Option<Bytes>) -> Message {
        self.headers.push((name.into(), value));
        self
    }

    /// Sets the key hashed to choose the queue (instead of the message key).
    pub fn with_sharding_key(mut self, key: impl Into<String>) -> Message {
        self.sharding_key = Some(key.into());
        self
    }

    /// Asks for delivery at `at`: the broker keeps the message invisible to consumers until
    /// then (at most 365 days ahead; a time in the past means at once).
    pub fn with_deliver_at(mut self, at: SystemTime) -> Message {
        self.deliver_at = at
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self
    }

    /// Asks for delivery `delay` from now (see [`Message::with_deliver_at`]).
    pub fn with_delay(self, delay: Duration) -> Message {
        self.with_deliver_at(SystemTime::now() + delay)
    }

    /// Asks for delivery after one of RocketMQ's 18 delay levels, 1 to 18: 1s 5s 10s 30s 1m 2m
    /// 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h. Another level is an error.
    pub fn with_delay_level(self, level: u8) -> Result<Message> {
        let delay = delay_level(level).ok_or_else(|| {
            ClientError::InvalidArgument(format!("delay level {level} is not one of 1..=18"))
        })?;
        Ok(self.with_delay(delay))
    }

    /// The requested delivery time, ms since the Unix epoch; 0 for at once.
    pub fn deliver_at(&self) -> i64 {
        self.deliver_at
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    /// The key as text: empty for none (or for a key that is not UTF-8, see
    /// [`Message::key_bytes`]).
    pub fn key(&self) -> &str {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("")
    }
    /// The key as bytes, `None` for none.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    /// The tag, empty for none.
    pub fn tag(&self) -> &str {
        &self.tag
    }
    /// The headers (user properties), in order; a `None` value is null.
    pub fn headers(&self) -> &[(String, Option<Bytes>)] {
        &self.headers
    }

    /// The explicit sharding key, if set.
    pub fn sharding_key(&self) -> Option<&str> {
        self.sharding_key.as_deref()
    }

    /// The key that picks the queue, if any, as text: the sharding key, else the message key
    /// (when it is UTF-8; see [`Message::routing_key_bytes`]).
    pub fn routing_key(&self) -> Option<&str> {
        match &self.sharding_key {
            Some(k) => Some(k),
            None => self
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok()),
        }
    }

    /// The key that picks the queue, if any: the sharding key, else the message key.
    pub fn routing_key_bytes(&self) -> Option<&[u8]> {
        match &self.sharding_key {
            Some(k) => Some(k.as_bytes()),
            None => self.key.as_deref(),
        }
    }

    /// Appends this message as the next record of `batch`, born at `born_timestamp`.
    pub(crate) fn push_to(&self, batch: &mut BatchBuilder, born_timestamp: i64) -> Result<()> {
        let deliver = DeliverMs::new(self.deliver_at);
        batch.push(&self.fields(born_timestamp), self.wire_headers(&deliver))?;
        Ok(())
    }

    /// Bytes this message adds to a batch whose base timestamp is `base_timestamp`, as its
    /// record number `index`.
    pub(crate) fn encoded_len(
        &self,
        born_timestamp: i64,
        base_timestamp: i64,
        index: u32,
    ) -> usize {
        let deliver = DeliverMs::new(self.deliver_at);
        BatchBuilder::record_len(
            &self.fields(born_timestamp),
            self.wire_headers(&deliver),
            base_timestamp,
            index,
        )
    }

    /// One entry holding just this message, sealed with `codec`, with `options`.
    pub(crate) fn encode_entry(
        &self,
        options: BatchOptions,
        codec: Compression,
    ) -> Result<BytesMut> {
        let mut batch =
            BatchBuilder::with_capacity(&self.topic, options, self.encoded_len(0, 0, 0))?;
        self.push_to(&mut batch, now_ms())?;
        Ok(batch.finish(codec)?)
    }

    fn fields(&self, born_timestamp: i64) -> RecordFields<'_> {
        RecordFields {
            timestamp: born_timestamp,
            key: self.key.as_deref(),
            value: Some(&self.body),
        }
    }

    /// The record's headers: `TAGS` (when tagged), `TIMER_DELIVER_MS` (when delayed), then the
    /// user's, in order.
    fn wire_headers<'h>(
        &'h self,
        deliver: &'h DeliverMs,
    ) -> impl Iterator<Item = (&'h str, Option<&'h [u8]>)> + Clone {
        let tag = (!self.tag.is_empty()).then_some((HEADER_TAGS, Some(self.tag.as_bytes())));
        let deliver = deliver.text().map(|t| (HEADER_DELIVER_MS, Some(t)));
        tag.into_iter()
            .chain(deliver)
            .chain(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())))
    }
}

/// A deliver-at time as the decimal text of header `TIMER_DELIVER_MS`, on the stack.
struct DeliverMs {
    text: [u8; 20],
    len: usize,
}

impl DeliverMs {
    fn new(deliver_at: i64) -> DeliverMs {
        let mut text = [0u8; 20];
        let mut len = 0;
        if deliver_at > 0 {
            let mut rest = &mut text[..];
            // An i64 has at most 19 digits: it always fits.
            if write!(rest, "{deliver_at}").is_ok() {
                len = 20 - rest.len();
            }
        }
        DeliverMs { text, len }
    }

    fn text(&self) -> Option<&[u8]> {
        (self.len > 0).then(|| &self.text[..self.len])
    }
}

/// RocketMQ's delay levels in seconds, level 1 first.
const DELAY_LEVELS: [u64; 18] = [
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
];

/// The delay of RocketMQ delay level `level` (1 to 18).
pub fn delay_level(level: u8) -> Option<Duration> {
    let i = usize::from(level).checked_sub(1)?;
    DELAY_LEVELS.get(i).map(|s| Duration::from_secs(*s))
}

/// Where a sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// The message's id (storing broker group, commit-log offset of its entry, its index in
    /// the entry's batch).
    pub message_id: MessageId,
    /// The topic.
    pub topic: String,
    /// The queue it went to.
    pub queue_id: u32,
    /// Its index in the queue (0 for a delayed message: it gets one when it is delivered;
    /// its id until then names its place in the broker's internal `%DELAY%` topic).
    pub queue_offset: u64,
}

/// A message as a consumer receives it: what the producer set plus where the broker stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id (storing broker group, commit-log offset of its entry, index in the
    /// entry's batch); `None` when the storing broker's name is not known (a transaction
    /// check-back).
    pub id: Option<MessageId>,
    /// The topic.
    pub topic: String,
    /// The queue within the topic.
    pub queue_id: u32,
    /// The index within the queue.
    pub queue_offset: u64,
    /// The byte position in the broker's commit log of the entry holding the message.
    pub commit_log_offset: u64,
    /// The message's index in that entry's batch.
    pub index: u32,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// When the producer created it, ms since the Unix epoch.
    pub born_timestamp: i64,
    /// The key as text, empty for none (a key that is not UTF-8 is shown lossily; see
    /// `key_bytes`).
    pub key: String,
    /// The key as stored, `None` for none.
    pub key_bytes: Option<Bytes>,
    /// The tag (header `TAGS`), empty for none.
    pub tag: String,
    /// When it was asked to be delivered (header `TIMER_DELIVER_MS`), ms since the Unix
    /// epoch; 0 for at once. Set on a delayed message (and on a retry copy, delayed by the
    /// back-off).
    pub deliver_at: i64,
    /// Every header as stored, in order: names may repeat, values may be binary or null
    /// (`None`). They include `TAGS` and `TIMER_DELIVER_MS` when set (also in `tag` and
    /// `deliver_at`) and what the broker adds (`DELAY_ORIGIN_ID` to a delivered delayed
    /// message; `ORIGIN_TOPIC`, `ORIGIN_MSG_ID`, `RECONSUME_TIMES` to a retry copy or a dead
    /// letter). [`ReceivedMessage::properties`] lists the user's text properties.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The body (empty when the record's value is null).
    pub body: Bytes,
}

impl ReceivedMessage {
    /// How many times delivery of this message failed before (0 for a first delivery).
    pub fn reconsume_times(&self) -> u32 {
        self.property(names::PROP_RECONSUME_TIMES)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    /// The topic the message was first produced to: `ORIGIN_TOPIC` for a retry copy or a dead
    /// letter, else its topic.
    pub fn origin_topic(&self) -> &str {
        self.property(names::PROP_ORIGIN_TOPIC)
            .unwrap_or(&self.topic)
    }

    /// Decodes every message of the entries in `payload` (laid end to end), as stored by the
    /// broker group named `broker_name` (empty when not known: the messages get no id).
    pub fn decode_all(payload: &Bytes, broker_name: &str) -> Result<Vec<ReceivedMessage>> {
        let broker = (!broker_name.is_empty()).then(|| Arc::from(broker_name));
        let mut out = Vec::new();
        crate::entries::decode(payload, broker.as_ref(), |_| true, |_, _| true, &mut out)?;
        Ok(out)
    }

    /// Builds the message of `record`, a record of `entry` whose records section is `section`
    /// (the response buffer itself, or the batch's decompressed records): key, body and header
    /// values share `section`.
    pub(crate) fn from_record(
        entry: &Entry<'_>,
        section: &Bytes,
        record: &RecordView<'_>,
        broker: Option<&Arc<str>>,
    ) -> Result<ReceivedMessage> {
        let stamp = entry.stamp();
        let mut headers = Vec::with_capacity(record.header_count() as usize);
        for header in record.headers() {
            let (k, v) = header?;
            headers.push((k.to_owned(), v.map(|v| section.slice_ref(v))));
        }
        let text = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let tag = text(HEADER_TAGS).unwrap_or_default().to_owned();
        let deliver_at = text(HEADER_DELIVER_MS)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let key_bytes = record.key.map(|k| section.slice_ref(k));
        let key = match record.key {
            Some(k) => String::from_utf8_lossy(k).into_owned(),
            None => String::new(),
        };
        Ok(ReceivedMessage {
            id: broker.map(|broker| {
                MessageId::new(broker.clone(), stamp.commit_log_offset, record.offset_delta)
            }),
            topic: entry.topic().to_owned(),
            queue_id: stamp.queue_id,
            queue_offset: stamp.base_offset + u64::from(record.offset_delta),
            commit_log_offset: stamp.commit_log_offset,
            index: record.offset_delta,
            store_timestamp: stamp.store_timestamp,
            born_timestamp: record.timestamp,
            key,
            key_bytes,
            tag,
            deliver_at,
            headers,
            body: record
                .value
                .map(|v| section.slice_ref(v))
                .unwrap_or_default(),
        })
    }

    /// The value of the first header `name` as text, if present, not null and UTF-8.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.header(name)
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of the first header `name`: `None` when absent, `Some(None)` when null.
    pub fn header(&self, name: &str) -> Option<Option<&[u8]>> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Every header as stored, in order (see the `headers` field).
    pub fn headers(&self) -> &[(String, Option<Bytes>)] {
        &self.headers
    }

    /// The properties as text, in order: every header but `TAGS` and `TIMER_DELIVER_MS`
    /// (shown as the tag and the deliver-at time), null or binary values as `None`.
    pub fn properties(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.headers
            .iter()
            .filter(|(k, _)| k != HEADER_TAGS && k != HEADER_DELIVER_MS)
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v.as_deref().and_then(|v| std::str::from_utf8(v).ok()),
                )
            })
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

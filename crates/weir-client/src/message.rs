//! Messages: [`Message`] to produce, [`SendResult`] for where it was stored, and
//! [`ReceivedMessage`] for what consumers get.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use weir_proto::record::{self, RecordFields};
use weir_proto::{MessageId, names};

use crate::error::{ClientError, Result};

/// A message to send, built with `Message::new(topic, body)` and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    topic: String,
    body: Bytes,
    key: String,
    tag: String,
    properties: Vec<(String, String)>,
    sharding_key: Option<String>,
    deliver_at: i64,
}

impl Message {
    /// A message for `topic` carrying `body`.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.into(),
            body: body.into(),
            key: String::new(),
            tag: String::new(),
            properties: Vec::new(),
            sharding_key: None,
            deliver_at: 0,
        }
    }

    /// Sets the business key: indexed by the broker (find by key) and, unless a sharding key
    /// is set, hashed to pick the queue so one key's messages stay in order.
    pub fn with_key(mut self, key: impl Into<String>) -> Message {
        self.key = key.into();
        self
    }

    /// Sets the tag, used by consumers' tag filters.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Message {
        self.tag = tag.into();
        self
    }

    /// Adds a user property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.properties.push((name.into(), value.into()));
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
    /// The key, empty for none.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The tag, empty for none.
    pub fn tag(&self) -> &str {
        &self.tag
    }
    /// The user properties, in order.
    pub fn properties(&self) -> &[(String, String)] {
        &self.properties
    }

    /// The explicit sharding key, if set.
    pub fn sharding_key(&self) -> Option<&str> {
        self.sharding_key.as_deref()
    }

    /// The key that picks the queue, if any: the sharding key, else the message key.
    pub fn routing_key(&self) -> Option<&str> {
        match &self.sharding_key {
            Some(k) => Some(k),
            None if !self.key.is_empty() => Some(&self.key),
            None => None,
        }
    }

    /// Appends this message's record to `dst` (one record per message, no other allocation);
    /// returns the record's length.
    pub(crate) fn encode_into(&self, born_timestamp: i64, dst: &mut BytesMut) -> Result<u32> {
        self.encode_sequenced(born_timestamp, 0, 0, 0, dst)
    }

    /// [`Message::encode_into`] with an idempotent producer's id and sequence and record
    /// `flags` (see `weir_proto::record::flags`).
    pub(crate) fn encode_sequenced(
        &self,
        born_timestamp: i64,
        producer_id: u64,
        sequence: u32,
        flags: u16,
        dst: &mut BytesMut,
    ) -> Result<u32> {
        let start = dst.len();
        record::encode(
            &RecordFields {
                topic: &self.topic,
                key: &self.key,
                tag: &self.tag,
                properties: &self.properties,
                body: &self.body,
                born_timestamp,
                deliver_at: self.deliver_at,
                producer_id,
                sequence,
                flags,
            },
            dst,
        )?;
        Ok((dst.len() - start) as u32)
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
    /// The message's id (storing broker group and commit-log offset).
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
    /// The message id (storing broker group and commit-log offset); `None` when the storing
    /// broker's name is not known (a transaction check-back).
    pub id: Option<MessageId>,
    /// The topic.
    pub topic: String,
    /// The queue within the topic.
    pub queue_id: u32,
    /// The index within the queue.
    pub queue_offset: u64,
    /// The byte position in the broker's commit log.
    pub commit_log_offset: u64,
    /// When the broker stored it, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// When the producer created it, ms since the Unix epoch.
    pub born_timestamp: i64,
    /// The key, empty for none.
    pub key: String,
    /// The tag, empty for none.
    pub tag: String,
    /// When it was asked to be delivered, ms since the Unix epoch; 0 for at once. Set on a
    /// delayed message (and on a retry copy, delayed by the back-off).
    pub deliver_at: i64,
    /// The user properties, in order (the broker adds `DELAY_ORIGIN_ID` to a delivered delayed
    /// message, and `ORIGIN_TOPIC`, `ORIGIN_MSG_ID`, `RECONSUME_TIMES` to a retry copy or a
    /// dead letter).
    pub properties: Vec<(String, String)>,
    /// The body.
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

    /// Decodes every record of `payload`, as stored by the broker group named `broker_name`
    /// (empty when not known: the messages get no id).
    pub fn decode_all(payload: &Bytes, broker_name: &str) -> Result<Vec<ReceivedMessage>> {
        let broker = (!broker_name.is_empty()).then(|| Arc::from(broker_name));
        ReceivedMessage::decode_stored_by(payload, broker.as_ref())
    }

    /// [`ReceivedMessage::decode_all`] with the group's name already shared: every message's
    /// id refers to that one name (no allocation per message).
    pub(crate) fn decode_stored_by(
        payload: &Bytes,
        broker: Option<&Arc<str>>,
    ) -> Result<Vec<ReceivedMessage>> {
        let messages = record::Message::decode_all(payload)?;
        Ok(messages
            .into_iter()
            .map(|m| ReceivedMessage::from_record(m, broker))
            .collect())
    }

    fn from_record(m: record::Message, broker: Option<&Arc<str>>) -> ReceivedMessage {
        ReceivedMessage {
            id: broker.map(|broker| MessageId {
                broker: broker.clone(),
                commit_log_offset: m.commit_log_offset,
            }),
            topic: m.topic,
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            commit_log_offset: m.commit_log_offset,
            store_timestamp: m.store_timestamp,
            born_timestamp: m.born_timestamp,
            key: m.key,
            tag: m.tag,
            deliver_at: m.deliver_at,
            properties: m.properties,
            body: m.body,
        }
    }

    /// The value of property `name`, if present.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

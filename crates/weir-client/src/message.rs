//! Messages: [`Message`] to produce, [`SendResult`] for where it was stored, and
//! [`ReceivedMessage`] for what consumers get.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use weir_proto::MessageId;
use weir_proto::record::{self, RecordFields};

use crate::error::Result;

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

    /// Asks for delivery at `at` (reserved: brokers deliver at once for now).
    pub fn with_deliver_at(mut self, at: SystemTime) -> Message {
        self.deliver_at = at
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self
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

/// Where a sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// The message's id (storing broker and commit-log offset).
    pub message_id: MessageId,
    /// The topic.
    pub topic: String,
    /// The queue it went to.
    pub queue_id: u32,
    /// Its index in the queue.
    pub queue_offset: u64,
}

/// A message as a consumer receives it: what the producer set plus where the broker stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id, when the storing broker's address is an IP address.
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
    /// The user properties, in order.
    pub properties: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl ReceivedMessage {
    /// Decodes every record of `payload`, as stored by the broker at `broker_addr`.
    pub fn decode_all(payload: &Bytes, broker_addr: &str) -> Result<Vec<ReceivedMessage>> {
        let broker: Option<SocketAddr> = broker_addr.parse().ok();
        let messages = record::Message::decode_all(payload)?;
        Ok(messages
            .into_iter()
            .map(|m| ReceivedMessage::from_record(m, broker))
            .collect())
    }

    fn from_record(m: record::Message, broker: Option<SocketAddr>) -> ReceivedMessage {
        ReceivedMessage {
            id: broker.map(|broker_addr| MessageId {
                broker_addr,
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

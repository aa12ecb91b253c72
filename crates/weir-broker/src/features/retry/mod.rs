//! Retry and dead letters: a consumer hands a failed message back ([`Retries::send_back`]);
//! the broker stores a copy for the group, delayed by the group's next back-off step, in
//! `%RETRY%<group>` (through `%DELAY%`), or in `%DLQ%<group>` once it has failed
//! `max_retries + 1` times.
//!
//! Both copies carry, besides the message's own key, tag, properties and body:
//!
//! ```text
//! ORIGIN_TOPIC     the topic the message was first produced to
//! ORIGIN_MSG_ID    its id there
//! RECONSUME_TIMES  failed deliveries so far
//! ```

pub(crate) mod dead_letter;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use weir_proto::batch::{RecordView, with_record};
use weir_proto::names::{
    self, PROP_DELAY_ORIGIN_ID, PROP_ORIGIN_MSG_ID, PROP_ORIGIN_TOPIC, PROP_RECONSUME_TIMES,
};
use weir_proto::{ErrorCode, MessageId};
use weir_store::AppendResult;

use crate::core::clock::now_ms;
use crate::core::identity::Identity;
use crate::core::message_log::MessageLog;
use crate::core::topics::TopicTable;
use crate::error::RequestError;
use crate::features::delay::{self, Delays};

/// The back-off before retry number `failures` (1-based): the configured steps, the last one
/// repeated.
pub(crate) fn backoff(steps: &[Duration], failures: u32) -> Duration {
    let i = (failures.max(1) - 1) as usize;
    steps
        .get(i)
        .or(steps.last())
        .copied()
        .unwrap_or(Duration::from_secs(10))
}

/// Properties a copy takes over from its original and sets itself (see the module docs).
const ORIGIN_PROPERTIES: [&str; 4] = [
    PROP_ORIGIN_TOPIC,
    PROP_ORIGIN_MSG_ID,
    PROP_RECONSUME_TIMES,
    PROP_DELAY_ORIGIN_ID,
];

/// A consumer's hand-back of a message it failed to process.
#[derive(Debug, Clone)]
pub(crate) struct SendBack {
    /// The consumer group.
    pub group: String,
    /// The id of the record the consumer received (an original or a retry copy).
    pub message_id: String,
    /// Extra failures to count beyond the record's own.
    pub reconsume_times: u32,
    /// Store straight into the dead-letter topic.
    pub dead_letter: bool,
    /// Resend a dead letter: deliver it again now, failures reset to 0.
    pub resend: bool,
}

/// What a send-back did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentBack {
    /// Failures counted so far, this one included.
    pub failures: u32,
    /// Whether the copy went to the dead-letter topic.
    pub dead_lettered: bool,
    /// When the retry copy is delivered (0 for a dead letter or a resend).
    pub deliver_at: i64,
    /// The copy's message id.
    pub stored_id: MessageId,
}

/// Retries and dead letters, built from the write path, the topic table (internal topics are
/// created on first use), the identity (ids of copies) and the delay service (a retry waits
/// there for its back-off).
#[derive(Debug)]
pub(crate) struct Retries {
    log: MessageLog,
    topics: Arc<TopicTable>,
    identity: Arc<Identity>,
    delays: Arc<Delays>,
    /// Back-off before each retry; the last step repeats.
    steps: Vec<Duration>,
    /// Failures after the first before a message is dead-lettered.
    max_retries: u32,
    /// Largest pull answer, bytes (reads by position stay within it).
    max_read_bytes: u32,
}

impl Retries {
    /// The service over its parts.
    pub fn new(
        log: MessageLog,
        topics: Arc<TopicTable>,
        identity: Arc<Identity>,
        delays: Arc<Delays>,
        steps: Vec<Duration>,
        max_retries: u32,
        max_read_bytes: u32,
    ) -> Retries {
        Retries {
            log,
            topics,
            identity,
            delays,
            steps,
            max_retries,
            max_read_bytes,
        }
    }

    /// A copy of `record` for `%DLQ%<group>` (one queue, created on first use) with the
    /// origin headers `origin` (`ORIGIN_TOPIC`, `ORIGIN_MSG_ID`, `RECONSUME_TIMES`).
    pub fn dead_letter_copy(
        &self,
        group: &str,
        record: &RecordView<'_>,
        origin: &[(String, String); 3],
    ) -> Result<(String, BytesMut), RequestError> {
        let topic = names::dlq_topic(group);
        self.topics.ensure_internal(&topic)?;
        let mut out = BytesMut::new();
        delay::reencode(record, &topic, &ORIGIN_PROPERTIES, origin, &mut out)?;
        Ok((topic, out))
    }

    /// Stores a [`Retries::dead_letter_copy`] after `failures` failures. The one way a
    /// message becomes a dead letter: push consumers' send-back, orderly consumers' last try
    /// and shared groups' last attempt all end here, so `weir dlq` reads them alike.
    pub async fn store_dead_letter(
        &self,
        group: &str,
        (topic, copy): (String, BytesMut),
        failures: &str,
    ) -> Result<AppendResult, RequestError> {
        let stored = self.log.append(&topic, 0, copy).await?;
        metrics::counter!("weir_dlq_messages_total", "group" => group.to_owned()).increment(1);
        tracing::info!(group, failures, "message dead-lettered");
        Ok(stored)
    }

    /// Stores the message again for the group, delayed, or dead-letters it.
    #[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, id = %request.message_id))]
    pub async fn send_back(&self, request: SendBack) -> Result<SentBack, RequestError> {
        let group = request.group.as_str();
        weir_proto::validate_group_name(group)?;
        let id: MessageId =
            request
                .message_id
                .parse()
                .map_err(|e: weir_proto::message_id::InvalidMessageId| {
                    RequestError::new(ErrorCode::InvalidArgument, e.to_string())
                })?;
        if !self.identity.owns(&id) {
            return Err(RequestError::new(
                ErrorCode::MessageNotFound,
                format!("message {id} is stored by another broker group"),
            ));
        }
        let bytes = self.log.read_at(id.commit_log_offset)?;
        let corrupt = |e: weir_proto::batch::BatchError| {
            RequestError::new(ErrorCode::CorruptMessage, e.to_string())
        };
        let dead_letter = !request.resend && request.dead_letter;
        let plan = with_record(&bytes, id.index, |entry, record| {
            self.plan_send_back(group, &id, &request, entry.topic(), record, dead_letter)
        })
        .map_err(corrupt)??;
        match plan {
            Plan::DeadLetter { failures, copy } => {
                let stored = self
                    .store_dead_letter(group, copy, &failures.to_string())
                    .await?;
                Ok(SentBack {
                    failures,
                    dead_lettered: true,
                    deliver_at: 0,
                    stored_id: self.identity.message_id(stored.commit_log_offset, 0),
                })
            }
            Plan::Resend {
                failures,
                topic,
                copy,
            } => {
                let stored = self.log.append(&topic, 0, copy).await?;
                tracing::info!(group, id = %id, "dead letter resent");
                Ok(SentBack {
                    failures,
                    dead_lettered: false,
                    deliver_at: 0,
                    stored_id: self.identity.message_id(stored.commit_log_offset, 0),
                })
            }
            Plan::Retry {
                failures,
                deliver_at,
                copy,
            } => {
                let offsets = self.delays.store_delayed(copy).await?;
                metrics::counter!("weir_retry_messages_total", "group" => group.to_owned())
                    .increment(1);
                Ok(SentBack {
                    failures,
                    dead_lettered: false,
                    deliver_at,
                    stored_id: self
                        .identity
                        .message_id(offsets.first().copied().unwrap_or(0), 0),
                })
            }
        }
    }

    /// Decides what a send-back of `record` (of `topic`) does and makes the copy it stores.
    fn plan_send_back(
        &self,
        group: &str,
        id: &MessageId,
        request: &SendBack,
        topic: &str,
        record: &RecordView<'_>,
        dead_letter: bool,
    ) -> Result<Plan, RequestError> {
        let origin_topic = record
            .header_str(PROP_ORIGIN_TOPIC)
            .unwrap_or(topic)
            .to_owned();
        let origin_id = record
            .header_str(PROP_ORIGIN_MSG_ID)
            .map_or_else(|| id.to_string(), str::to_owned);
        let failures = if request.resend {
            0
        } else {
            record
                .header_str(PROP_RECONSUME_TIMES)
                .and_then(|t| t.parse::<u32>().ok())
                .unwrap_or(0)
                .saturating_add(1)
                .saturating_add(request.reconsume_times)
        };
        let add = [
            (PROP_ORIGIN_TOPIC.to_owned(), origin_topic),
            (PROP_ORIGIN_MSG_ID.to_owned(), origin_id),
            (PROP_RECONSUME_TIMES.to_owned(), failures.to_string()),
        ];
        let drop = ORIGIN_PROPERTIES;
        if dead_letter || failures > self.max_retries {
            return Ok(Plan::DeadLetter {
                failures,
                copy: self.dead_letter_copy(group, record, &add)?,
            });
        }
        let topic = names::retry_topic(group);
        self.topics.ensure_internal(&topic)?;
        let mut copy = BytesMut::new();
        if request.resend {
            delay::reencode(record, &topic, &drop, &add, &mut copy)?;
            return Ok(Plan::Resend {
                failures,
                topic,
                copy,
            });
        }
        let wait = backoff(&self.steps, failures);
        let deliver_at = now_ms()
            .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
            .max(1);
        delay::encode_delayed(record, &topic, 0, deliver_at, &drop, &add, &mut copy)?;
        Ok(Plan::Retry {
            failures,
            deliver_at,
            copy,
        })
    }
}

/// What a send-back stores, made while the original is at hand.
enum Plan {
    /// A dead letter: `(topic, entry)` for `%DLQ%<group>`.
    DeadLetter {
        failures: u32,
        copy: (String, BytesMut),
    },
    /// A dead letter sent back for another try at once: an entry for `%RETRY%<group>`.
    Resend {
        failures: u32,
        topic: String,
        copy: BytesMut,
    },
    /// A retry after a back-off: a `%DELAY%` entry bound for `%RETRY%<group>`.
    Retry {
        failures: u32,
        deliver_at: i64,
        copy: BytesMut,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_the_last_step() {
        let steps = [Duration::from_secs(1), Duration::from_secs(2)];
        assert_eq!(backoff(&steps, 1), Duration::from_secs(1));
        assert_eq!(backoff(&steps, 2), Duration::from_secs(2));
        assert_eq!(backoff(&steps, 9), Duration::from_secs(2));
    }
}

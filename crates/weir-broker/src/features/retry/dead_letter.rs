//! Dead letters by position: a message whose consumer gave up (an orderly push consumer's last
//! try, a shared group's last attempt) is looked up by (topic, queue, offset) and handed to
//! [`Retries::store_dead_letter`], the one place dead letters are written, so they carry
//! the same origin properties (`ORIGIN_TOPIC`, `ORIGIN_MSG_ID`, `RECONSUME_TIMES` = attempts)
//! as those of push consumers and `weir dlq` lists, shows and resends them all alike.

use weir_proto::ErrorCode;
use weir_proto::batch::with_queue_record;
use weir_proto::names::{PROP_ORIGIN_MSG_ID, PROP_ORIGIN_TOPIC, PROP_RECONSUME_TIMES};
use weir_store::TagFilter;

use super::Retries;
use crate::error::RequestError;

impl Retries {
    /// Copies the message at `topic`/`queue_id`/`offset` to `%DLQ%<group>`; returns its queue
    /// id and queue offset there.
    pub async fn dead_letter(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        attempts: u32,
    ) -> Result<(u32, u64), RequestError> {
        weir_proto::validate_group_name(group)?;
        self.topics.check_queue(topic, queue_id)?;
        let read = self.log.read(
            topic,
            queue_id,
            offset,
            1,
            self.max_read_bytes,
            &TagFilter::All,
        )?;
        let not_found = || {
            RequestError::new(
                ErrorCode::MessageNotFound,
                format!("no message at {topic}:{queue_id}:{offset}"),
            )
        };
        if let Some(damaged) = read.skipped.iter().find(|r| r.from == offset) {
            // Never copied onward: a copy would carry the damage under a fresh checksum.
            return Err(RequestError::new(
                ErrorCode::CorruptMessage,
                format!(
                    "message {topic}:{queue_id}:{offset} is damaged on disk ({}); not copied",
                    damaged.reason
                ),
            ));
        }
        if read.count == 0 {
            return Err(not_found());
        }
        let copy = with_queue_record(&read.records, offset, |entry, record| {
            let origin_id = self
                .identity
                .message_id(entry.stamp().commit_log_offset, record.offset_delta);
            let origin = [
                (PROP_ORIGIN_TOPIC.to_owned(), topic.to_owned()),
                (PROP_ORIGIN_MSG_ID.to_owned(), origin_id.to_string()),
                (PROP_RECONSUME_TIMES.to_owned(), attempts.to_string()),
            ];
            self.dead_letter_copy(group, record, &origin)
        })
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?
        .ok_or_else(not_found)??;
        let stored = self
            .store_dead_letter(group, copy, &attempts.to_string())
            .await?;
        Ok((0, stored.queue_offset))
    }
}

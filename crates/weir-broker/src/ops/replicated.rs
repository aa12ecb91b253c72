//! Applying a broker group's committed state changes to this replica's tables (see
//! `core::state_change`): the same topic and offset changes a standalone broker makes
//! directly, made idempotent for replay.

use std::sync::Arc;

use crate::core::message_log::MessageLog;
use crate::core::state_change::{Origin, StateApplier, StateChange};
use crate::core::topics::TopicTable;
use crate::features::delay::DelayProgress;
use crate::features::groups::offsets::OffsetTable;
use crate::features::groups::shared::SharedGroups;

/// Applies state changes to the topic table, the consumer offsets, the shared groups and the
/// delay progress.
#[derive(Debug)]
pub(crate) struct Applier {
    /// The topic table.
    pub topics: Arc<TopicTable>,
    /// Committed consumer offsets.
    pub offsets: Arc<OffsetTable>,
    /// Shared groups' state (dropped with a topic).
    pub shared: Arc<SharedGroups>,
    /// The store's queues (dropped with a topic).
    pub log: MessageLog,
    /// Which delayed messages are delivered.
    pub delay_progress: Arc<DelayProgress>,
}

impl StateApplier for Applier {
    fn apply(&self, change: &StateChange, origin: Origin) {
        let result = match change {
            StateChange::TopicCreated { name, queues } => match self.topics.get(name) {
                Some(_) => Ok(()),
                None => self.topics.create(name, *queues).map(|_| ()),
            },
            StateChange::QueuesAdded { name, queues } => match self.topics.get(name) {
                Some(config) if config.queues < *queues => {
                    self.topics.add_queues(name, *queues).map(|_| ())
                }
                _ => Ok(()),
            },
            StateChange::TopicDeleted { name } => match self.topics.get(name) {
                Some(_) => self.topics.delete(name).and_then(|()| {
                    self.offsets.remove_topic(name);
                    self.shared.remove_topic(name);
                    self.log.delete_queues(name).map_err(Into::into)
                }),
                None => Ok(()),
            },
            StateChange::OffsetsCommitted { group, offsets } => {
                for (topic, queue_id, offset) in offsets {
                    self.offsets.set(group, topic, *queue_id, *offset);
                }
                self.persist_offsets()
            }
            StateChange::DelaysDelivered { offsets } => {
                self.delay_progress.mark_all(offsets.iter().copied());
                self.delay_progress.persist().map_err(|e| {
                    crate::error::RequestError::new(
                        weir_proto::ErrorCode::StorageError,
                        e.to_string(),
                    )
                })
            }
            // The leader's own tables are already ahead of what it sent.
            StateChange::SharedProgress { .. } if origin == Origin::Here => Ok(()),
            StateChange::SharedProgress { queues } => {
                // Sent before a deletion that came first here: nothing to keep of it.
                self.shared
                    .apply_progress(queues, |topic| self.topics.get(topic).is_some());
                self.shared.persist().map_err(|e| {
                    crate::error::RequestError::new(
                        weir_proto::ErrorCode::StorageError,
                        e.to_string(),
                    )
                })
            }
            StateChange::OffsetsCommittedWithMetadata { group, offsets } => {
                for (topic, queue_id, offset, metadata) in offsets {
                    self.offsets
                        .set_with_metadata(group, topic, *queue_id, *offset, metadata);
                }
                self.persist_offsets()
            }
        };
        if let Err(e) = result {
            tracing::error!(?change, error = %e.message, "a replicated state change failed here");
        }
    }
}

impl Applier {
    /// Writes the offsets to disk before the state machine says it applied the entry (see
    /// `replication::state_machine`): a restart replays only what follows.
    fn persist_offsets(&self) -> Result<(), crate::error::RequestError> {
        self.offsets.persist().map_err(|e| {
            crate::error::RequestError::new(weir_proto::ErrorCode::StorageError, e.to_string())
        })
    }
}

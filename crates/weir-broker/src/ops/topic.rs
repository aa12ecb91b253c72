//! Topic administration: create, delete, and a topic's queues with their offsets.

use weir_store::QueueOffsets;

use crate::core::topics::{self, TopicConfig};
use crate::error::RequestError;
use crate::state::BrokerState;

/// A queue of a topic and its readable range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueState {
    /// The queue's id.
    pub queue_id: u32,
    /// Its offsets: `min..max` are readable.
    pub offsets: QueueOffsets,
}

/// The queues `0..queues` of a topic with their current offsets.
pub(crate) fn queue_states(state: &BrokerState, name: &str, queues: u32) -> Vec<QueueState> {
    (0..queues)
        .map(|queue_id| QueueState {
            queue_id,
            offsets: state.log.queue_offsets(name, queue_id),
        })
        .collect()
}

/// Creates a topic a client asked for (0 queues = the broker's default).
pub(crate) fn create(
    state: &BrokerState,
    name: &str,
    queues: u32,
) -> Result<TopicConfig, RequestError> {
    topics::validate_name(name)?;
    let queues = match queues {
        0 => state.config.default_queues,
        n => n,
    };
    let config = state.topics.create(name, queues)?;
    tracing::info!(topic = %name, queues, "topic created");
    Ok(config)
}

/// Grows a topic to `queues` queues in total.
pub(crate) fn add_queues(
    state: &BrokerState,
    name: &str,
    queues: u32,
) -> Result<TopicConfig, RequestError> {
    let config = state.topics.add_queues(name, queues)?;
    tracing::info!(topic = %name, queues = config.queues, "queues added");
    Ok(config)
}

/// Deletes a topic, its consume queues and the groups' offsets on it (the commit-log bytes go
/// with retention).
pub(crate) fn delete(state: &BrokerState, name: &str) -> Result<(), RequestError> {
    state.topics.delete(name)?;
    state.long_poll.remove_topic(name);
    state.offsets.remove_topic(name);
    state.shared.remove_topic(name);
    state.log.delete_queues(name)?;
    tracing::info!(topic = %name, "topic deleted");
    Ok(())
}

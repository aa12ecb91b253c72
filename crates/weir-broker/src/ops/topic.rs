//! Topic administration: create, delete, and a topic's queues with their offsets.

use weir_proto::ErrorCode;
use weir_store::QueueOffsets;

use crate::core::state_change::StateChange;
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

/// Creates a topic a client asked for (0 queues = the broker's default). In a broker group
/// the change goes through the group's log and every replica applies it.
pub(crate) async fn create(
    state: &BrokerState,
    name: &str,
    queues: u32,
) -> Result<TopicConfig, RequestError> {
    topics::validate_name(name)?;
    let queues = match queues {
        0 => state.config.default_queues,
        n => n,
    };
    let config = if state.log.is_replicated() {
        if state.topics.get(name).is_some() {
            return Err(RequestError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        topics::check_queue_count(queues)?;
        let change = StateChange::TopicCreated {
            name: name.to_owned(),
            queues,
        };
        through_log(state, change, name).await?
    } else {
        state.topics.create(name, queues)?
    };
    tracing::info!(topic = %name, queues, "topic created");
    Ok(config)
}

/// A topic's settings, creating it with the broker's default queue count when it does not
/// exist (auto-creation on produce or on a Kafka client's metadata request). In a broker group
/// the creation goes through the log like any other, so every replica and every later leader
/// knows the topic; two callers racing both get the one topic.
pub(crate) async fn get_or_create(
    state: &BrokerState,
    name: &str,
) -> Result<TopicConfig, RequestError> {
    if let Some(config) = state.topics.get(name) {
        return Ok(config);
    }
    topics::validate_name(name)?;
    let queues = state.config.default_queues;
    let config = if state.log.is_replicated() {
        let change = StateChange::TopicCreated {
            name: name.to_owned(),
            queues,
        };
        through_log(state, change, name).await?
    } else {
        state.topics.get_or_create(name, queues)?
    };
    tracing::info!(topic = %name, queues = config.queues, "topic auto-created");
    Ok(config)
}

/// Makes a change to topic `name` through the group's log; its settings once the change is
/// applied here.
async fn through_log(
    state: &BrokerState,
    change: StateChange,
    name: &str,
) -> Result<TopicConfig, RequestError> {
    state.log.propose(change).await?;
    state.topics.get(name).ok_or_else(|| {
        RequestError::new(
            ErrorCode::TopicNotFound,
            format!("topic '{name}' was deleted meanwhile"),
        )
    })
}

/// Grows a topic to `queues` queues in total.
pub(crate) async fn add_queues(
    state: &BrokerState,
    name: &str,
    queues: u32,
) -> Result<TopicConfig, RequestError> {
    let config = if state.log.is_replicated() {
        let now = state.topics.queues(name)?;
        topics::check_queue_count(queues)?;
        if queues <= now {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "topic '{name}' has {now} queues; the new count must be larger, not {queues}"
                ),
            ));
        }
        let change = StateChange::QueuesAdded {
            name: name.to_owned(),
            queues,
        };
        through_log(state, change, name).await?
    } else {
        state.topics.add_queues(name, queues)?
    };
    tracing::info!(topic = %name, queues = config.queues, "queues added");
    Ok(config)
}

/// Deletes a topic, its consume queues and the groups' offsets on it (the commit-log bytes go
/// with retention).
pub(crate) async fn delete(state: &BrokerState, name: &str) -> Result<(), RequestError> {
    if state.log.is_replicated() {
        state.topics.queues(name)?;
        let change = StateChange::TopicDeleted {
            name: name.to_owned(),
        };
        state.log.propose(change).await?;
        state.long_poll.remove_topic(name);
        tracing::info!(topic = %name, "topic deleted");
        return Ok(());
    }
    state.topics.delete(name)?;
    state.long_poll.remove_topic(name);
    state.offsets.remove_topic(name);
    state.shared.remove_topic(name);
    state.log.delete_queues(name)?;
    tracing::info!(topic = %name, "topic deleted");
    Ok(())
}

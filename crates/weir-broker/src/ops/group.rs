//! Consumer groups as an administrator sees them: listing, describing with lag, resetting
//! offsets.

use std::collections::{BTreeMap, BTreeSet};

use weir_proto::ErrorCode;
use weir_store::QueueOffsets;

use crate::broker::BrokerState;
use crate::error::RequestError;
use crate::group::{MemberView, QueueKey};

/// A queue a group reads, with its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupQueue {
    /// The topic.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// The queue's readable range.
    pub offsets: QueueOffsets,
    /// The group's committed offset, if it committed one.
    pub committed: Option<u64>,
    /// Messages the group has still to consume: see [`lag`].
    pub lag: u64,
    /// The member owning the queue; empty for none.
    pub owner: String,
}

/// A group's live members and every queue it reads or has offsets on.
#[derive(Debug)]
pub(crate) struct GroupDescription {
    /// Live members, by id.
    pub members: Vec<MemberView>,
    /// Queues by topic and id.
    pub queues: Vec<GroupQueue>,
}

/// Where to reset a group's offsets to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetTarget {
    /// Each queue's oldest readable message.
    Earliest,
    /// Past each queue's newest message.
    Latest,
    /// Each queue's first message stored at or after this time, ms since the Unix epoch.
    Timestamp(i64),
}

/// Messages between a group's position and the end of a queue. A group with no committed
/// offset, or one below the queue's minimum (retention moved it), is counted from the minimum.
pub(crate) fn lag(offsets: QueueOffsets, committed: Option<u64>) -> u64 {
    let position = committed.unwrap_or(offsets.min).max(offsets.min);
    offsets.max.saturating_sub(position)
}

/// Groups with live members or committed offsets, sorted.
pub(crate) fn list(state: &BrokerState) -> Vec<String> {
    let groups: BTreeSet<String> = state
        .groups
        .groups()
        .into_iter()
        .chain(state.offsets.groups())
        .collect();
    groups.into_iter().collect()
}

/// A group's members and, per queue, its offsets, committed offset, lag and owner; or
/// `group_not_found` when it has neither live members nor offsets.
pub(crate) fn describe(state: &BrokerState, group: &str) -> Result<GroupDescription, RequestError> {
    let view = state
        .groups
        .describe(group, &|topic| state.queues_of(topic));
    let committed = state.offsets.group_offsets(group);
    if view.is_none() && committed.is_empty() {
        return Err(RequestError::new(
            ErrorCode::GroupNotFound,
            format!("group {group:?} has no members and no offsets"),
        ));
    }
    let mut queues: BTreeMap<QueueKey, Option<u64>> = BTreeMap::new();
    if let Some(view) = &view {
        for topic in &view.topics {
            for queue_id in 0..state.queues_of(topic) {
                queues.insert((topic.clone(), queue_id), None);
            }
        }
    }
    for (topic, queue_id, offset) in committed {
        if queue_id < state.queues_of(&topic) {
            queues.insert((topic, queue_id), Some(offset));
        }
    }
    let queues = queues
        .into_iter()
        .map(|((topic, queue_id), committed)| {
            let offsets = state.store.queue_offsets(&topic, queue_id);
            let owner = view
                .as_ref()
                .and_then(|v| v.owners.get(&(topic.clone(), queue_id)).cloned())
                .unwrap_or_default();
            GroupQueue {
                lag: lag(offsets, committed),
                topic,
                queue_id,
                offsets,
                committed,
                owner,
            }
        })
        .collect();
    Ok(GroupDescription {
        members: view.map(|v| v.members).unwrap_or_default(),
        queues,
    })
}

/// Sets a group's offset on every queue of a topic and returns them by queue id; refused
/// while the group has live members.
pub(crate) fn reset(
    state: &BrokerState,
    group: &str,
    topic: &str,
    to: ResetTarget,
) -> Result<Vec<(u32, u64)>, RequestError> {
    if group.is_empty() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "group must be set",
        ));
    }
    let queues = state.topics.queues(topic)?;
    if state.groups.has_members(group) {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            format!("group {group:?} has live members; stop them before resetting its offsets"),
        ));
    }
    let mut entries = Vec::with_capacity(queues as usize);
    for queue_id in 0..queues {
        let offsets = state.store.queue_offsets(topic, queue_id);
        let offset = match to {
            ResetTarget::Earliest => offsets.min,
            ResetTarget::Latest => offsets.max,
            ResetTarget::Timestamp(ts) => state.store.offset_for_time(topic, queue_id, ts)?,
        };
        entries.push((queue_id, offset));
    }
    for &(queue_id, offset) in &entries {
        state.offsets.set(group, topic, queue_id, offset);
    }
    tracing::info!(group = %group, topic = %topic, ?to, "offsets reset");
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_minimum() {
        let offsets = QueueOffsets { min: 10, max: 100 };
        assert_eq!(lag(offsets, None), 90);
        assert_eq!(lag(offsets, Some(4)), 90);
        assert_eq!(lag(offsets, Some(40)), 60);
        assert_eq!(lag(offsets, Some(100)), 0);
        assert_eq!(lag(offsets, Some(150)), 0);
    }
}

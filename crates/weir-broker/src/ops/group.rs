//! Consumer groups as an administrator sees them: listing, describing with lag, resetting
//! offsets.

use std::collections::{BTreeMap, BTreeSet};

use weir_proto::ErrorCode;
use weir_store::QueueOffsets;

use crate::error::RequestError;
use crate::features::groups::classic::assignment::consumer_assignment;
use crate::features::groups::coordinator::{MemberView, Mode, QueueKey};
use crate::features::groups::shared::SharedQueueView;
use crate::state::BrokerState;

/// How a group consumes, as listed and described. Sorted as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum GroupMode {
    /// Queues owned by one member at a time; offsets kept by the broker.
    Clustering,
    /// Every member reads every queue; offsets kept by the members.
    Broadcast,
    /// Any receiver takes any message, acked one by one (`shared_group.rs`).
    Shared,
}

impl GroupMode {
    /// The name in JSON and in the CLI.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupMode::Clustering => "clustering",
            GroupMode::Broadcast => "broadcast",
            GroupMode::Shared => "shared",
        }
    }
}

impl From<Mode> for GroupMode {
    fn from(mode: Mode) -> GroupMode {
        match mode {
            Mode::Clustering => GroupMode::Clustering,
            Mode::Broadcast => GroupMode::Broadcast,
        }
    }
}

/// A group and how it consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupListing {
    /// The group.
    pub group: String,
    /// Its modes, sorted: one name can be used by members and by shared receivers.
    pub modes: Vec<GroupMode>,
}

/// A shared group's progress on a queue (see `shared_group.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedProgress {
    /// Every offset below it is acked or gone.
    pub low_water: u64,
    /// The next offset never delivered.
    pub cursor: u64,
    /// Deliveries not acked yet.
    pub in_flight: u64,
    /// Acked offsets above `low_water`.
    pub acked_above: u64,
}

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
    /// How the group reads the queue.
    pub mode: GroupMode,
    /// A shared group's progress; then `committed` is `None` and `lag` counts the messages
    /// not acked.
    pub shared: Option<SharedProgress>,
}

/// A group's live members and every queue it reads, has offsets on or received from.
#[derive(Debug)]
pub(crate) struct GroupDescription {
    /// How it consumes, sorted.
    pub modes: Vec<GroupMode>,
    /// Live members, by id.
    pub members: Vec<MemberView>,
    /// Live members joined over Kafka's group protocol, leader first.
    pub kafka_members: Vec<KafkaMember>,
    /// Queues by mode, topic and id.
    pub queues: Vec<GroupQueue>,
}

/// A live member of a group joined over Kafka's classic group protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaMember {
    /// Its member id.
    pub member_id: String,
    /// The client id it gave.
    pub client_id: String,
    /// The host it connects from.
    pub client_host: String,
    /// The partitions (queues) its group's leader assigned it; empty while the group
    /// rebalances.
    pub assigned: Vec<QueueKey>,
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

/// Groups with live members, committed offsets or shared-group state, sorted, with their
/// modes. A group without live members but with offsets is a clustering one: only those commit
/// offsets to the broker.
pub(crate) fn list(state: &BrokerState) -> Vec<GroupListing> {
    let mut groups: BTreeMap<String, BTreeSet<GroupMode>> = BTreeMap::new();
    for (group, mode) in state.groups.groups() {
        groups.entry(group).or_default().insert(mode.into());
    }
    for group in state.offsets.groups() {
        let modes = groups.entry(group).or_default();
        if modes.is_empty() {
            modes.insert(GroupMode::Clustering);
        }
    }
    for group in state.shared.groups() {
        groups.entry(group).or_default().insert(GroupMode::Shared);
    }
    for listing in state.classic_groups.list() {
        groups
            .entry(listing.group)
            .or_default()
            .insert(GroupMode::Clustering);
    }
    groups
        .into_iter()
        .map(|(group, modes)| GroupListing {
            group,
            modes: modes.into_iter().collect(),
        })
        .collect()
}

/// A group's members and, per queue, its offsets, committed offset, lag and owner, and for a
/// shared group its acked low-water mark, cursor and messages in flight; or `group_not_found`
/// when it has no live members, no offsets and never received as a shared group.
pub(crate) fn describe(state: &BrokerState, group: &str) -> Result<GroupDescription, RequestError> {
    let view = state
        .groups
        .describe(group, &|topic| state.queues_of(topic));
    let committed = state.offsets.group_offsets(group);
    let shared = state.shared.describe(
        group,
        &|topic| state.queues_of(topic),
        &|topic, queue_id| state.log.queue_offsets(topic, queue_id),
    );
    let kafka_members = kafka_members(state, group);
    if view.is_none() && committed.is_empty() && shared.is_none() && kafka_members.is_empty() {
        return Err(RequestError::new(
            ErrorCode::GroupNotFound,
            format!("group {group:?} has no members, no offsets and no shared state"),
        ));
    }
    let mut modes = BTreeSet::new();
    let member_mode = view
        .as_ref()
        .map_or(GroupMode::Clustering, |v| v.mode.into());
    if view.is_some() || !committed.is_empty() || !kafka_members.is_empty() {
        modes.insert(member_mode);
    }
    let mut queues: BTreeMap<QueueKey, Option<u64>> = BTreeMap::new();
    if let Some(view) = &view {
        for topic in &view.topics {
            for queue_id in 0..state.queues_of(topic) {
                queues.insert((topic.clone(), queue_id), None);
            }
        }
    }
    // A Kafka member's partitions, and who owns each.
    let mut kafka_owners: BTreeMap<QueueKey, String> = BTreeMap::new();
    for member in &kafka_members {
        for key in &member.assigned {
            queues.insert(key.clone(), None);
            kafka_owners.insert(key.clone(), member.member_id.clone());
        }
    }
    for (topic, queue_id, offset) in committed {
        if queue_id < state.queues_of(&topic) {
            queues.insert((topic, queue_id), Some(offset));
        }
    }
    let mut queues: Vec<GroupQueue> = queues
        .into_iter()
        .map(|((topic, queue_id), committed)| {
            let offsets = state.log.queue_offsets(&topic, queue_id);
            let owner = view
                .as_ref()
                .and_then(|v| v.owners.get(&(topic.clone(), queue_id)).cloned())
                .or_else(|| kafka_owners.get(&(topic.clone(), queue_id)).cloned())
                .unwrap_or_default();
            GroupQueue {
                lag: lag(offsets, committed),
                topic,
                queue_id,
                offsets,
                committed,
                owner,
                mode: member_mode,
                shared: None,
            }
        })
        .collect();
    if let Some(shared) = shared {
        modes.insert(GroupMode::Shared);
        queues.extend(shared.into_iter().map(shared_queue));
    }
    Ok(GroupDescription {
        modes: modes.into_iter().collect(),
        members: view.map(|v| v.members).unwrap_or_default(),
        kafka_members,
        queues,
    })
}

/// The live members of a group joined over Kafka, with the partitions of the topics Weir has
/// that their leader assigned them.
fn kafka_members(state: &BrokerState, group: &str) -> Vec<KafkaMember> {
    let Some(description) = state.classic_groups.describe(group) else {
        return Vec::new();
    };
    let consumer = description.protocol_type == "consumer";
    description
        .members
        .into_iter()
        .map(|m| KafkaMember {
            assigned: consumer
                .then(|| consumer_assignment(&m.assignment))
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    let queues = state.queues_of(&topic);
                    partitions
                        .into_iter()
                        .filter(move |p| *p < queues)
                        .map(move |p| (topic.clone(), p))
                })
                .collect(),
            member_id: m.member_id,
            client_id: m.client_id,
            client_host: m.client_host,
        })
        .collect()
}

fn shared_queue(q: SharedQueueView) -> GroupQueue {
    GroupQueue {
        topic: q.topic,
        queue_id: q.queue_id,
        offsets: q.offsets,
        committed: None,
        lag: q.unacked,
        owner: String::new(),
        mode: GroupMode::Shared,
        shared: Some(SharedProgress {
            low_water: q.low_water,
            cursor: q.cursor,
            in_flight: q.in_flight,
            acked_above: q.acked_above,
        }),
    }
}

/// Sets a group's offset on every queue of a topic and returns them by queue id; refused
/// while the group has live members. A shared group on the topic gets its acked low-water mark
/// and cursor moved there (deliveries in flight are dropped).
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
    if state.groups.has_members(group) || state.classic_groups.has_members(group) {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            format!("group {group:?} has live members; stop them before resetting its offsets"),
        ));
    }
    let mut entries = Vec::with_capacity(queues as usize);
    for queue_id in 0..queues {
        let offsets = state.log.queue_offsets(topic, queue_id);
        let offset = match to {
            ResetTarget::Earliest => offsets.min,
            ResetTarget::Latest => offsets.max,
            ResetTarget::Timestamp(ts) => state.log.offset_for_time(topic, queue_id, ts)?,
        };
        entries.push((queue_id, offset));
    }
    // A shared group on the topic is moved too; clustering offsets are set unless the name is
    // only a shared group there (so a reset does not add a clustering mode to it).
    let shared = state.shared.has(group, topic);
    if shared {
        state.shared.reset(group, topic, &entries);
    }
    let clustering = state
        .offsets
        .group_offsets(group)
        .iter()
        .any(|(t, _, _)| t == topic);
    if !shared || clustering {
        for &(queue_id, offset) in &entries {
            state.offsets.set(group, topic, queue_id, offset);
        }
    }
    tracing::info!(group = %group, topic = %topic, ?to, shared, "offsets reset");
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

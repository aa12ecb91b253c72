//! The group coordinator: consumer group members, their heartbeats, and which member owns
//! which queue.
//!
//! **Clustering** groups spread each subscribed topic's queues over the members subscribed to
//! it, sorted by member id, in contiguous ranges (RocketMQ's "averagely": the first
//! `queues % members` members get one queue more). That is the *target*. Ownership follows the
//! target with one rule that keeps two members from ever owning a queue at once:
//!
//! * a queue with no owner (or whose owner is gone) goes to its target member at once;
//! * a queue whose owner is still live but no longer its target is *released* only when the
//!   owner has been told (its heartbeat answer omitted the queue) **and** has since reported it
//!   no longer `held`. Until then the old owner keeps it: it may still pull and commit, and the
//!   new target gets nothing. A queue the owner was never told about is released at once.
//!
//! **Broadcast** groups assign every queue of a member's topics to it; nobody owns anything.
//!
//! A member is removed when its connection closes, on `LeaveGroup`, or after the session
//! timeout without a heartbeat; its queues are handed to their targets at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weir_proto::ErrorCode;

use crate::error::RequestError;

/// A queue: (topic, queue id).
pub type QueueKey = (String, u32);

pub use crate::core::session::ConnectionId;

/// How a group consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each queue is owned by one member at a time; the broker keeps the group's offsets.
    Clustering,
    /// Every member reads every queue; members keep their own offsets.
    Broadcast,
}

/// One heartbeat, as the coordinator needs it.
#[derive(Debug)]
pub struct Heartbeat {
    /// The group.
    pub group: String,
    /// The member.
    pub member_id: String,
    /// How it consumes.
    pub mode: Mode,
    /// Topics it subscribes to.
    pub topics: BTreeSet<String>,
    /// Queues it still holds.
    pub held: HashSet<QueueKey>,
    /// The connection the heartbeat came on.
    pub connection: ConnectionId,
    /// The member's address, for `DescribeGroup`.
    pub client_addr: String,
}

/// A heartbeat's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Queues the member owns now, sorted.
    pub assigned: Vec<QueueKey>,
    /// The group's membership generation.
    pub generation: u64,
}

/// A member as `DescribeGroup` shows it.
#[derive(Debug)]
pub struct MemberView {
    /// Its id.
    pub member_id: String,
    /// Its address.
    pub client_addr: String,
    /// How it consumes.
    pub mode: Mode,
    /// The queues it owns (clustering) or reads (broadcast).
    pub assigned: Vec<QueueKey>,
}

/// A group as `DescribeGroup` shows it.
#[derive(Debug)]
pub struct GroupView {
    /// How it consumes (its members' mode, as of the last heartbeat).
    pub mode: Mode,
    /// Its live members, by id.
    pub members: Vec<MemberView>,
    /// Topics its members subscribe to.
    pub topics: BTreeSet<String>,
    /// Owner of each owned queue.
    pub owners: HashMap<QueueKey, String>,
}

#[derive(Debug)]
struct Member {
    connection: ConnectionId,
    client_addr: String,
    mode: Mode,
    topics: BTreeSet<String>,
    held: HashSet<QueueKey>,
    /// The queues listed in the last answer to this member.
    told: HashSet<QueueKey>,
    last_seen: Instant,
}

#[derive(Debug)]
struct Group {
    mode: Mode,
    members: BTreeMap<String, Member>,
    owners: HashMap<QueueKey, String>,
    generation: u64,
}

/// Members and queue ownership of every live group.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    session_timeout: Duration,
}

impl GroupCoordinator {
    /// A coordinator that drops members silent for `session_timeout`.
    pub fn new(session_timeout: Duration) -> GroupCoordinator {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            session_timeout,
        }
    }

    /// Records a heartbeat and answers with the member's queues. `queues_of(topic)` is the
    /// number of queues this broker hosts for a topic (0 when none).
    pub fn heartbeat(&self, hb: Heartbeat, queues_of: &dyn Fn(&str) -> u32) -> Assignment {
        let mut groups = self.groups.lock();
        let group = groups.entry(hb.group).or_insert_with(|| Group {
            mode: hb.mode,
            members: BTreeMap::new(),
            owners: HashMap::new(),
            generation: 0,
        });
        let changed = match group.members.get(&hb.member_id) {
            Some(m) => m.topics != hb.topics || m.mode != hb.mode,
            None => true,
        };
        if changed {
            group.generation += 1;
        }
        group.mode = hb.mode;
        let member = group
            .members
            .entry(hb.member_id.clone())
            .or_insert_with(|| Member {
                connection: hb.connection,
                client_addr: String::new(),
                mode: hb.mode,
                topics: BTreeSet::new(),
                held: HashSet::new(),
                told: HashSet::new(),
                last_seen: Instant::now(),
            });
        member.connection = hb.connection;
        member.client_addr = hb.client_addr;
        member.mode = hb.mode;
        member.topics = hb.topics;
        member.held = hb.held;
        member.last_seen = Instant::now();

        let assigned: Vec<QueueKey> = match group.mode {
            Mode::Broadcast => {
                group.owners.clear();
                all_queues(&group.members[&hb.member_id].topics, queues_of)
            }
            Mode::Clustering => {
                let target = group.reconcile(queues_of);
                let mut mine: Vec<QueueKey> = group
                    .owners
                    .iter()
                    .filter(|(q, owner)| {
                        **owner == hb.member_id && target.get(*q) == Some(&hb.member_id)
                    })
                    .map(|(q, _)| q.clone())
                    .collect();
                mine.sort();
                mine
            }
        };
        let generation = group.generation;
        if let Some(member) = group.members.get_mut(&hb.member_id) {
            member.told = assigned.iter().cloned().collect();
        }
        Assignment {
            assigned,
            generation,
        }
    }

    /// Removes a member (it sent `LeaveGroup`); its queues go to their targets at once.
    pub fn leave(&self, group: &str, member_id: &str, queues_of: &dyn Fn(&str) -> u32) -> bool {
        let mut groups = self.groups.lock();
        let removed = match groups.get_mut(group) {
            Some(g) => g.remove_members(|id, _| id == member_id, queues_of),
            None => false,
        };
        groups.retain(|_, g| !g.members.is_empty());
        removed
    }

    /// Removes every member that heartbeated on a connection that just closed.
    pub fn connection_closed(&self, connection: ConnectionId, queues_of: &dyn Fn(&str) -> u32) {
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            group.remove_members(|_, m| m.connection == connection, queues_of);
        }
        groups.retain(|_, g| !g.members.is_empty());
    }

    /// Removes members silent for longer than the session timeout; returns how many.
    pub fn expire(&self, queues_of: &dyn Fn(&str) -> u32) -> usize {
        let now = Instant::now();
        let timeout = self.session_timeout;
        let mut groups = self.groups.lock();
        let mut count = 0;
        for group in groups.values_mut() {
            let before = group.members.len();
            group.remove_members(|_, m| now.duration_since(m.last_seen) > timeout, queues_of);
            count += before - group.members.len();
        }
        groups.retain(|_, g| !g.members.is_empty());
        count
    }

    /// Checks that `member_id` may pull a queue: anyone may in broadcast mode or when the
    /// group has no live members; in clustering mode only the queue's owner.
    pub fn check_pull(
        &self,
        group: &str,
        member_id: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<(), RequestError> {
        let groups = self.groups.lock();
        let Some(g) = groups.get(group) else {
            return Ok(());
        };
        if g.mode == Mode::Broadcast {
            return Ok(());
        }
        match g.owners.get(&(topic.to_owned(), queue_id)) {
            Some(owner) if owner == member_id => Ok(()),
            owner => Err(RequestError::new(
                ErrorCode::NotQueueOwner,
                format!(
                    "member '{member_id}' of group '{group}' does not own {topic}:{queue_id} \
                     (owner: {})",
                    owner.map_or("none", String::as_str)
                ),
            )),
        }
    }

    /// Whether a commit by `member_id` for a queue is to be stored: not in broadcast mode, and
    /// not when another live member owns the queue.
    pub fn may_commit(&self, group: &str, member_id: &str, topic: &str, queue_id: u32) -> bool {
        let groups = self.groups.lock();
        let Some(g) = groups.get(group) else {
            return true;
        };
        if g.mode == Mode::Broadcast {
            return false;
        }
        match g.owners.get(&(topic.to_owned(), queue_id)) {
            Some(owner) => owner == member_id,
            None => true,
        }
    }

    /// Whether the group has live members.
    pub fn has_members(&self, group: &str) -> bool {
        self.groups.lock().contains_key(group)
    }

    /// Groups with live members, with how each consumes.
    pub fn groups(&self) -> Vec<(String, Mode)> {
        self.groups
            .lock()
            .iter()
            .map(|(name, g)| (name.clone(), g.mode))
            .collect()
    }

    /// The group's members and owners, if it has live members.
    pub fn describe(&self, group: &str, queues_of: &dyn Fn(&str) -> u32) -> Option<GroupView> {
        let groups = self.groups.lock();
        let g = groups.get(group)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| {
                let mut assigned: Vec<QueueKey> = match g.mode {
                    Mode::Broadcast => all_queues(&m.topics, queues_of),
                    Mode::Clustering => g
                        .owners
                        .iter()
                        .filter(|(_, owner)| *owner == id)
                        .map(|(q, _)| q.clone())
                        .collect(),
                };
                assigned.sort();
                MemberView {
                    member_id: id.clone(),
                    client_addr: m.client_addr.clone(),
                    mode: m.mode,
                    assigned,
                }
            })
            .collect();
        Some(GroupView {
            mode: g.mode,
            members,
            topics: g
                .members
                .values()
                .flat_map(|m| m.topics.iter().cloned())
                .collect(),
            owners: g.owners.clone(),
        })
    }
}

impl Group {
    /// Removes the members `gone` selects; returns whether any was removed.
    fn remove_members(
        &mut self,
        gone: impl Fn(&str, &Member) -> bool,
        queues_of: &dyn Fn(&str) -> u32,
    ) -> bool {
        let before = self.members.len();
        self.members.retain(|id, m| !gone(id, m));
        if self.members.len() == before {
            return false;
        }
        self.generation += 1;
        if self.mode == Mode::Clustering {
            self.reconcile(queues_of);
        }
        true
    }

    /// Moves ownership towards the target assignment (see the module docs) and returns the
    /// target.
    fn reconcile(&mut self, queues_of: &dyn Fn(&str) -> u32) -> HashMap<QueueKey, String> {
        let target = self.target(queues_of);
        let members = &self.members;
        self.owners.retain(|queue, owner| {
            let Some(member) = members.get(owner) else {
                return false;
            };
            match target.get(queue) {
                None => false,
                Some(t) if t == owner => true,
                // Keep it until the owner was told and reported it no longer held.
                Some(_) => member.held.contains(queue) || member.told.contains(queue),
            }
        });
        for (queue, member) in &target {
            self.owners
                .entry(queue.clone())
                .or_insert_with(|| member.clone());
        }
        target
    }

    /// Each subscribed queue's target member: per topic, the subscribed members sorted by id
    /// take contiguous ranges of the queues, the first `queues % members` one queue more.
    fn target(&self, queues_of: &dyn Fn(&str) -> u32) -> HashMap<QueueKey, String> {
        let topics: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        let mut target = HashMap::new();
        for topic in topics {
            let subscribers: Vec<&String> = self
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(topic))
                .map(|(id, _)| id)
                .collect();
            let queues = queues_of(topic);
            for (i, member) in subscribers.iter().enumerate() {
                for queue in averagely(queues, subscribers.len() as u32, i as u32) {
                    target.insert((topic.clone(), queue), (*member).clone());
                }
            }
        }
        target
    }
}

/// The queues member `index` of `members` gets of `queues` (RocketMQ's averagely strategy).
fn averagely(queues: u32, members: u32, index: u32) -> std::ops::Range<u32> {
    if members == 0 {
        return 0..0;
    }
    let base = queues / members;
    let extra = queues % members;
    let start = index * base + index.min(extra);
    let len = base + u32::from(index < extra);
    start.min(queues)..(start + len).min(queues)
}

fn all_queues(topics: &BTreeSet<String>, queues_of: &dyn Fn(&str) -> u32) -> Vec<QueueKey> {
    topics
        .iter()
        .flat_map(|t| (0..queues_of(t)).map(move |q| (t.clone(), q)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(member: &str, connection: ConnectionId, held: &[QueueKey]) -> Heartbeat {
        Heartbeat {
            group: "g".to_owned(),
            member_id: member.to_owned(),
            mode: Mode::Clustering,
            topics: ["t".to_owned()].into_iter().collect(),
            held: held.iter().cloned().collect(),
            connection,
            client_addr: String::new(),
        }
    }

    fn four(_: &str) -> u32 {
        4
    }

    fn q(ids: &[u32]) -> Vec<QueueKey> {
        ids.iter().map(|i| ("t".to_owned(), *i)).collect()
    }

    #[test]
    fn averagely_splits_contiguously() {
        assert_eq!(averagely(4, 3, 0), 0..2);
        assert_eq!(averagely(4, 3, 1), 2..3);
        assert_eq!(averagely(4, 3, 2), 3..4);
        assert_eq!(averagely(2, 3, 2), 2..2);
        assert_eq!(averagely(8, 2, 1), 4..8);
    }

    #[test]
    fn hand_off_waits_for_release() {
        let c = GroupCoordinator::new(Duration::from_secs(10));
        assert_eq!(
            c.heartbeat(hb("a", 1, &[]), &four).assigned,
            q(&[0, 1, 2, 3])
        );
        // b joins: a still holds everything, so b gets nothing yet and a is told to drop 2, 3.
        assert_eq!(c.heartbeat(hb("b", 2, &[]), &four).assigned, q(&[]));
        assert_eq!(
            c.heartbeat(hb("a", 1, &q(&[0, 1, 2, 3])), &four).assigned,
            q(&[0, 1])
        );
        assert!(c.check_pull("g", "a", "t", 2).is_ok());
        assert!(c.check_pull("g", "b", "t", 2).is_err());
        assert_eq!(c.heartbeat(hb("b", 2, &[]), &four).assigned, q(&[]));
        // a reports 2 and 3 released: b gets them.
        assert_eq!(
            c.heartbeat(hb("a", 1, &q(&[0, 1])), &four).assigned,
            q(&[0, 1])
        );
        assert_eq!(c.heartbeat(hb("b", 2, &[]), &four).assigned, q(&[2, 3]));
        assert!(c.check_pull("g", "b", "t", 2).is_ok());
        // a's connection closes: b gets everything at once.
        c.connection_closed(1, &four);
        assert_eq!(
            c.heartbeat(hb("b", 2, &q(&[2, 3])), &four).assigned,
            q(&[0, 1, 2, 3])
        );
    }

    #[test]
    fn expiry_and_leave_remove_members() {
        let c = GroupCoordinator::new(Duration::from_millis(1));
        c.heartbeat(hb("a", 1, &[]), &four);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.expire(&four), 1);
        assert!(!c.has_members("g"));
        c.heartbeat(hb("a", 1, &[]), &four);
        assert!(c.leave("g", "a", &four));
        assert!(!c.has_members("g"));
    }
}

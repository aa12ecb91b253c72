//! Kafka's classic consumer-group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup and
//! the member checks of OffsetCommit), as a protocol-neutral coordinator: plain Rust types in
//! and out, [`ClassicError`]s for Kafka's group error codes. The Kafka edge
//! (`protocols/kafka/groups.rs`) decodes and encodes.
//!
//! Unlike Weir's native groups (`coordinator.rs`), the broker does not assign partitions here:
//! members join, one of them (the leader) computes the assignment with the protocol (assignor)
//! every member supports, and the broker hands each member its part. [`group`] holds the state
//! machine of one group; this module keeps the groups, mints member ids, enforces the limits
//! and makes joins and syncs wait (on `oneshot` channels, checking deadlines as they come)
//! until their rebalance completes.
//!
//! A group name is used by one protocol at a time: a join is refused while native members use
//! the group ([`GroupCoordinator::has_members`]), and the native side refuses a member while
//! [`ClassicGroups::has_members`] is true for its group.

pub mod assignment;
mod error;
mod group;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

pub use self::error::ClassicError;
use self::group::{Group, Step};
use super::coordinator::GroupCoordinator;

/// Limits and timings of the classic coordinator.
#[derive(Debug, Clone)]
pub struct ClassicSettings {
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`); each new member within it extends it, up to the
    /// rebalance timeout.
    pub initial_rebalance_delay: Duration,
    /// Shortest session timeout a member may ask for.
    pub min_session_timeout: Duration,
    /// Longest session timeout a member may ask for.
    pub max_session_timeout: Duration,
    /// Most members (and members-to-be) of one group.
    pub max_members: usize,
    /// Most groups coordinated at once.
    pub max_groups: usize,
    /// Largest protocol metadata one member may send, over all its protocols, bytes.
    pub max_metadata_bytes: usize,
    /// Largest assignment the leader may give one member, bytes.
    pub max_assignment_bytes: usize,
    /// Most protocols one member may list.
    pub max_protocols: usize,
}

impl Default for ClassicSettings {
    fn default() -> ClassicSettings {
        ClassicSettings {
            initial_rebalance_delay: Duration::ZERO,
            min_session_timeout: Duration::from_millis(1_000),
            max_session_timeout: Duration::from_secs(30 * 60),
            max_members: 1_000,
            max_groups: 10_000,
            max_metadata_bytes: 1 << 20,
            max_assignment_bytes: 1 << 20,
            max_protocols: 32,
        }
    }
}

/// One protocol (assignor) a member supports, with its metadata (for consumers: the topics it
/// subscribes to and, with cooperative assignors, the partitions it owns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Its name (`range`, `roundrobin`, `cooperative-sticky`, ...).
    pub name: String,
    /// Opaque to the broker.
    pub metadata: Bytes,
}

/// A JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The group.
    pub group: String,
    /// Empty on a first join.
    pub member_id: String,
    /// A static member's `group.instance.id`.
    pub instance_id: Option<String>,
    /// The client's id (a member id's prefix; shown by DescribeGroups).
    pub client_id: String,
    /// The client's host (shown by DescribeGroups).
    pub client_host: String,
    /// Without a heartbeat for this long the member is removed.
    pub session_timeout: Duration,
    /// How long a rebalance waits for the members to join again.
    pub rebalance_timeout: Duration,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// The protocols it supports, most preferred first.
    pub protocols: Vec<Protocol>,
    /// A first join (empty member id, no instance id) is answered
    /// [`ClassicError::MemberIdRequired`] (JoinGroup v4+) instead of joining at once.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its join answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Its member id.
    pub member_id: String,
    /// Its instance id, if static.
    pub instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A completed join: the new generation as this member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The group's generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen protocol (assignor).
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member, for the leader; empty for the others.
    pub members: Vec<JoinedMember>,
    /// The leader need not compute an assignment (a static leader came back to a stable
    /// group; JoinGroup v9+).
    pub skip_assignment: bool,
}

/// A SyncGroup.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The group.
    pub group: String,
    /// The generation the member joined.
    pub generation: i32,
    /// The member.
    pub member_id: String,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    /// The protocol type the member expects (SyncGroup v5+).
    pub protocol_type: Option<String>,
    /// The protocol the member expects (SyncGroup v5+).
    pub protocol: Option<String>,
    /// The leader's assignment: member id → its part. Empty for the other members.
    pub assignments: Vec<(String, Bytes)>,
}

/// A completed sync: the member's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The group's protocol type.
    pub protocol_type: String,
    /// The group's protocol.
    pub protocol: String,
    /// This member's part of the leader's assignment.
    pub assignment: Bytes,
}

/// A group's state, named as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for the members to join again.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// No such group.
    Dead,
}

impl GroupState {
    /// Kafka's name for it (ListGroups, DescribeGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group.
    pub group: String,
    /// Its protocol type (empty while it has none).
    pub protocol_type: String,
    /// Its state.
    pub state: GroupState,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Its member id.
    pub member_id: String,
    /// Its instance id, if static.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its host.
    pub client_host: String,
    /// Its metadata for the group's protocol (empty unless the group is stable).
    pub metadata: Bytes,
    /// Its assignment (empty unless the group is stable).
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Its state.
    pub state: GroupState,
    /// Its protocol type.
    pub protocol_type: String,
    /// Its protocol (assignor) in this generation.
    pub protocol: String,
    /// Its members, leader first.
    pub members: Vec<MemberDescription>,
}

/// Every classic group this broker coordinates.
#[derive(Debug)]
pub struct ClassicGroups {
    groups: Mutex<HashMap<String, Group>>,
    settings: ClassicSettings,
    /// The native coordinator: a group it has live members in is not joined here.
    native: Arc<GroupCoordinator>,
    /// Member ids: a per-start random base plus a counter, so ids never repeat.
    next_id: AtomicU64,
}

impl ClassicGroups {
    /// A coordinator with no groups, refusing groups the native coordinator uses.
    pub fn new(settings: ClassicSettings, native: Arc<GroupCoordinator>) -> ClassicGroups {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        ClassicGroups {
            groups: Mutex::new(HashMap::new()),
            settings,
            native,
            next_id: AtomicU64::new(base),
        }
    }

    fn mint_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let prefix: String = prefix.chars().take(64).collect();
        let prefix = if prefix.is_empty() { "member" } else { &prefix };
        format!("{prefix}-{n:016x}")
    }

    fn check_request(&self, request: &JoinRequest) -> Result<(), ClassicError> {
        weir_proto::validate_group_name(&request.group)
            .map_err(|e| ClassicError::InvalidGroupId(e.to_string()))?;
        let s = &self.settings;
        if request.session_timeout < s.min_session_timeout
            || request.session_timeout > s.max_session_timeout
        {
            return Err(ClassicError::InvalidSessionTimeout {
                asked_ms: request.session_timeout.as_millis() as i64,
                min_ms: s.min_session_timeout.as_millis() as u64,
                max_ms: s.max_session_timeout.as_millis() as u64,
            });
        }
        if request.protocols.len() > s.max_protocols {
            return Err(ClassicError::TooLarge {
                what: "the protocol list",
                len: request.protocols.len(),
                max: s.max_protocols,
            });
        }
        let metadata: usize = request.protocols.iter().map(|p| p.metadata.len()).sum();
        if metadata > s.max_metadata_bytes {
            return Err(ClassicError::TooLarge {
                what: "the protocol metadata",
                len: metadata,
                max: s.max_metadata_bytes,
            });
        }
        if self.native.has_members(&request.group) {
            return Err(ClassicError::InUseByNative(request.group.clone()));
        }
        Ok(())
    }

    /// A JoinGroup: answers once the group's rebalance completes (or at once with an error,
    /// or when nothing changed for a known member).
    pub async fn join(&self, request: JoinRequest) -> Result<Joined, ClassicError> {
        self.check_request(&request)?;
        let group_name = request.group.clone();
        let step = {
            let mut groups = self.groups.lock();
            let count = groups.len();
            let group = match groups.get_mut(&group_name) {
                Some(group) => group,
                None if count >= self.settings.max_groups => {
                    return Err(ClassicError::TooManyGroups(self.settings.max_groups));
                }
                None => groups
                    .entry(group_name.clone())
                    .or_insert_with(|| Group::new(group_name.clone())),
            };
            let step = group.join(
                request,
                &self.settings,
                &mut |prefix| self.mint_id(prefix),
                Instant::now(),
            );
            if group.is_idle() {
                groups.remove(&group_name);
            }
            step
        };
        self.finish(&group_name, step).await
    }

    /// A SyncGroup: the leader's sync stores the assignment; every member's sync answers with
    /// its part once the leader's has come.
    pub async fn sync(&self, request: SyncRequest) -> Result<Synced, ClassicError> {
        let group_name = request.group.clone();
        let step = {
            let mut groups = self.groups.lock();
            match groups.get_mut(&group_name) {
                Some(group) => group.sync(request, &self.settings, Instant::now()),
                None => Step::Done(Err(ClassicError::UnknownMember(request.member_id))),
            }
        };
        self.finish(&group_name, step).await
    }

    /// Waits for a join's or sync's answer, moving the group's deadlines on as they come (so
    /// a rebalance completes on time even when no other request arrives).
    async fn finish<T>(&self, group: &str, step: Step<T>) -> Result<T, ClassicError> {
        let mut answer = match step {
            Step::Done(result) => return result,
            Step::Wait(rx) => rx,
        };
        loop {
            let next = self.groups.lock().get(group).and_then(Group::next_deadline);
            // Without a deadline, look again in a while (the answer normally comes first).
            let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                result = &mut answer => {
                    // A dropped sender: the member was replaced by a newer join of its own.
                    return result.unwrap_or(Err(ClassicError::RebalanceInProgress));
                }
                () = tokio::time::sleep_until(wake) => {
                    let mut groups = self.groups.lock();
                    if let Some(g) = groups.get_mut(group) {
                        g.expire(Instant::now());
                        if g.is_idle() {
                            groups.remove(group);
                        }
                    }
                }
            }
        }
    }

    /// A Heartbeat.
    pub fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ClassicError> {
        match self.groups.lock().get_mut(group) {
            Some(g) => g.heartbeat(generation, member_id, instance_id, Instant::now()),
            None => Err(ClassicError::UnknownMember(member_id.to_owned())),
        }
    }

    /// A member leaves (by member id, or by instance id alone with an empty member id);
    /// returns its member id. The others rebalance.
    pub fn leave(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<String, ClassicError> {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return Err(ClassicError::UnknownMember(member_id.to_owned()));
        };
        let left = g.leave(member_id, instance_id, Instant::now());
        if g.is_idle() {
            groups.remove(group);
        }
        left
    }

    /// Whether an OffsetCommit by this member may be stored: refused while native members use
    /// the group; a group without members takes generation -1 commits from anyone (clients
    /// that `assign()` partitions themselves); otherwise the member and generation must be
    /// current.
    pub fn check_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ClassicError> {
        if self.native.has_members(group) {
            return Err(ClassicError::InUseByNative(group.to_owned()));
        }
        match self.groups.lock().get_mut(group) {
            Some(g) => g.check_commit(generation, member_id, instance_id, Instant::now()),
            None if generation < 0 => Ok(()),
            None => Err(ClassicError::IllegalGeneration {
                asked: generation,
                current: 0,
            }),
        }
    }

    /// Whether the group has classic members (the native protocol then refuses its members).
    pub fn has_members(&self, group: &str) -> bool {
        self.groups
            .lock()
            .get(group)
            .is_some_and(Group::has_members)
    }

    /// Every group with members, by name.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut listed: Vec<GroupListing> = self
            .groups
            .lock()
            .iter()
            .filter(|(_, g)| g.has_members())
            .map(|(name, g)| GroupListing {
                group: name.clone(),
                protocol_type: g.protocol_type().unwrap_or("").to_owned(),
                state: g.state(),
            })
            .collect();
        listed.sort_by(|a, b| a.group.cmp(&b.group));
        listed
    }

    /// A group's state and members, if it has members.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        let g = groups.get(group).filter(|g| g.has_members())?;
        Some(GroupDescription {
            state: g.state(),
            protocol_type: g.protocol_type().unwrap_or("").to_owned(),
            protocol: g.protocol().unwrap_or("").to_owned(),
            members: g.describe_members(),
        })
    }

    /// Removes members whose session expired, completes rebalances and syncs whose deadline
    /// passed and forgets groups left without members; returns how many members were removed.
    /// The broker's chores call it every second.
    pub fn expire(&self, now: Instant) -> usize {
        let mut groups = self.groups.lock();
        let removed = groups.values_mut().map(|g| g.expire(now)).sum();
        groups.retain(|_, g| !g.is_idle());
        removed
    }
}

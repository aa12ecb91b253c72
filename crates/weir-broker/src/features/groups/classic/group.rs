//! One classic group's state machine: its members, generation, leader and protocol, and the
//! joins and syncs waiting on a rebalance.
//!
//! ```text
//!            first join                  all members joined (or the           leader's
//!   Empty ───────────────▶ Preparing ─── rebalance timeout passed) ──▶ Completing ──▶ Stable
//!     ▲                    Rebalance     generation + 1, leader and    Rebalance     SyncGroup
//!     │                      ▲  ▲        protocol chosen                  │            │
//!     └── last member gone ──┘  └── a member joins, leaves, changes ──────┴────────────┘
//!                                    its protocols, or its session expires
//! ```
//!
//! Every method takes the current time, so the machine is a pure function of its inputs and
//! the caller decides when deadlines are checked ([`Group::advance`]). Waiting joins and syncs
//! are `oneshot` senders kept on the member; completing a rebalance (or a leader's sync)
//! answers all of them at once.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use super::error::ClassicError;
use super::{
    ClassicSettings, GroupState, JoinRequest, Joined, JoinedMember, MemberDescription, Protocol,
    SyncRequest, Synced,
};
use crate::metrics_catalog::KAFKA_GROUP_REBALANCES_TOTAL;

/// Where a join's answer is sent.
pub(super) type JoinSender = oneshot::Sender<Result<Joined, ClassicError>>;
/// Where a sync's answer is sent.
pub(super) type SyncSender = oneshot::Sender<Result<Synced, ClassicError>>;

/// What a join or sync does next: answered now, or wait for the answer.
pub(super) enum Step<T> {
    /// The answer.
    Done(Result<T, ClassicError>),
    /// The answer comes on this channel once the rebalance (or the leader's sync) completes.
    Wait(oneshot::Receiver<Result<T, ClassicError>>),
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<Protocol>,
    /// What the leader assigned it in this generation.
    assignment: Bytes,
    /// Last heartbeat (or join, sync, commit).
    last_seen: Instant,
    /// Its join, waiting for the rebalance to complete.
    joining: Option<JoinSender>,
    /// Its sync, waiting for the leader's.
    syncing: Option<SyncSender>,
    /// Order of first join: the leader is the earliest joiner still present.
    seq: u64,
}

impl Member {
    fn waiting(&self) -> bool {
        self.joining.is_some() || self.syncing.is_some()
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }
}

/// One group.
#[derive(Debug)]
pub(super) struct Group {
    name: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// Static members: instance id → member id.
    instances: HashMap<String, String>,
    /// Member ids handed out with `MemberIdRequired`, until when they may join with them.
    pending: HashMap<String, Instant>,
    /// Preparing: when the join completes without the members that did not rejoin.
    rebalance_deadline: Option<Instant>,
    /// Preparing a new group: no completion before this (the initial-rebalance delay).
    delay_until: Option<Instant>,
    /// Completing: when members that did not sync are dropped and the group rebalances.
    sync_deadline: Option<Instant>,
    next_seq: u64,
}

impl Group {
    /// A new, empty group.
    pub(super) fn new(name: String) -> Group {
        Group {
            name,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            instances: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            delay_until: None,
            sync_deadline: None,
            next_seq: 0,
        }
    }

    /// The group's state.
    pub(super) fn state(&self) -> GroupState {
        self.state
    }

    /// Whether it has members (or members-to-be holding a handed-out id).
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Whether it has members.
    pub(super) fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Its protocol type ("consumer" for consumers), once a member joined.
    pub(super) fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// The protocol (assignor) chosen for the current generation.
    pub(super) fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Its members, leader first then by join order, as `DescribeGroups` shows them: their
    /// metadata and assignment only once the group is stable (as Kafka does).
    pub(super) fn describe_members(&self) -> Vec<MemberDescription> {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol.as_deref().unwrap_or("");
        let mut members: Vec<(&String, &Member)> = self.members.iter().collect();
        members.sort_by_key(|(id, m)| (Some(*id) != self.leader.as_ref(), m.seq));
        members
            .into_iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata_for(protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }

    /// A JoinGroup. `new_id` mints a member id from a prefix (client or instance id).
    pub(super) fn join(
        &mut self,
        request: JoinRequest,
        settings: &ClassicSettings,
        new_id: &mut dyn FnMut(&str) -> String,
        now: Instant,
    ) -> Step<Joined> {
        if let Err(e) = self.check_protocols(&request) {
            return Step::Done(Err(e));
        }
        if request.member_id.is_empty() {
            if let Some(instance) = &request.instance_id {
                if let Some(old_id) = self.instances.get(instance).cloned() {
                    let member_id = new_id(instance);
                    return self.replace_static(&old_id, member_id, request, now);
                }
                let member_id = new_id(instance);
                return self.add_member(member_id, request, settings, now);
            }
            let member_id = new_id(&request.client_id);
            if request.require_known_member_id {
                if self.members.len() + self.pending.len() >= settings.max_members {
                    return Step::Done(Err(ClassicError::GroupFull(settings.max_members)));
                }
                self.pending
                    .insert(member_id.clone(), now + request.session_timeout);
                return Step::Done(Err(ClassicError::MemberIdRequired(member_id)));
            }
            return self.add_member(member_id, request, settings, now);
        }
        if self.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            return self.add_member(member_id, request, settings, now);
        }
        if let Err(e) = self.check_member(&request.member_id, request.instance_id.as_deref()) {
            return Step::Done(Err(e));
        }
        self.rejoin(request, now)
    }

    /// The member's protocol type and protocols fit the group's (and each other's).
    fn check_protocols(&self, request: &JoinRequest) -> Result<(), ClassicError> {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(ClassicError::InconsistentProtocol(
                "a join needs a protocol type and at least one protocol".to_owned(),
            ));
        }
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| **id != request.member_id)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return Err(ClassicError::InconsistentProtocol(format!(
                "group {:?} has protocol type {:?}, not {:?}",
                self.name,
                self.protocol_type.as_deref().unwrap_or(""),
                request.protocol_type
            )));
        }
        let common = request.protocols.iter().any(|p| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        });
        if common {
            Ok(())
        } else {
            Err(ClassicError::InconsistentProtocol(format!(
                "none of the protocols {:?} is supported by every member of group {:?}",
                request
                    .protocols
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>(),
                self.name
            )))
        }
    }

    /// The member id is a member, and its instance id (if given) is still its own.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ClassicError> {
        if let Some(instance) = instance_id
            && let Some(owner) = self.instances.get(instance)
            && owner != member_id
        {
            return Err(ClassicError::FencedInstance(instance.to_owned()));
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(ClassicError::UnknownMember(member_id.to_owned()))
        }
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        settings: &ClassicSettings,
        now: Instant,
    ) -> Step<Joined> {
        if self.members.len() >= settings.max_members {
            return Step::Done(Err(ClassicError::GroupFull(settings.max_members)));
        }
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.instance_id {
            self.instances.insert(instance.clone(), member_id.clone());
        }
        self.next_seq += 1;
        self.members.insert(
            member_id,
            Member {
                instance_id: request.instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                protocols: request.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                joining: Some(tx),
                syncing: None,
                seq: self.next_seq,
            },
        );
        match self.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay pushes it back (up to the deadline).
                if self.delay_until.is_some()
                    && let Some(deadline) = self.rebalance_deadline
                {
                    self.delay_until = Some((now + settings.initial_rebalance_delay).min(deadline));
                }
            }
            GroupState::Empty => {
                self.prepare_rebalance(Some(settings.initial_rebalance_delay), now);
            }
            _ => self.prepare_rebalance(None, now),
        }
        self.advance(now);
        Step::Wait(rx)
    }

    /// A known member joins again.
    fn rejoin(&mut self, request: JoinRequest, now: Instant) -> Step<Joined> {
        let member_id = request.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        let Some(member) = self.members.get_mut(&member_id) else {
            return Step::Done(Err(ClassicError::UnknownMember(member_id)));
        };
        let same = member.protocols == request.protocols;
        member.last_seen = now;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.protocols = request.protocols;
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance
                if same && !(self.state == GroupState::Stable && is_leader) =>
            {
                // Nothing changed: the member gets the current generation again.
                Step::Done(Ok(self.joined_for(&member_id, false)))
            }
            _ => self.rejoin_in_rebalance(&member_id, now),
        }
    }

    /// A static member comes back with a new member id: its slot (and assignment) passes to
    /// the new id and the old one is fenced. A stable group whose protocol stays the same does
    /// not rebalance.
    fn replace_static(
        &mut self,
        old_id: &str,
        member_id: String,
        request: JoinRequest,
        now: Instant,
    ) -> Step<Joined> {
        let Some(mut member) = self.members.remove(old_id) else {
            return Step::Done(Err(ClassicError::UnknownMember(old_id.to_owned())));
        };
        let instance = request.instance_id.clone().unwrap_or_default();
        if let Some(join) = member.joining.take() {
            let _ = join.send(Err(ClassicError::FencedInstance(instance.clone())));
        }
        if let Some(sync) = member.syncing.take() {
            let _ = sync.send(Err(ClassicError::FencedInstance(instance.clone())));
        }
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.protocols = request.protocols;
        member.last_seen = now;
        self.instances.insert(instance, member_id.clone());
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(member_id.clone());
        }
        self.members.insert(member_id.clone(), member);
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            let is_leader = self.leader.as_deref() == Some(member_id.as_str());
            return Step::Done(Ok(self.joined_for(&member_id, is_leader)));
        }
        self.rejoin_in_rebalance(&member_id, now)
    }

    /// Makes `member_id`'s join wait for the rebalance it starts (or the one under way).
    fn rejoin_in_rebalance(&mut self, member_id: &str, now: Instant) -> Step<Joined> {
        let (tx, rx) = oneshot::channel();
        if let Some(member) = self.members.get_mut(member_id) {
            member.joining = Some(tx);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(None, now);
        }
        self.advance(now);
        Step::Wait(rx)
    }

    /// The join answer for a member in the current generation: the leader gets every member's
    /// metadata for the chosen protocol.
    fn joined_for(&self, member_id: &str, skip_assignment: bool) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        let members = if is_leader {
            let mut all: Vec<(&String, &Member)> = self.members.iter().collect();
            all.sort_by_key(|(_, m)| m.seq);
            all.into_iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members,
            skip_assignment,
        }
    }

    /// Starts a rebalance: members must join again within the rebalance timeout.
    /// `initial_delay`: the group was empty, so the join waits that long for more members.
    fn prepare_rebalance(&mut self, initial_delay: Option<Duration>, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(sync) = member.syncing.take() {
                    let _ = sync.send(Err(ClassicError::RebalanceInProgress));
                }
            }
        }
        let timeout = self.rebalance_timeout();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
        self.delay_until = initial_delay.map(|delay| now + delay.min(timeout));
        self.sync_deadline = None;
    }

    /// The longest rebalance timeout of the members.
    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Completes what the time allows: a rebalance whose members all joined (after the
    /// initial delay) or whose deadline passed, a sync whose deadline passed. Returns the
    /// members removed.
    pub(super) fn advance(&mut self, now: Instant) -> usize {
        let before = self.members.len();
        self.pending.retain(|_, until| *until > now);
        match self.state {
            GroupState::PreparingRebalance => {
                let all_joined =
                    self.pending.is_empty() && self.members.values().all(|m| m.joining.is_some());
                let delayed = self.delay_until.is_some_and(|t| now < t);
                let overdue = self.rebalance_deadline.is_some_and(|t| now >= t);
                if (all_joined && !delayed) || overdue {
                    self.complete_join(now);
                }
            }
            GroupState::CompletingRebalance if self.sync_deadline.is_some_and(|t| now >= t) => {
                // The leader never sent its assignment: drop the dynamic members that did not
                // sync and start over.
                let gone: Vec<String> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.syncing.is_none() && m.instance_id.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.remove(&id);
                }
                self.prepare_rebalance(None, now);
                self.advance(now);
            }
            _ => {}
        }
        before.saturating_sub(self.members.len())
    }

    /// Ends the join phase: members that did not rejoin are dropped (static ones stay until
    /// their session expires), the generation moves on, the leader and protocol are chosen and
    /// every waiting join is answered.
    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.joining.is_none() && m.instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
        self.rebalance_deadline = None;
        self.delay_until = None;
        self.generation = self.generation.wrapping_add(1);
        metrics::counter!(KAFKA_GROUP_REBALANCES_TOTAL, "group" => self.name.clone()).increment(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        let leader_rejoined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.joining.is_some());
        if !leader_rejoined {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| (m.joining.is_none(), m.seq))
                .map(|(id, _)| id.clone());
        }
        self.protocol = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.rebalance_timeout());
        let mut answers = Vec::new();
        for (id, member) in &mut self.members {
            member.assignment = Bytes::new();
            member.last_seen = now;
            if let Some(join) = member.joining.take() {
                answers.push((id.clone(), join));
            }
        }
        for (id, join) in answers {
            let _ = join.send(Ok(self.joined_for(&id, false)));
        }
    }

    /// The protocol for the next generation: the leader's (else the earliest member's) most
    /// preferred protocol that every member supports.
    fn select_protocol(&self) -> Option<String> {
        let chooser = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().min_by_key(|m| m.seq))?;
        chooser
            .protocols
            .iter()
            .find(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|q| q.name == p.name))
            })
            .map(|p| p.name.clone())
    }

    /// Removes a member, answering its waiting join or sync with `UnknownMember`.
    fn remove(&mut self, member_id: &str) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &member.instance_id
            && self.instances.get(instance).map(String::as_str) == Some(member_id)
        {
            self.instances.remove(instance);
        }
        if let Some(join) = member.joining.take() {
            let _ = join.send(Err(ClassicError::UnknownMember(member_id.to_owned())));
        }
        if let Some(sync) = member.syncing.take() {
            let _ = sync.send(Err(ClassicError::UnknownMember(member_id.to_owned())));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// After members left: a rebalance starts (or the running one may now complete).
    fn after_removal(&mut self, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(None, now);
            }
            GroupState::Empty | GroupState::PreparingRebalance | GroupState::Dead => {}
        }
        self.advance(now);
    }

    /// A SyncGroup.
    pub(super) fn sync(
        &mut self,
        request: SyncRequest,
        settings: &ClassicSettings,
        now: Instant,
    ) -> Step<Synced> {
        if let Err(e) = self.check_member(&request.member_id, request.instance_id.as_deref()) {
            return Step::Done(Err(e));
        }
        if request.generation != self.generation {
            return Step::Done(Err(ClassicError::IllegalGeneration {
                asked: request.generation,
                current: self.generation,
            }));
        }
        if let Some(e) = self.protocol_mismatch(
            request.protocol_type.as_deref(),
            request.protocol.as_deref(),
        ) {
            return Step::Done(Err(e));
        }
        let synced = |group: &Group, assignment: Bytes| Synced {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: group.protocol.clone().unwrap_or_default(),
            assignment,
        };
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                Step::Done(Err(ClassicError::UnknownMember(request.member_id)))
            }
            GroupState::PreparingRebalance => Step::Done(Err(ClassicError::RebalanceInProgress)),
            GroupState::Stable => {
                let assignment = self
                    .members
                    .get_mut(&request.member_id)
                    .map(|m| {
                        m.last_seen = now;
                        m.assignment.clone()
                    })
                    .unwrap_or_default();
                Step::Done(Ok(synced(self, assignment)))
            }
            GroupState::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
                if is_leader
                    && let Some((_, big)) = request
                        .assignments
                        .iter()
                        .find(|(_, a)| a.len() > settings.max_assignment_bytes)
                {
                    return Step::Done(Err(ClassicError::TooLarge {
                        what: "an assignment",
                        len: big.len(),
                        max: settings.max_assignment_bytes,
                    }));
                }
                let (tx, rx) = oneshot::channel();
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    member.last_seen = now;
                    if let Some(old) = member.syncing.replace(tx) {
                        let _ = old.send(Err(ClassicError::RebalanceInProgress));
                    }
                }
                if is_leader {
                    for (id, assignment) in request.assignments {
                        if let Some(member) = self.members.get_mut(&id) {
                            member.assignment = assignment;
                        }
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let mut answers = Vec::new();
                    for member in self.members.values_mut() {
                        if let Some(sync) = member.syncing.take() {
                            answers.push((sync, member.assignment.clone()));
                        }
                    }
                    for (sync, assignment) in answers {
                        let _ = sync.send(Ok(synced(self, assignment)));
                    }
                }
                Step::Wait(rx)
            }
        }
    }

    /// A sync (v5+) naming another protocol type or protocol than the group's.
    fn protocol_mismatch(
        &self,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
    ) -> Option<ClassicError> {
        if let Some(asked) = protocol_type
            && self.protocol_type.as_deref() != Some(asked)
        {
            return Some(ClassicError::InconsistentProtocol(format!(
                "group {:?} has protocol type {:?}, not {asked:?}",
                self.name,
                self.protocol_type.as_deref().unwrap_or("")
            )));
        }
        if let Some(asked) = protocol
            && self.state != GroupState::PreparingRebalance
            && self.protocol.as_deref() != Some(asked)
        {
            return Some(ClassicError::InconsistentProtocol(format!(
                "group {:?} uses protocol {:?}, not {asked:?}",
                self.name,
                self.protocol.as_deref().unwrap_or("")
            )));
        }
        None
    }

    /// A Heartbeat: `RebalanceInProgress` tells the member to join again.
    pub(super) fn heartbeat(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ClassicError> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ClassicError::IllegalGeneration {
                asked: generation,
                current: self.generation,
            });
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_seen = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(ClassicError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => {
                Err(ClassicError::UnknownMember(member_id.to_owned()))
            }
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// A member leaves (by member id, or by instance id alone); returns its member id.
    pub(super) fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<String, ClassicError> {
        let member_id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => self
                .instances
                .get(instance)
                .cloned()
                .ok_or_else(|| ClassicError::UnknownMember(String::new()))?,
            _ => member_id.to_owned(),
        };
        if self.pending.remove(&member_id).is_some() {
            return Ok(member_id);
        }
        self.check_member(&member_id, instance_id)?;
        self.remove(&member_id);
        self.after_removal(now);
        Ok(member_id)
    }

    /// Whether a member may commit offsets for the group now (Kafka's rules: a group without
    /// members takes commits with generation -1 from anyone; otherwise the member and
    /// generation must be current, and not while the leader's assignment is awaited).
    pub(super) fn check_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ClassicError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(());
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ClassicError::IllegalGeneration {
                asked: generation,
                current: self.generation,
            });
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ClassicError::RebalanceInProgress);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_seen = now;
        }
        Ok(())
    }

    /// Removes members whose session expired (members waiting in a join or sync are alive)
    /// and rebalances; returns how many were removed.
    pub(super) fn expire(&mut self, now: Instant) -> usize {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.waiting() && now.duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        let expired = gone.len();
        for id in &gone {
            tracing::info!(group = %self.name, member = %id, "classic group member expired (no heartbeat)");
            self.remove(id);
        }
        if expired > 0 {
            self.after_removal(now);
        }
        expired + self.advance(now)
    }

    /// The next time something here is due (a deadline, a session to expire): waiting joins
    /// and syncs check the group again then.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| !m.waiting())
            .map(|m| m.last_seen + m.session_timeout);
        [
            self.rebalance_deadline,
            self.delay_until,
            self.sync_deadline,
        ]
        .into_iter()
        .flatten()
        .chain(self.pending.values().copied())
        .chain(sessions)
        .min()
    }
}

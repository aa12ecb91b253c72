//! What this replica knows of its broker group's Raft state: its role, the term, how far the
//! log is committed, and (on the leader) how far each replica has caught up.
//!
//! The replication layer publishes it on a watch channel; registration with the name servers,
//! `weir cluster status`, the HTTP status and the write path's `NOT_LEADER` answers read it.
//! A standalone broker publishes one fixed status: node 0, leader, term 0.

use tokio::sync::watch;

/// A replica's part in its broker group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaRole {
    /// Leads the group: takes writes and runs leader-only work.
    #[default]
    Leader,
    /// Follows the leader's log.
    Follower,
    /// Asking for votes.
    Candidate,
    /// Receives the log but does not vote (being added to the group).
    Learner,
    /// Stopped.
    Shutdown,
}

impl ReplicaRole {
    /// A short lowercase name, for the wire, logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ReplicaRole::Leader => "leader",
            ReplicaRole::Follower => "follower",
            ReplicaRole::Candidate => "candidate",
            ReplicaRole::Learner => "learner",
            ReplicaRole::Shutdown => "shutdown",
        }
    }

    /// The role named by [`ReplicaRole::name`].
    pub fn from_name(name: &str) -> Option<ReplicaRole> {
        [
            ReplicaRole::Leader,
            ReplicaRole::Follower,
            ReplicaRole::Candidate,
            ReplicaRole::Learner,
            ReplicaRole::Shutdown,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }
}

/// How far one replica has caught up, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaProgress {
    /// The replica's node id.
    pub node_id: u64,
    /// The last log index known to match the leader's (`None`: nothing confirmed yet).
    pub matched_index: Option<u64>,
}

/// This replica's view of its broker group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    /// This replica's node id (0 standalone).
    pub node_id: u64,
    /// Its role now.
    pub role: ReplicaRole,
    /// The Raft term it is in (the leader epoch stamped on what it writes as leader).
    pub term: u64,
    /// The group's leader, when known.
    pub leader_id: Option<u64>,
    /// The leader's native (client) address, when known: named in `NOT_LEADER` answers.
    pub leader_addr: Option<String>,
    /// The last log index known committed (on a majority).
    pub commit_index: u64,
    /// The last log index this replica holds.
    pub last_log_index: u64,
    /// The last log index applied here (readable by consumers).
    pub applied_index: u64,
    /// On the leader: every voter's and learner's progress. Empty elsewhere.
    pub replicas: Vec<ReplicaProgress>,
    /// The group's voters (node ids), as the last membership applied says.
    pub voters: Vec<u64>,
}

impl ReplicaStatus {
    /// Whether this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.role == ReplicaRole::Leader
    }
}

/// Publishes this replica's status.
pub(crate) type StatusSender = watch::Sender<ReplicaStatus>;
/// Reads this replica's status; clone one per reader.
pub(crate) type StatusReceiver = watch::Receiver<ReplicaStatus>;

/// The fixed status of a standalone broker: node 0, its group's only replica and leader.
pub(crate) fn standalone() -> (StatusSender, StatusReceiver) {
    watch::channel(ReplicaStatus::default())
}

//! Who replicates a broker group: adding a replica (a learner until it has caught up, then a
//! voter) and removing one. The replication layer implements [`Membership`]; the admin
//! requests of every protocol call it on the group's leader.

use std::future::Future;
use std::pin::Pin;

use weir_store::StoreError;

/// A broker group's replicas after a change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipView {
    /// The voting replicas' node ids.
    pub voters: Vec<u64>,
    /// The replicas that receive the log without voting.
    pub learners: Vec<u64>,
    /// Adding: the new replica votes now (false: it is still catching up as a learner).
    pub done: bool,
    /// Adding: the last log index the leader knows the new replica holds.
    pub matched_index: u64,
    /// Adding: the leader's last log index.
    pub leader_index: u64,
}

/// Membership changes of a broker group, served by its leader (elsewhere: `NotLeader`).
pub(crate) trait Membership: Send + Sync + std::fmt::Debug {
    /// Makes `node_id`, whose Raft listener the group dials at `raft_addr`, a replica: a
    /// learner at once, a voter once it has caught up with the leader's log. Waits a few
    /// seconds for that; if it has not caught up by then, answers `done: false` and is to be
    /// asked again (a learner is not added twice).
    fn add_replica(
        &self,
        node_id: u64,
        raft_addr: String,
    ) -> Pin<Box<dyn Future<Output = Result<MembershipView, StoreError>> + Send + '_>>;

    /// Takes `node_id` out of the group (a voter or a learner). Refused for the last voter.
    fn remove_replica(
        &self,
        node_id: u64,
    ) -> Pin<Box<dyn Future<Output = Result<MembershipView, StoreError>> + Send + '_>>;
}

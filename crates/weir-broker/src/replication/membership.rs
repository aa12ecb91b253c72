//! Membership changes of the broker group (`weir cluster add-replica` / `remove-replica`),
//! served by the leader through openraft's joint consensus.
//!
//! Adding a node is two steps, so that a replica with an empty disk never counts towards a
//! quorum it could not serve:
//!
//! ```text
//!   add_learner(id, addr) ──► the leader streams the log to it from the first entry
//!   its matched index ≥ the leader's last index − CATCH_UP_SLACK
//!        └──► change_membership(+id as voter) ──► joint config ──► uniform config
//! ```
//!
//! The first step returns after [`CATCH_UP_WAIT`] with `done: false` when the node is still
//! behind; the caller asks again and the learner is not added twice.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use weir_proto::ErrorCode;
use weir_store::StoreError;

use super::Replication;
use crate::core::membership::{Membership, MembershipView};
use crate::core::message_log::Consensus;

/// Longest one add request waits for the new replica to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// How many entries behind the leader's last one a learner may be and still be promoted: it
/// gets the rest as a voter, like any follower a little behind.
const CATCH_UP_SLACK: u64 = 64;

/// Voters, learners, the leader's last log index and the given node's matched index, read in
/// one borrow of the metrics (never two at once: see `Replication::is_leader`).
struct Snapshot {
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
    leader_index: u64,
    matched: Option<u64>,
}

impl Replication {
    fn snapshot(&self, node_id: u64) -> Snapshot {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        Snapshot {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            leader_index: metrics.last_log_index.unwrap_or(0),
            matched: metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&node_id).cloned().flatten())
                .map(|log_id| log_id.index),
        }
    }

    fn view(&self, node_id: u64, done: bool) -> MembershipView {
        let now = self.snapshot(node_id);
        MembershipView {
            voters: now.voters.into_iter().collect(),
            learners: now.learners.into_iter().collect(),
            done,
            matched_index: now.matched.unwrap_or(0),
            leader_index: now.leader_index,
        }
    }

    fn require_leader(&self) -> Result<(), StoreError> {
        if self.is_leader() {
            return Ok(());
        }
        let leader = self.raft.metrics().borrow_watched().current_leader;
        Err(self.not_leader(leader))
    }

    fn membership_error(
        &self,
        e: RaftError<super::TypeConfig, ClientWriteError<super::TypeConfig>>,
    ) -> StoreError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                self.not_leader(f.leader_id)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                StoreError::Refused {
                    code: ErrorCode::InvalidArgument as u16,
                    message: e.to_string(),
                }
            }
            other => StoreError::Replication(other.to_string()),
        }
    }

    async fn add(&self, node_id: u64, raft_addr: String) -> Result<MembershipView, StoreError> {
        self.require_leader()?;
        let now = self.snapshot(node_id);
        if now.voters.contains(&node_id) {
            return Ok(self.view(node_id, true));
        }
        if !now.learners.contains(&node_id) {
            if raft_addr.is_empty() {
                return Err(refused(format!(
                    "node {node_id} is not a replica yet: give the address of its Raft listener"
                )));
            }
            self.raft
                .add_learner(node_id, BasicNode { addr: raft_addr }, false)
                .await
                .map_err(|e| self.membership_error(e))?;
            tracing::info!(node_id, "replica added as a learner");
        }
        let deadline = Instant::now() + CATCH_UP_WAIT;
        loop {
            let now = self.snapshot(node_id);
            let caught_up = now
                .matched
                .is_some_and(|m| m + CATCH_UP_SLACK >= now.leader_index);
            if caught_up {
                break;
            }
            if Instant::now() >= deadline {
                return Ok(self.view(node_id, false));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(node_id, "replica promoted to voter");
        Ok(self.view(node_id, true))
    }

    async fn remove(&self, node_id: u64) -> Result<MembershipView, StoreError> {
        self.require_leader()?;
        let now = self.snapshot(node_id);
        let change = if now.voters.contains(&node_id) {
            if now.voters.len() == 1 {
                return Err(refused(format!(
                    "node {node_id} is the group's last voter: it cannot be removed"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else if now.learners.contains(&node_id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        } else {
            return Err(refused(format!(
                "node {node_id} is not a replica of this broker group"
            )));
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(node_id, "replica removed");
        Ok(self.view(node_id, true))
    }
}

fn refused(message: String) -> StoreError {
    StoreError::Refused {
        code: ErrorCode::InvalidArgument as u16,
        message,
    }
}

impl Membership for Replication {
    fn add_replica(
        &self,
        node_id: u64,
        raft_addr: String,
    ) -> Pin<Box<dyn Future<Output = Result<MembershipView, StoreError>> + Send + '_>> {
        Box::pin(self.add(node_id, raft_addr))
    }

    fn remove_replica(
        &self,
        node_id: u64,
    ) -> Pin<Box<dyn Future<Output = Result<MembershipView, StoreError>> + Send + '_>> {
        Box::pin(self.remove(node_id))
    }
}

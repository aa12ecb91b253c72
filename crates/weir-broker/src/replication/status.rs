//! Raft's metrics turned into this replica's status (`core::replica`) and the role signal
//! that starts and stops leader-only work (raised once a new leader has applied an entry of
//! its own term), plus the cluster gauges.

use std::sync::Arc;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use super::Raft;
use super::network::PeerAddrs;
use crate::core::replica::{ReplicaProgress, ReplicaRole, ReplicaStatus, StatusSender};
use crate::core::role::RoleSetter;
use crate::metrics_catalog as m;

/// Publishes the status on every metrics change until shutdown; leaves the role "follower".
pub(crate) async fn run(
    raft: Raft,
    peers: Arc<PeerAddrs>,
    status: StatusSender,
    role: RoleSetter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    loop {
        let (next, caught_up) = {
            let now = metrics.borrow_and_update();
            // A new leader has applied everything its predecessors committed once it has
            // applied an entry of its own term (the blank entry it starts with).
            let caught_up = now
                .last_applied
                .is_some_and(|a| a.leader_id.term == now.current_term);
            let replica_role = match now.state {
                ServerState::Leader => ReplicaRole::Leader,
                ServerState::Follower => ReplicaRole::Follower,
                ServerState::Candidate => ReplicaRole::Candidate,
                ServerState::Learner => ReplicaRole::Learner,
                ServerState::Shutdown => ReplicaRole::Shutdown,
            };
            let status = ReplicaStatus {
                node_id: now.id,
                role: replica_role,
                term: now.current_term,
                leader_id: now.current_leader,
                leader_addr: now.current_leader.and_then(|id| peers.get(id)),
                commit_index: now.local_committed.map_or(0, |c| c.index),
                last_log_index: now.last_log_index.unwrap_or(0),
                applied_index: now.last_applied.map_or(0, |a| a.index),
                replicas: now
                    .replication
                    .as_ref()
                    .map(|r| {
                        r.iter()
                            .map(|(id, matched)| ReplicaProgress {
                                node_id: *id,
                                matched_index: matched.map(|m| m.index),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                voters: now.membership_config.voter_ids().collect(),
            };
            (status, caught_up)
        };
        metrics::gauge!(m::RAFT_TERM).set(next.term as f64);
        metrics::gauge!(m::RAFT_COMMIT_INDEX).set(next.commit_index as f64);
        metrics::gauge!(m::RAFT_LEADER).set(if next.is_leader() { 1.0 } else { 0.0 });
        // Leader-only work starts from the state its predecessors left: once it is applied.
        role.set_leader(next.is_leader() && caught_up);
        status.send_if_modified(|old| {
            let changed = *old != next;
            if changed {
                if old.role != next.role || old.term != next.term {
                    tracing::info!(role = next.role.name(), term = next.term, leader = ?next.leader_id, "raft role");
                }
                *old = next;
            }
            changed
        });
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            _ = crate::shutdown::requested(&mut shutdown) => break,
        }
    }
    role.set_leader(false);
}

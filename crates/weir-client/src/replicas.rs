//! Adding and removing replicas of a broker group ([`Admin::add_replica`],
//! [`Admin::remove_replica`]): the request goes to the group's leader, found through the
//! name servers, or through a `NOT_LEADER` answer's hint when the servers are brokers.

use weir_proto::pb::change_replicas_request::Action;
use weir_proto::{ApiKey, ErrorCode, pb};

use crate::Admin;
use crate::admin::{LEADER_ATTEMPTS, LEADER_WAIT, leader_of};
use crate::error::{ClientError, Result};
use crate::route::leader_hint;

pub use weir_proto::pb::ChangeReplicasResponse as ReplicaChange;

impl Admin {
    /// Asks broker group `group` (`None`: the only group the servers know) to take node
    /// `node_id`, whose Raft listener its replicas dial at `raft_addr`, as a replica. One call
    /// waits a few seconds; until the answer is `done`, the node is a learner catching up and
    /// the call is to be repeated.
    pub async fn add_replica(
        &self,
        group: Option<&str>,
        node_id: u64,
        raft_addr: &str,
    ) -> Result<ReplicaChange> {
        let request = pb::ChangeReplicasRequest {
            action: Action::Add as i32,
            node_id,
            raft_addr: raft_addr.to_owned(),
        };
        self.change_replicas(group, &request).await
    }

    /// Asks broker group `group` (`None`: the only group the servers know) to drop node
    /// `node_id` from its replicas.
    pub async fn remove_replica(&self, group: Option<&str>, node_id: u64) -> Result<ReplicaChange> {
        let request = pb::ChangeReplicasRequest {
            action: Action::Remove as i32,
            node_id,
            raft_addr: String::new(),
        };
        self.change_replicas(group, &request).await
    }

    async fn change_replicas(
        &self,
        group: Option<&str>,
        request: &pb::ChangeReplicasRequest,
    ) -> Result<ReplicaChange> {
        let mut hint: Option<String> = None;
        let mut last_error = None;
        for attempt in 0..LEADER_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(LEADER_WAIT).await;
            }
            let target = match hint.take() {
                Some(addr) => Some(addr),
                None => match self.group_leader(group).await {
                    Ok(target) => target,
                    Err(e) if e.code() == Some(ErrorCode::NotLeader) => {
                        last_error = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let answer = match &target {
                Some(addr) => self.call_at(addr, ApiKey::ChangeReplicas, request).await,
                // The servers name no group: they are brokers, one of which leads.
                None => self
                    .routes
                    .call_any::<_, ReplicaChange>(ApiKey::ChangeReplicas, request)
                    .await
                    .map(|(answer, _)| answer),
            };
            match answer {
                Ok(answer) => return Ok(answer),
                Err(ClientError::Server {
                    code: ErrorCode::NotLeader,
                    message,
                }) => {
                    hint = leader_hint(&message).map(str::to_owned);
                    last_error = Some(ClientError::Server {
                        code: ErrorCode::NotLeader,
                        message,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }

    /// The leader's address of `group` as the name servers know it; `None` when they know no
    /// group at all (the servers are brokers).
    async fn group_leader(&self, group: Option<&str>) -> Result<Option<String>> {
        let status = self.cluster_status().await?;
        let leaders = status.leaders();
        if leaders.is_empty() {
            return Ok(None);
        }
        let name = match group {
            Some(name) => name.to_owned(),
            None if leaders.len() == 1 => leaders[0].0.clone(),
            None => {
                let names: Vec<&str> = leaders.iter().map(|(g, _)| g.as_str()).collect();
                return Err(ClientError::Protocol(format!(
                    "several broker groups ({}): name one",
                    names.join(", ")
                )));
            }
        };
        leader_of(&leaders, &name).map(Some)
    }
}

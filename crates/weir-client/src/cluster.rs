//! The cluster as the name servers see it ([`Admin::cluster_status`]): which of the
//! configured servers answered, every broker group and each replica's role, term, commit and
//! applied index and lag.
//!
//! Lag is counted in log entries: the group leader's last log index minus the replica's (0 for
//! the leader; `None` while no replica claims to lead). Each server's view is merged replica by
//! replica, keeping the freshest registration. The JSON shape is the one of the HTTP
//! `GET /api/cluster`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use weir_proto::{ApiKey, pb};

use crate::Admin;
use crate::error::Result;

/// One configured server asked for the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameServerStatus {
    /// Its address.
    pub addr: String,
    /// Whether it answered.
    pub answered: bool,
    /// Why it did not.
    pub error: Option<String>,
}

/// One replica of a broker group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaState {
    /// Its node id in the group (0 standalone).
    pub node_id: u64,
    /// Its native address.
    pub addr: String,
    /// Its HTTP address, if it has one.
    pub http_addr: Option<String>,
    /// Its Kafka address, if it has one.
    pub kafka_addr: Option<String>,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// Its Raft term.
    pub term: u64,
    /// The last log index it knows committed.
    pub commit_index: u64,
    /// The last log index it holds.
    pub last_log_index: u64,
    /// The last log index applied there.
    pub applied_index: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// Milliseconds since a name server last heard from it.
    pub last_seen_ms: u64,
    /// The leader's last log index minus this replica's; `None` without a leader.
    pub lag: Option<u64>,
}

/// A broker group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupState {
    /// The cluster it registered in.
    pub cluster: String,
    /// Its name.
    pub broker_name: String,
    /// Its leader's node id, when one is known.
    pub leader: Option<u64>,
    /// Its replicas, by node id.
    pub replicas: Vec<ReplicaState>,
    /// Topic → queue count.
    pub topics: BTreeMap<String, u32>,
}

/// The whole cluster status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// Every configured server, answered or not.
    pub name_servers: Vec<NameServerStatus>,
    /// Every broker group any of them knows.
    pub groups: Vec<GroupState>,
}

impl ClusterStatus {
    /// Each group's leader address (the replica named leader, else `None`), by group name.
    pub fn leaders(&self) -> Vec<(String, Option<String>)> {
        self.groups
            .iter()
            .map(|g| {
                let leader = g
                    .leader
                    .and_then(|id| g.replicas.iter().find(|r| r.node_id == id))
                    .map(|r| r.addr.clone());
                (g.broker_name.clone(), leader)
            })
            .collect()
    }
}

fn replica_state(r: pb::ReplicaInfo) -> ReplicaState {
    let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
    ReplicaState {
        node_id: r.node_id,
        addr: r.broker_addr,
        http_addr: non_empty(r.http_addr),
        kafka_addr: non_empty(r.kafka_addr),
        role: r.role,
        term: r.term,
        commit_index: r.commit_index,
        last_log_index: r.last_log_index,
        applied_index: r.applied_index,
        leader_id: r.leader_id_known.then_some(r.leader_id),
        last_seen_ms: r.last_seen_ms,
        lag: None,
    }
}

/// Merges the groups the servers reported, freshest registration first, and counts lag.
pub(crate) fn merge(
    name_servers: Vec<NameServerStatus>,
    answers: Vec<pb::ClusterGroup>,
) -> ClusterStatus {
    let mut groups: BTreeMap<String, GroupState> = BTreeMap::new();
    for group in answers {
        let known = groups
            .entry(group.broker_name.clone())
            .or_insert_with(|| GroupState {
                cluster: group.cluster.clone(),
                broker_name: group.broker_name.clone(),
                leader: None,
                replicas: Vec::new(),
                topics: BTreeMap::new(),
            });
        if known.topics.is_empty() {
            known.topics = group
                .topics
                .iter()
                .map(|t| (t.name.clone(), t.queue_count))
                .collect();
        }
        for replica in group.replicas.into_iter().map(replica_state) {
            match known
                .replicas
                .iter_mut()
                .find(|r| r.node_id == replica.node_id)
            {
                Some(r) if r.last_seen_ms <= replica.last_seen_ms => {}
                Some(r) => *r = replica,
                None => known.replicas.push(replica),
            }
        }
    }
    for group in groups.values_mut() {
        group.replicas.sort_by_key(|r| r.node_id);
        let leader = group
            .replicas
            .iter()
            .filter(|r| r.role == "leader")
            .max_by_key(|r| r.term)
            .map(|r| (r.node_id, r.last_log_index));
        group.leader = leader.map(|(id, _)| id);
        for r in &mut group.replicas {
            r.lag = leader.map(|(_, last)| last.saturating_sub(r.last_log_index));
        }
    }
    ClusterStatus {
        name_servers,
        groups: groups.into_values().collect(),
    }
}

impl Admin {
    /// Asks every configured server (name servers, or a standalone node) for the brokers it
    /// knows, and merges their answers. A server that does not answer is listed as such.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let mut name_servers = Vec::new();
        let mut groups = Vec::new();
        for server in self.routes.servers() {
            let answer = async {
                let conn = self.routes.pool().get(server).await?;
                conn.call::<_, pb::GetClusterResponse>(
                    ApiKey::GetCluster,
                    &pb::Empty {},
                    Bytes::new(),
                    None,
                )
                .await
            }
            .await;
            match answer {
                Ok((response, _)) => {
                    name_servers.push(NameServerStatus {
                        addr: server.clone(),
                        answered: true,
                        error: None,
                    });
                    groups.extend(response.groups);
                }
                Err(e) => name_servers.push(NameServerStatus {
                    addr: server.clone(),
                    answered: false,
                    error: Some(e.to_string()),
                }),
            }
        }
        Ok(merge(name_servers, groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node_id: u64, role: &str, term: u64, last: u64, seen: u64) -> pb::ReplicaInfo {
        pb::ReplicaInfo {
            node_id,
            broker_addr: format!("n{node_id}:1"),
            role: role.to_owned(),
            term,
            last_log_index: last,
            last_seen_ms: seen,
            ..pb::ReplicaInfo::default()
        }
    }

    fn group(replicas: Vec<pb::ReplicaInfo>) -> pb::ClusterGroup {
        pb::ClusterGroup {
            cluster: "c".into(),
            broker_name: "g".into(),
            replicas,
            topics: vec![pb::TopicRegistration {
                name: "t".into(),
                queue_count: 4,
            }],
        }
    }

    #[test]
    fn merges_servers_and_counts_lag_from_the_highest_term_leader() {
        let a = group(vec![
            replica(1, "leader", 3, 100, 5),
            replica(2, "follower", 3, 90, 5),
        ]);
        // Another name server heard from node 2 more recently, and from a deposed leader.
        let b = group(vec![
            replica(2, "follower", 3, 97, 1),
            replica(3, "leader", 2, 60, 2),
        ]);
        let status = merge(Vec::new(), vec![a, b]);
        let g = &status.groups[0];
        assert_eq!(g.leader, Some(1));
        let lags: Vec<_> = g.replicas.iter().map(|r| (r.node_id, r.lag)).collect();
        assert_eq!(lags, vec![(1, Some(0)), (2, Some(3)), (3, Some(40))]);
        assert_eq!(
            status.leaders(),
            vec![("g".to_owned(), Some("n1:1".to_owned()))]
        );
        assert_eq!(g.topics.get("t"), Some(&4));
    }
}

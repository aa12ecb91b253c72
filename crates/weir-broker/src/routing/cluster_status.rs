//! The cluster as the name servers see it (`GET /api/cluster`): which name servers answered,
//! and every broker group with its replicas — role, term, commit and applied index, and lag.
//!
//! Lag is counted in log entries: the group leader's last log index minus the replica's (the
//! leader's own is 0; `None` while the group has no known leader). Several name servers'
//! views are merged replica by replica, keeping the freshest registration.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::routing::name_server::{GroupView, ReplicaView};

/// One name server asked for the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NameServerAnswer {
    /// Its address.
    pub addr: String,
    /// Whether it answered.
    pub answered: bool,
    /// Why it did not.
    pub error: Option<String>,
}

/// One replica with its lag behind the group's leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ReplicaLag {
    /// The replica as registered.
    #[serde(flatten)]
    pub replica: ReplicaView,
    /// The leader's last log index minus this replica's; `None` without a known leader.
    pub lag: Option<u64>,
}

/// A broker group in the cluster status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GroupStatus {
    /// The cluster it registered in.
    pub cluster: String,
    /// Its name.
    pub broker_name: String,
    /// Its leader's node id, when one is known.
    pub leader: Option<u64>,
    /// Its replicas, by node id.
    pub replicas: Vec<ReplicaLag>,
    /// Topic → queue count.
    pub topics: BTreeMap<String, u32>,
}

/// The whole cluster status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ClusterStatus {
    /// The name servers asked (this process's own role, standalone).
    pub name_servers: Vec<NameServerAnswer>,
    /// Every broker group any of them knows.
    pub groups: Vec<GroupStatus>,
}

/// Merges the groups several name servers reported into one status.
pub(crate) fn merge(name_servers: Vec<NameServerAnswer>, views: Vec<GroupView>) -> ClusterStatus {
    let mut groups: BTreeMap<String, GroupView> = BTreeMap::new();
    for view in views {
        match groups.get_mut(&view.broker_name) {
            None => {
                groups.insert(view.broker_name.clone(), view);
            }
            Some(known) => {
                for replica in view.replicas {
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
                if known.leader.is_none() {
                    known.leader = view.leader;
                }
                if known.topics.is_empty() {
                    known.topics = view.topics;
                }
            }
        }
    }
    ClusterStatus {
        name_servers,
        groups: groups.into_values().map(group_status).collect(),
    }
}

fn group_status(mut view: GroupView) -> GroupStatus {
    view.replicas.sort_by_key(|r| r.node_id);
    // The leader: the replica claiming it with the highest term (as routes choose it).
    let leader = view
        .replicas
        .iter()
        .filter(|r| r.role == "leader")
        .max_by_key(|r| r.term)
        .map(|r| (r.node_id, r.last_log_index));
    GroupStatus {
        cluster: view.cluster,
        broker_name: view.broker_name,
        leader: leader.map(|(id, _)| id),
        replicas: view
            .replicas
            .into_iter()
            .map(|replica| ReplicaLag {
                lag: leader.map(|(_, last)| last.saturating_sub(replica.last_log_index)),
                replica,
            })
            .collect(),
        topics: view.topics.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node_id: u64, role: &'static str, last: u64, seen: u64) -> ReplicaView {
        ReplicaView {
            node_id,
            addr: format!("n{node_id}"),
            http_addr: None,
            kafka_addr: None,
            role,
            term: 2,
            commit_index: last,
            last_log_index: last,
            applied_index: last,
            leader_id: Some(1),
            last_seen_ms: seen,
        }
    }

    fn group(replicas: Vec<ReplicaView>) -> GroupView {
        GroupView {
            cluster: "c".into(),
            broker_name: "g".into(),
            leader: Some(1),
            replicas,
            topics: vec![("t".into(), 4)],
        }
    }

    #[test]
    fn merges_views_keeping_the_freshest_and_counts_lag_from_the_leader() {
        let a = group(vec![
            replica(1, "leader", 100, 5),
            replica(2, "follower", 90, 5),
        ]);
        let b = group(vec![
            replica(2, "follower", 97, 1),
            replica(3, "follower", 60, 2),
        ]);
        let status = merge(Vec::new(), vec![a, b]);
        assert_eq!(status.groups.len(), 1);
        let g = &status.groups[0];
        assert_eq!(g.leader, Some(1));
        let lags: Vec<(u64, Option<u64>)> = g
            .replicas
            .iter()
            .map(|r| (r.replica.node_id, r.lag))
            .collect();
        assert_eq!(lags, vec![(1, Some(0)), (2, Some(3)), (3, Some(40))]);
    }
}

//! Asking name servers for the cluster (`GetCluster`), for a broker's `GET /api/cluster` when
//! it registers with remote name servers: every one is asked at once; the answers are merged.

use weir_proto::{ApiKey, pb};

use crate::core::replica::ReplicaRole;
use crate::protocols::native::remote;
use crate::routing::cluster_status::{ClusterStatus, NameServerAnswer, merge};
use crate::routing::name_server::{GroupView, ReplicaView};

/// The cluster as the name servers at `addrs` see it.
pub(crate) async fn query(addrs: &[String], max_frame_len: u32) -> ClusterStatus {
    let mut asked = tokio::task::JoinSet::new();
    for (i, addr) in addrs.iter().enumerate() {
        let addr = addr.clone();
        asked.spawn(async move {
            let answer = remote::call::<_, pb::GetClusterResponse>(
                &addr,
                ApiKey::GetCluster,
                &pb::Empty {},
                max_frame_len,
            )
            .await;
            (i, addr, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = asked.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(i, _, _)| *i);
    let mut name_servers = Vec::new();
    let mut views = Vec::new();
    for (_, addr, answer) in answers {
        match answer {
            Ok(response) => {
                name_servers.push(NameServerAnswer {
                    addr,
                    answered: true,
                    error: None,
                });
                views.extend(response.groups.into_iter().map(group_view));
            }
            Err(e) => name_servers.push(NameServerAnswer {
                addr,
                answered: false,
                error: Some(e),
            }),
        }
    }
    merge(name_servers, views)
}

fn group_view(group: pb::ClusterGroup) -> GroupView {
    GroupView {
        cluster: group.cluster,
        broker_name: group.broker_name,
        leader: None,
        replicas: group.replicas.into_iter().map(replica_view).collect(),
        topics: group
            .topics
            .into_iter()
            .map(|t| (t.name, t.queue_count))
            .collect(),
    }
}

fn replica_view(r: pb::ReplicaInfo) -> ReplicaView {
    let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
    ReplicaView {
        node_id: r.node_id,
        addr: r.broker_addr,
        http_addr: non_empty(r.http_addr),
        kafka_addr: non_empty(r.kafka_addr),
        role: ReplicaRole::from_name(&r.role).map_or("unknown", ReplicaRole::name),
        term: r.term,
        commit_index: r.commit_index,
        last_log_index: r.last_log_index,
        applied_index: r.applied_index,
        leader_id: r.leader_id_known.then_some(r.leader_id),
        last_seen_ms: r.last_seen_ms,
    }
}

//! The broker group as Kafka clients see it: one Kafka broker per replica (broker id = Raft
//! node id), the group's Raft leader leading every partition and coordinating every group.
//!
//! A standalone broker is broker [`NODE_ID`], leading everything. In a broker group each
//! replica knows the leader from Raft and where Kafka clients reach every replica from the
//! registrations its name servers hold (`GetCluster`), asked at most once per
//! [`PEERS_TTL`]; a client that bootstraps from any replica is sent to the leader.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocols::kafka::{Endpoint, NODE_ID};
use crate::protocols::native::cluster_query;
use crate::state::BrokerState;

/// How long the replicas' Kafka addresses learned from the name servers are reused.
const PEERS_TTL: Duration = Duration::from_secs(2);

/// Who is who for Kafka clients.
#[derive(Debug, Clone)]
pub(crate) struct KafkaBrokers {
    /// The leader's broker id, when one is known (else partitions have no leader now).
    pub leader: Option<i32>,
    /// Every replica's broker id (the partitions' replicas and in-sync replicas).
    pub replicas: Vec<i32>,
    /// Where clients reach each broker: this one always, the others when known.
    pub endpoints: Endpoints,
    /// The leader's epoch (the group's Raft term, 0 standalone), seen with `leader`.
    pub epoch: i32,
}

impl KafkaBrokers {
    /// The leader's endpoint, when it is known.
    pub fn leader_endpoint(&self) -> Option<(i32, &Endpoint)> {
        let leader = self.leader?;
        self.endpoints
            .iter()
            .find(|(id, _)| *id == leader)
            .map(|(id, e)| (*id, e))
    }
}

/// Broker ids and where Kafka clients reach them.
type Endpoints = Vec<(i32, Endpoint)>;

/// The other replicas' Kafka endpoints, as last learned (and when).
#[derive(Debug, Default)]
pub(crate) struct PeerCache {
    known: Mutex<Option<(Instant, Endpoints)>>,
}

/// The group's Kafka brokers as this replica (whose own endpoint is `me`) sees them now.
pub(crate) async fn brokers(state: &BrokerState, me: &Endpoint, peers: &PeerCache) -> KafkaBrokers {
    if !state.log.is_replicated() {
        return KafkaBrokers {
            leader: Some(NODE_ID),
            replicas: vec![NODE_ID],
            endpoints: vec![(NODE_ID, me.clone())],
            epoch: 0,
        };
    }
    let status = state.replica.borrow().clone();
    let my_id = broker_id(status.node_id);
    let mut endpoints = vec![(my_id, me.clone())];
    let others = peer_endpoints(state, peers).await;
    endpoints.extend(others.into_iter().filter(|(id, _)| *id != my_id));
    let mut replicas: Vec<i32> = status.voters.iter().map(|id| broker_id(*id)).collect();
    if replicas.is_empty() {
        replicas.push(my_id);
    }
    KafkaBrokers {
        leader: status.leader_id.map(broker_id),
        replicas,
        endpoints,
        epoch: i32::try_from(status.term).unwrap_or(i32::MAX),
    }
}

/// A Raft node id as a Kafka broker id.
fn broker_id(node_id: u64) -> i32 {
    i32::try_from(node_id).unwrap_or(i32::MAX)
}

async fn peer_endpoints(state: &BrokerState, peers: &PeerCache) -> Endpoints {
    if let Some((at, known)) = &*peers.known.lock()
        && at.elapsed() < PEERS_TTL
    {
        return known.clone();
    }
    let cluster = cluster_query::query(&state.config.name_servers, state.max_frame_len).await;
    let mine = state.identity.broker_name.as_ref();
    let found: Endpoints = cluster
        .groups
        .iter()
        .filter(|g| g.broker_name == mine)
        .flat_map(|g| g.replicas.iter())
        .filter_map(|r| {
            let addr = r.replica.kafka_addr.as_deref()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((
                broker_id(r.replica.node_id),
                Endpoint {
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                },
            ))
        })
        .collect();
    *peers.known.lock() = Some((Instant::now(), found.clone()));
    found
}

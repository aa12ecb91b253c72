//! The name-server role: the route table built from broker registrations.
//!
//! Every replica of every broker group registers at start, every heartbeat interval, whenever
//! its topics change and whenever its Raft status changes role, term or leader. Registrations
//! are keyed by (broker group, node id): the replicas of one group coexist, and a replica that
//! restarts on another address replaces its old entry. A replica that has not registered for
//! `broker_expiry` is left out of routes (and dropped by [`NameServer::expire`]).
//!
//! A route names, for each queue, its group's **leader**: among the group's live replicas that
//! claim `leader`, the one with the highest term (an old leader that has not yet learnt it was
//! deposed claims a lower term). While no live replica claims leadership (an election is in
//! progress) the route names the live replica with the highest term and log, marked
//! `leader_known = false`: it answers `NOT_LEADER` (naming the leader once it knows it) and the
//! client asks again after a short back-off. Each group's live replicas are listed too, so a
//! client can try another one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use weir_proto::ErrorCode;

use crate::core::replica::ReplicaRole;
use crate::error::RequestError;

/// What a replica says of its Raft state when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ReplicaReport {
    /// Its node id in the group (0 standalone).
    pub node_id: u64,
    /// Its role now.
    pub role: ReplicaRole,
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
}

/// A broker replica's registration: who it is, its status and the topics (with queue counts)
/// it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerRegistration {
    /// The cluster it belongs to.
    pub cluster: String,
    /// Its broker group's name.
    pub broker_name: String,
    /// Where clients reach it (`host:port`).
    pub broker_addr: String,
    /// Its HTTP listener, if it has one.
    pub http_addr: Option<String>,
    /// Its Kafka listener, if it has one.
    pub kafka_addr: Option<String>,
    /// Its Raft status.
    pub replica: ReplicaReport,
    /// Topic → its queue count there.
    pub topics: Vec<(String, u32)>,
}

/// One queue of a topic's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueRoute {
    /// The queue's id.
    pub queue_id: u32,
    /// The broker group serving it.
    pub broker_name: String,
    /// Where that group's leader is reached.
    pub broker_addr: String,
}

/// One live replica, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ReplicaView {
    /// Its node id.
    pub node_id: u64,
    /// Its native address.
    pub addr: String,
    /// Its HTTP address, if any.
    pub http_addr: Option<String>,
    /// Its Kafka address, if any.
    pub kafka_addr: Option<String>,
    /// Its role's name (`leader`, `follower`, ...).
    pub role: &'static str,
    /// Its term.
    pub term: u64,
    /// The last index it knows committed.
    pub commit_index: u64,
    /// The last index it holds.
    pub last_log_index: u64,
    /// The last index applied there.
    pub applied_index: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// Milliseconds since its last registration.
    pub last_seen_ms: u64,
}

/// A broker group's part of a route: where its leader is and its live replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRoute {
    /// The group's name.
    pub broker_name: String,
    /// The address queue routes name (the leader's, or a live replica's while none leads).
    pub leader_addr: String,
    /// Whether a live replica claims to lead.
    pub leader_known: bool,
    /// Its live replicas, by node id.
    pub replicas: Vec<ReplicaView>,
}

/// A topic's route: each queue's group leader, and each group's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicRoute {
    /// Every queue of the topic over every group serving it.
    pub queues: Vec<QueueRoute>,
    /// The groups serving it.
    pub groups: Vec<GroupRoute>,
}

/// A broker group and its live replicas, for cluster status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GroupView {
    /// The cluster the group registered in.
    pub cluster: String,
    /// The group's name.
    pub broker_name: String,
    /// The replica routes name as leader (`None` while none leads).
    pub leader: Option<u64>,
    /// Its live replicas, by node id.
    pub replicas: Vec<ReplicaView>,
    /// Topic → queue count, as the group's leader (else its most advanced replica) registered.
    pub topics: Vec<(String, u32)>,
}

#[derive(Debug)]
struct Registration {
    cluster: String,
    broker_addr: String,
    http_addr: Option<String>,
    kafka_addr: Option<String>,
    replica: ReplicaReport,
    topics: BTreeMap<String, u32>,
    last_seen: Instant,
}

impl Registration {
    fn view(&self, now: Instant) -> ReplicaView {
        ReplicaView {
            node_id: self.replica.node_id,
            addr: self.broker_addr.clone(),
            http_addr: self.http_addr.clone(),
            kafka_addr: self.kafka_addr.clone(),
            role: self.replica.role.name(),
            term: self.replica.term,
            commit_index: self.replica.commit_index,
            last_log_index: self.replica.last_log_index,
            applied_index: self.replica.applied_index,
            leader_id: self.replica.leader_id,
            last_seen_ms: u64::try_from(now.duration_since(self.last_seen).as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

/// The replica routes should name among a group's live ones, and whether it leads: the
/// replica claiming `leader` with the highest term (the latest registration among equals);
/// else, while none claims it, the one with the highest (term, last log index).
fn choose<'a>(replicas: &[&'a Registration]) -> Option<(&'a Registration, bool)> {
    let leader = replicas
        .iter()
        .filter(|r| r.replica.role == ReplicaRole::Leader)
        .max_by_key(|r| (r.replica.term, r.last_seen));
    if let Some(leader) = leader {
        return Some((leader, true));
    }
    replicas
        .iter()
        .max_by_key(|r| (r.replica.term, r.replica.last_log_index, r.last_seen))
        .map(|r| (*r, false))
}

/// The routing registry.
#[derive(Debug)]
pub struct NameServer {
    /// (broker group, node id) → its latest registration.
    brokers: Mutex<BTreeMap<(String, u64), Registration>>,
    expiry: Duration,
}

impl NameServer {
    /// A registry dropping replicas silent for `expiry`.
    pub fn new(expiry: Duration) -> NameServer {
        NameServer {
            brokers: Mutex::new(BTreeMap::new()),
            expiry,
        }
    }

    /// Records (or refreshes) a replica's registration.
    pub(crate) fn register(&self, request: BrokerRegistration) -> Result<(), RequestError> {
        if request.broker_name.is_empty() || request.broker_addr.is_empty() {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                "broker_name and broker_addr must be set",
            ));
        }
        let topics = request.topics.into_iter().collect();
        self.brokers.lock().insert(
            (request.broker_name, request.replica.node_id),
            Registration {
                cluster: request.cluster,
                broker_addr: request.broker_addr,
                http_addr: request.http_addr,
                kafka_addr: request.kafka_addr,
                replica: request.replica,
                topics,
                last_seen: Instant::now(),
            },
        );
        Ok(())
    }

    /// Live registrations grouped by broker group, in name order.
    fn live_groups<'a>(
        &self,
        brokers: &'a BTreeMap<(String, u64), Registration>,
        now: Instant,
    ) -> BTreeMap<&'a str, Vec<&'a Registration>> {
        let mut groups: BTreeMap<&str, Vec<&Registration>> = BTreeMap::new();
        for ((name, _), r) in brokers {
            if now.duration_since(r.last_seen) <= self.expiry {
                groups.entry(name.as_str()).or_default().push(r);
            }
        }
        groups
    }

    /// The route of a topic over every live group serving it, or `topic_not_found`.
    pub(crate) fn route(&self, topic: &str) -> Result<TopicRoute, RequestError> {
        let now = Instant::now();
        let brokers = self.brokers.lock();
        let mut route = TopicRoute {
            queues: Vec::new(),
            groups: Vec::new(),
        };
        for (name, replicas) in self.live_groups(&brokers, now) {
            let Some((chosen, leader_known)) = choose(&replicas) else {
                continue;
            };
            let Some(&queues) = chosen.topics.get(topic) else {
                continue;
            };
            route.queues.extend((0..queues).map(|queue_id| QueueRoute {
                queue_id,
                broker_name: name.to_owned(),
                broker_addr: chosen.broker_addr.clone(),
            }));
            route.groups.push(GroupRoute {
                broker_name: name.to_owned(),
                leader_addr: chosen.broker_addr.clone(),
                leader_known,
                replicas: replicas.iter().map(|r| r.view(now)).collect(),
            });
        }
        if route.queues.is_empty() {
            return Err(RequestError::new(
                ErrorCode::TopicNotFound,
                format!("topic '{topic}' does not exist (no live broker serves it)"),
            ));
        }
        Ok(route)
    }

    /// Every live broker group with its replicas.
    pub(crate) fn cluster(&self) -> Vec<GroupView> {
        let now = Instant::now();
        let brokers = self.brokers.lock();
        self.live_groups(&brokers, now)
            .into_iter()
            .filter_map(|(name, replicas)| {
                let (chosen, leader_known) = choose(&replicas)?;
                Some(GroupView {
                    cluster: chosen.cluster.clone(),
                    broker_name: name.to_owned(),
                    leader: leader_known.then_some(chosen.replica.node_id),
                    replicas: replicas.iter().map(|r| r.view(now)).collect(),
                    topics: chosen.topics.iter().map(|(t, n)| (t.clone(), *n)).collect(),
                })
            })
            .collect()
    }

    /// Drops replicas silent for longer than the expiry; returns them as `group/node`.
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut dropped = Vec::new();
        self.brokers.lock().retain(|(name, node), r| {
            let live = now.duration_since(r.last_seen) <= self.expiry;
            if !live {
                tracing::warn!(broker = %name, node, cluster = %r.cluster, addr = %r.broker_addr, "broker registration expired");
                dropped.push(format!("{name}/{node}"));
            }
            live
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(name: &str, topics: &[(&str, u32)]) -> BrokerRegistration {
        replica(name, 0, ReplicaRole::Leader, 0, topics)
    }

    fn replica(
        name: &str,
        node_id: u64,
        role: ReplicaRole,
        term: u64,
        topics: &[(&str, u32)],
    ) -> BrokerRegistration {
        BrokerRegistration {
            cluster: "c".to_owned(),
            broker_name: name.to_owned(),
            broker_addr: format!("{name}-{node_id}:9876"),
            http_addr: None,
            kafka_addr: None,
            replica: ReplicaReport {
                node_id,
                role,
                term,
                last_log_index: term * 10 + node_id,
                ..ReplicaReport::default()
            },
            topics: topics.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn routes_from_registrations_and_expiry() -> Result<(), RequestError> {
        let ns = NameServer::new(Duration::from_millis(20));
        ns.register(registration("a", &[("t", 2)]))?;
        ns.register(registration("b", &[("t", 1), ("u", 1)]))?;
        let route = ns.route("t")?;
        assert_eq!(route.queues.len(), 3);
        assert_eq!(route.queues[2].broker_addr, "b-0:9876");
        assert_eq!(route.groups.len(), 2);
        assert!(route.groups.iter().all(|g| g.leader_known));
        assert_eq!(
            ns.route("v").err().map(|e| e.code),
            Some(ErrorCode::TopicNotFound)
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(ns.route("t").is_err());
        assert_eq!(ns.expire(), vec!["a/0".to_owned(), "b/0".to_owned()]);
        Ok(())
    }

    #[test]
    fn the_route_names_the_leader_with_the_highest_term() -> Result<(), RequestError> {
        let ns = NameServer::new(Duration::from_secs(60));
        let t = &[("t", 2)];
        // A deposed leader that has not noticed yet (term 3), the new leader (term 4), and a
        // follower.
        ns.register(replica("g", 1, ReplicaRole::Leader, 3, t))?;
        ns.register(replica("g", 2, ReplicaRole::Leader, 4, t))?;
        ns.register(replica("g", 3, ReplicaRole::Follower, 4, t))?;
        let route = ns.route("t")?;
        assert_eq!(route.queues.len(), 2, "one group, counted once");
        assert!(route.queues.iter().all(|q| q.broker_addr == "g-2:9876"));
        assert_eq!(route.groups.len(), 1);
        assert!(route.groups[0].leader_known);
        assert_eq!(route.groups[0].replicas.len(), 3);
        let cluster = ns.cluster();
        assert_eq!(cluster.len(), 1);
        assert_eq!(cluster[0].leader, Some(2));
        // The old leader learns of term 4 and follows; then the leader fails and an election
        // runs: no replica claims to lead.
        ns.register(replica("g", 1, ReplicaRole::Follower, 4, t))?;
        ns.register(replica("g", 2, ReplicaRole::Candidate, 5, t))?;
        ns.register(replica("g", 3, ReplicaRole::Candidate, 5, t))?;
        let route = ns.route("t")?;
        assert!(!route.groups[0].leader_known);
        // The most advanced live replica: term 5, the longer log (node 3).
        assert_eq!(route.groups[0].leader_addr, "g-3:9876");
        assert_eq!(ns.cluster()[0].leader, None);
        // Node 3 wins term 5.
        ns.register(replica("g", 3, ReplicaRole::Leader, 5, t))?;
        assert!(
            ns.route("t")?
                .queues
                .iter()
                .all(|q| q.broker_addr == "g-3:9876")
        );
        Ok(())
    }

    #[test]
    fn replicas_of_a_group_expire_one_by_one() -> Result<(), RequestError> {
        let ns = NameServer::new(Duration::from_millis(40));
        ns.register(replica("g", 1, ReplicaRole::Leader, 2, &[("t", 1)]))?;
        std::thread::sleep(Duration::from_millis(30));
        ns.register(replica("g", 2, ReplicaRole::Follower, 2, &[("t", 1)]))?;
        std::thread::sleep(Duration::from_millis(20));
        // The leader is silent past the expiry: the follower is routed to, leader unknown.
        let route = ns.route("t")?;
        assert_eq!(route.queues[0].broker_addr, "g-2:9876");
        assert!(!route.groups[0].leader_known);
        assert_eq!(ns.expire(), vec!["g/1".to_owned()]);
        Ok(())
    }
}

//! The name-server role: the route table built from broker registrations.
//!
//! Brokers register their topics at start, every heartbeat interval and whenever their topics
//! change; a broker that has not registered for `broker_expiry` is left out of routes (and
//! dropped by [`NameServer::expire`]). Registrations are keyed by broker name: a broker that
//! restarts on another address replaces its old entry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weir_proto::ErrorCode;

use crate::error::RequestError;

/// A broker's registration: who it is and the topics (with queue counts) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerRegistration {
    /// The cluster it belongs to.
    pub cluster: String,
    /// Its broker group's name.
    pub broker_name: String,
    /// Where clients reach it (`host:port`).
    pub broker_addr: String,
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
    /// Where that group is reached.
    pub broker_addr: String,
}

#[derive(Debug)]
struct Registration {
    cluster: String,
    broker_addr: String,
    topics: BTreeMap<String, u32>,
    last_seen: Instant,
}

/// The routing registry.
#[derive(Debug)]
pub struct NameServer {
    brokers: Mutex<BTreeMap<String, Registration>>,
    expiry: Duration,
}

impl NameServer {
    /// A registry dropping brokers silent for `expiry`.
    pub fn new(expiry: Duration) -> NameServer {
        NameServer {
            brokers: Mutex::new(BTreeMap::new()),
            expiry,
        }
    }

    /// Records (or refreshes) a broker's registration.
    pub fn register(&self, request: BrokerRegistration) -> Result<(), RequestError> {
        if request.broker_name.is_empty() || request.broker_addr.is_empty() {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                "broker_name and broker_addr must be set",
            ));
        }
        let topics = request.topics.into_iter().collect();
        self.brokers.lock().insert(
            request.broker_name,
            Registration {
                cluster: request.cluster,
                broker_addr: request.broker_addr,
                topics,
                last_seen: Instant::now(),
            },
        );
        Ok(())
    }

    /// The route of a topic over every live broker serving it, or `topic_not_found`.
    pub fn route(&self, topic: &str) -> Result<Vec<QueueRoute>, RequestError> {
        let now = Instant::now();
        let brokers = self.brokers.lock();
        let queues: Vec<QueueRoute> = brokers
            .iter()
            .filter(|(_, r)| now.duration_since(r.last_seen) <= self.expiry)
            .filter_map(|(name, r)| r.topics.get(topic).map(|n| (name, r, *n)))
            .flat_map(|(name, r, n)| {
                (0..n).map(move |queue_id| QueueRoute {
                    queue_id,
                    broker_name: name.clone(),
                    broker_addr: r.broker_addr.clone(),
                })
            })
            .collect();
        if queues.is_empty() {
            return Err(RequestError::new(
                ErrorCode::TopicNotFound,
                format!("topic '{topic}' does not exist (no live broker serves it)"),
            ));
        }
        Ok(queues)
    }

    /// Drops brokers silent for longer than the expiry; returns the names dropped.
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut dropped = Vec::new();
        self.brokers.lock().retain(|name, r| {
            let live = now.duration_since(r.last_seen) <= self.expiry;
            if !live {
                tracing::warn!(broker = %name, cluster = %r.cluster, addr = %r.broker_addr, "broker registration expired");
                dropped.push(name.clone());
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
        BrokerRegistration {
            cluster: "c".to_owned(),
            broker_name: name.to_owned(),
            broker_addr: format!("{name}:9876"),
            topics: topics.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn routes_from_registrations_and_expiry() -> Result<(), RequestError> {
        let ns = NameServer::new(Duration::from_millis(20));
        ns.register(registration("a", &[("t", 2)]))?;
        ns.register(registration("b", &[("t", 1), ("u", 1)]))?;
        let route = ns.route("t")?;
        assert_eq!(route.len(), 3);
        assert_eq!(route[2].broker_addr, "b:9876");
        assert_eq!(
            ns.route("v").err().map(|e| e.code),
            Some(ErrorCode::TopicNotFound)
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(ns.route("t").is_err());
        assert_eq!(ns.expire(), vec!["a".to_owned(), "b".to_owned()]);
        Ok(())
    }
}

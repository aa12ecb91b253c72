//! The route cache: which broker serves each queue of a topic, as the name servers say.
//!
//! A route names, per queue, its broker group's leader. When a broker answers `NOT_LEADER`
//! naming the leader (`leader=<host:port>` in the error's message, see [`leader_hint`]), the
//! cache switches that group's address in every cached route at once
//! ([`RouteCache::switch_leader`]); without a name it asks the name servers again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tracing::debug;
use weir_proto::{ApiKey, ErrorCode, pb};

use crate::error::{ClientError, Result};
use crate::pool::Pool;

/// How long a cached route is used before it is asked for again.
pub const ROUTE_TTL: Duration = Duration::from_secs(30);

/// One queue of a topic and the broker serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRoute {
    /// The queue's id within the topic.
    pub queue_id: u32,
    /// The name of the broker group serving it, as message ids carry it (shared, so the ids
    /// of every message from this queue refer to it without a copy).
    pub broker_name: Arc<str>,
    /// The address clients connect to for this queue.
    pub broker_addr: String,
}

/// A broker as a route names it: where to connect, and the group name its message ids carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    /// The address to connect to.
    pub addr: String,
    /// The broker group's name.
    pub name: Arc<str>,
}

/// A broker group serving a topic: its leader and its live replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoute {
    /// The group's name.
    pub broker_name: String,
    /// The address queue routes name for it.
    pub leader_addr: String,
    /// False while no replica claims to lead (the address is then any live replica's).
    pub leader_known: bool,
    /// Its live replicas' addresses.
    pub replicas: Vec<String>,
}

/// A topic's queues, sorted by queue id.
#[derive(Debug, Clone)]
pub struct TopicRoute {
    /// The topic.
    pub topic: String,
    /// Its queues, sorted by queue id.
    pub queues: Vec<QueueRoute>,
    /// The broker groups serving it (empty from a server that does not list them).
    pub groups: Vec<GroupRoute>,
    fetched_at: Instant,
}

impl TopicRoute {
    /// The addresses of every broker serving the topic, without duplicates, sorted.
    pub fn brokers(&self) -> Vec<String> {
        let mut brokers: Vec<String> = self.queues.iter().map(|q| q.broker_addr.clone()).collect();
        brokers.sort();
        brokers.dedup();
        brokers
    }

    /// Every broker serving the topic, one per address, sorted by address.
    pub(crate) fn named_brokers(&self) -> Vec<Broker> {
        let mut brokers: Vec<Broker> = self
            .queues
            .iter()
            .map(|q| Broker {
                addr: q.broker_addr.clone(),
                name: q.broker_name.clone(),
            })
            .collect();
        brokers.sort_by(|a, b| a.addr.cmp(&b.addr));
        brokers.dedup_by(|a, b| a.addr == b.addr);
        brokers
    }

    /// The route of queue `queue_id`, if the topic has it.
    pub fn queue(&self, queue_id: u32) -> Option<&QueueRoute> {
        self.queues.iter().find(|q| q.queue_id == queue_id)
    }

    /// The address of the broker serving queue `queue_id`, or an error naming the queue.
    pub fn broker_of(&self, queue_id: u32) -> crate::Result<String> {
        self.named_broker_of(queue_id).map(|broker| broker.addr)
    }

    /// The broker serving queue `queue_id`, or an error naming the queue.
    pub(crate) fn named_broker_of(&self, queue_id: u32) -> crate::Result<Broker> {
        self.queue(queue_id)
            .map(|q| Broker {
                addr: q.broker_addr.clone(),
                name: q.broker_name.clone(),
            })
            .ok_or_else(|| {
                crate::ClientError::InvalidArgument(format!(
                    "no queue {queue_id} in '{}'",
                    self.topic
                ))
            })
    }

    /// This route with broker group `group` reached at `addr`; `None` if nothing changes.
    fn with_leader(&self, group: &str, addr: &str) -> Option<TopicRoute> {
        if !self
            .queues
            .iter()
            .any(|q| &*q.broker_name == group && q.broker_addr != addr)
        {
            return None;
        }
        let mut route = self.clone();
        for q in &mut route.queues {
            if &*q.broker_name == group {
                addr.clone_into(&mut q.broker_addr);
            }
        }
        for g in &mut route.groups {
            if g.broker_name == group {
                addr.clone_into(&mut g.leader_addr);
                g.leader_known = true;
            }
        }
        Some(route)
    }

    /// An address serving broker group `name`, if the topic has a queue there.
    fn addr_of_group(&self, name: &str) -> Option<&str> {
        self.queues
            .iter()
            .find(|q| &*q.broker_name == name)
            .map(|q| q.broker_addr.as_str())
    }
}

/// The leader a `NOT_LEADER` answer's message names (`leader=<host:port>` anywhere in it),
/// if it names one.
pub(crate) fn leader_hint(message: &str) -> Option<&str> {
    let start = message.find("leader=")? + "leader=".len();
    let rest = &message[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ')')
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|addr| addr.contains(':') && !addr.starts_with(':'))
}

/// Routes by topic, fetched from any of the configured servers (name servers, or standalone
/// nodes) and refreshed every [`ROUTE_TTL`] and after errors.
#[derive(Debug)]
pub struct RouteCache {
    pool: Arc<Pool>,
    servers: Vec<String>,
    next_server: AtomicUsize,
    routes: RwLock<HashMap<String, Arc<TopicRoute>>>,
}

impl RouteCache {
    /// A cache asking `servers` (each `host:port`) over connections from `pool`.
    pub fn new(pool: Arc<Pool>, servers: Vec<String>) -> Result<RouteCache> {
        if servers.is_empty() {
            return Err(ClientError::InvalidArgument(
                "at least one server address is needed".into(),
            ));
        }
        Ok(RouteCache {
            pool,
            servers,
            next_server: AtomicUsize::new(0),
            routes: RwLock::new(HashMap::new()),
        })
    }

    /// The connection pool the cache uses.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The servers routes are asked from.
    pub(crate) fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Broker group `group` is now led from `addr` (a `NOT_LEADER` answer named it): every
    /// cached route sends that group's queues there from now on, keeping its age. Returns
    /// whether any route changed.
    pub fn switch_leader(&self, group: &str, addr: &str) -> bool {
        let mut routes = self.routes.write();
        let mut changed = false;
        for route in routes.values_mut() {
            if let Some(switched) = route.with_leader(group, addr) {
                *route = Arc::new(switched);
                changed = true;
            }
        }
        if changed {
            debug!(group, addr, "switched to the group's new leader");
        }
        changed
    }

    /// If `error` is a `NOT_LEADER` answer naming the leader of broker group `group`, switches
    /// the group there ([`RouteCache::switch_leader`]) and returns true.
    pub(crate) fn follow_leader_named(&self, group: &str, error: &ClientError) -> bool {
        match error {
            ClientError::Server {
                code: ErrorCode::NotLeader,
                message,
            } => match leader_hint(message) {
                Some(leader) => {
                    self.switch_leader(group, leader);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// After `error` from broker group `group` for `topic`: the address to try next for the
    /// group — the leader a `NOT_LEADER` answer names (switched to at once), else, for a
    /// `NOT_LEADER` without a name, a failed connection or a request unanswered in time,
    /// whatever the name servers say now.
    /// `None` when the error is of another kind or no route names the group.
    pub(crate) async fn reroute(
        &self,
        group: &str,
        topic: &str,
        error: &ClientError,
    ) -> Option<String> {
        match error {
            ClientError::Server {
                code: ErrorCode::NotLeader,
                message,
            } => {
                if let Some(leader) = leader_hint(message) {
                    self.switch_leader(group, leader);
                    return Some(leader.to_owned());
                }
            }
            ClientError::Connect { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Timeout { .. } => {}
            _ => return None,
        }
        let route = self.refresh(topic).await.ok()?;
        route.addr_of_group(group).map(str::to_owned)
    }

    /// The route of `topic`, from the cache when it is fresh.
    pub async fn get(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        if let Some(route) = self.fresh(topic) {
            return Ok(route);
        }
        self.refresh(topic).await
    }

    /// The cached route of `topic` if it is younger than [`ROUTE_TTL`].
    pub fn fresh(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        self.cached(topic)
            .filter(|route| route.fetched_at.elapsed() < ROUTE_TTL)
    }

    /// The cached route of `topic`, however old, without asking anyone.
    pub fn cached(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        self.routes.read().get(topic).cloned()
    }

    /// Forgets the route of `topic`, so the next [`RouteCache::get`] asks again.
    pub fn invalidate(&self, topic: &str) {
        self.routes.write().remove(topic);
    }

    /// Asks the servers for the route of `topic` now, and caches it.
    pub async fn refresh(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        let request = pb::GetRouteRequest {
            topic: topic.to_owned(),
        };
        let (response, _) = self
            .call_any::<_, pb::GetRouteResponse>(ApiKey::GetRoute, &request)
            .await?;
        let mut queues: Vec<QueueRoute> = response
            .queues
            .into_iter()
            .map(|q| QueueRoute {
                queue_id: q.queue_id,
                broker_name: Arc::from(q.broker_name),
                broker_addr: q.broker_addr,
            })
            .collect();
        if queues.is_empty() {
            return Err(ClientError::NoRoute(topic.to_owned()));
        }
        queues.sort_by_key(|q| q.queue_id);
        let groups = response
            .groups
            .into_iter()
            .map(|g| GroupRoute {
                broker_name: g.broker_name,
                leader_addr: g.leader_addr,
                leader_known: g.leader_known,
                replicas: g.replicas.into_iter().map(|r| r.broker_addr).collect(),
            })
            .collect();
        let route = Arc::new(TopicRoute {
            topic: topic.to_owned(),
            queues,
            groups,
            fetched_at: Instant::now(),
        });
        debug!(topic, queues = route.queues.len(), "route refreshed");
        self.routes.write().insert(topic.to_owned(), route.clone());
        Ok(route)
    }

    /// An address serving broker group `name` (the group a message id names), from any
    /// cached route, however old.
    pub(crate) fn cached_addr_of_group(&self, name: &str) -> Option<String> {
        self.routes
            .read()
            .values()
            .find_map(|route| route.addr_of_group(name))
            .map(str::to_owned)
    }

    /// An address serving broker group `name`, which serves a queue of `topic`: from the
    /// cached routes, else from a fresh route of `topic`.
    pub(crate) async fn addr_of_group(&self, name: &str, topic: &str) -> Result<String> {
        if let Some(addr) = self.cached_addr_of_group(name) {
            return Ok(addr);
        }
        let route = self.refresh(topic).await?;
        route
            .addr_of_group(name)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::NoRoute(topic.to_owned()))
    }

    /// Sends a request to the configured servers in turn until one answers; a server error
    /// (the server answered) is returned at once, a connection failure tries the next server.
    pub async fn call_any<Req, Resp>(&self, api: ApiKey, request: &Req) -> Result<(Resp, Bytes)>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let start = self.next_server.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..self.servers.len() {
            let index = (start + i) % self.servers.len();
            let server = &self.servers[index];
            let attempt = async {
                let conn = self.pool.get(server).await?;
                conn.call::<Req, Resp>(api, request, Bytes::new(), None)
                    .await
            };
            match attempt.await {
                Ok(answer) => {
                    self.next_server.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e @ ClientError::Server { .. }) => return Err(e),
                Err(e) => {
                    debug!(server, error = %e, "server unreachable, trying the next");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_leader_message_names_the_leader() {
        assert_eq!(leader_hint("leader=10.0.0.2:9876"), Some("10.0.0.2:9876"));
        assert_eq!(
            leader_hint("not the leader of group g (term 4); leader=h2:9876, retry there"),
            Some("h2:9876")
        );
        assert_eq!(leader_hint("not the leader; leader unknown"), None);
        assert_eq!(leader_hint("leader="), None);
        assert_eq!(leader_hint("leader=:9876"), None);
        assert_eq!(leader_hint("not_leader"), None);
    }

    fn route(topic: &str, queues: &[(u32, &str, &str)]) -> Arc<TopicRoute> {
        Arc::new(TopicRoute {
            topic: topic.to_owned(),
            queues: queues
                .iter()
                .map(|(id, group, addr)| QueueRoute {
                    queue_id: *id,
                    broker_name: Arc::from(*group),
                    broker_addr: (*addr).to_owned(),
                })
                .collect(),
            groups: vec![GroupRoute {
                broker_name: "a".to_owned(),
                leader_addr: "a1:1".to_owned(),
                leader_known: true,
                replicas: vec!["a1:1".to_owned(), "a2:1".to_owned()],
            }],
            fetched_at: Instant::now(),
        })
    }

    #[tokio::test]
    async fn a_named_leader_switches_the_group_in_every_cached_route_at_once() -> Result<()> {
        let cache = RouteCache::new(Arc::new(Pool::default()), vec!["127.0.0.1:1".to_owned()])?;
        cache.routes.write().insert(
            "t".to_owned(),
            route("t", &[(0, "a", "a1:1"), (1, "b", "b1:1"), (2, "a", "a1:1")]),
        );
        cache
            .routes
            .write()
            .insert("u".to_owned(), route("u", &[(0, "a", "a1:1")]));
        let error = ClientError::Server {
            code: ErrorCode::NotLeader,
            message: "leader=a2:1".to_owned(),
        };
        // Answered from the message, without asking any server (none listens on port 1).
        assert_eq!(
            cache.reroute("a", "t", &error).await,
            Some("a2:1".to_owned())
        );
        let t = cache.fresh("t").ok_or(ClientError::Closed)?;
        let addrs: Vec<&str> = t.queues.iter().map(|q| q.broker_addr.as_str()).collect();
        assert_eq!(addrs, vec!["a2:1", "b1:1", "a2:1"]);
        assert_eq!(t.groups[0].leader_addr, "a2:1");
        assert_eq!(
            cache.fresh("u").ok_or(ClientError::Closed)?.queues[0].broker_addr,
            "a2:1"
        );
        assert_eq!(cache.cached_addr_of_group("a").as_deref(), Some("a2:1"));
        // Switching to where it already is changes nothing.
        assert!(!cache.switch_leader("a", "a2:1"));
        // Other errors do not reroute.
        let busy = ClientError::Server {
            code: ErrorCode::Busy,
            message: "leader=x:1".to_owned(),
        };
        assert_eq!(cache.reroute("a", "t", &busy).await, None);
        Ok(())
    }
}

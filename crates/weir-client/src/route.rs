//! The route cache: which broker serves each queue of a topic, as the name servers say.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tracing::debug;
use weir_proto::{ApiKey, pb};

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

/// A topic's queues, sorted by queue id.
#[derive(Debug, Clone)]
pub struct TopicRoute {
    /// The topic.
    pub topic: String,
    /// Its queues, sorted by queue id.
    pub queues: Vec<QueueRoute>,
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

    /// An address serving broker group `name`, if the topic has a queue there.
    fn addr_of_group(&self, name: &str) -> Option<&str> {
        self.queues
            .iter()
            .find(|q| &*q.broker_name == name)
            .map(|q| q.broker_addr.as_str())
    }
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
        let route = Arc::new(TopicRoute {
            topic: topic.to_owned(),
            queues,
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

//! The shared consumer: a member of a *shared* group (RocketMQ 5 POP, SQS, Kafka share
//! groups). Any number of members receive messages from any queue; each message is acked on
//! its own, hidden from the others while in flight, and delivered again after its invisibility
//! time if not acked. A nack makes it visible again after the broker's back-off; after the
//! broker's `shared_max_attempts` deliveries it goes to `%DLQ%<group>`.
//!
//! ```no_run
//! # async fn example() -> weir_client::Result<()> {
//! use std::time::Duration;
//! use weir_client::{SharedConsumer, SharedConsumerConfig};
//! let consumer = SharedConsumer::new(SharedConsumerConfig::new(["127.0.0.1:9876"], "billing", "orders"))?;
//! let messages = consumer.receive(16, Duration::from_secs(30)).await?;
//! for m in &messages {
//!     println!("{} (attempt {})", String::from_utf8_lossy(&m.message.body), m.attempt);
//! }
//! consumer.ack(&messages).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use weir_proto::{ApiKey, pb};

use crate::admin::LEADER_WAIT;
use crate::connection::ConnectionConfig;
use crate::consumer::ConsumeResult;
use crate::entries;
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;
use crate::pool::Pool;
use crate::route::{Broker, RouteCache};

/// Extra time a long-poll receive is given over its `max_wait` before it counts as timed out.
const RECEIVE_GRACE: Duration = Duration::from_secs(10);

/// How many times an ack, nack or change of invisibility follows its broker group's leader
/// (gone or moved) before it fails, [`LEADER_WAIT`] apart: about the time a group takes to
/// elect a new leader and the name servers to learn it.
const SETTLE_ATTEMPTS: usize = 40;

/// Settings of a [`SharedConsumer`].
#[derive(Debug, Clone)]
pub struct SharedConsumerConfig {
    /// Servers to ask for routes (`host:port` each).
    pub servers: Vec<String>,
    /// The shared group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// How long a receive waits on the broker when nothing is there (long polling).
    pub max_wait: Duration,
    /// [`SharedConsumer::start`]: messages per receive and worker.
    pub batch: u32,
    /// [`SharedConsumer::start`]: how long received messages stay hidden.
    pub invisible_time: Duration,
    /// Connection settings.
    pub connection: ConnectionConfig,
}

impl SharedConsumerConfig {
    /// Defaults for `group` consuming `topic`, with routes asked from `servers`.
    pub fn new<S: Into<String>>(
        servers: impl IntoIterator<Item = S>,
        group: impl Into<String>,
        topic: impl Into<String>,
    ) -> SharedConsumerConfig {
        SharedConsumerConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            group: group.into(),
            topic: topic.into(),
            max_wait: Duration::from_secs(15),
            batch: 16,
            invisible_time: Duration::from_secs(30),
            connection: ConnectionConfig::default(),
        }
    }
}

/// One delivery of a message to a shared consumer.
#[derive(Debug, Clone)]
pub struct SharedMessage {
    /// The message.
    pub message: ReceivedMessage,
    /// Names this delivery: ack, nack or change its invisibility with it.
    pub receipt: String,
    /// Deliveries of the message so far, this one included (1 = first).
    pub attempt: u32,
    /// The broker it came from (acks go there).
    pub broker: String,
    /// The broker group it came from: in a replicated group, acks follow its leader.
    pub broker_group: String,
}

/// A member of a shared group. Cheap to share (`Arc`) between tasks.
pub struct SharedConsumer {
    config: SharedConsumerConfig,
    routes: RouteCache,
    next_broker: AtomicUsize,
}

impl std::fmt::Debug for SharedConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConsumer")
            .field("group", &self.config.group)
            .field("topic", &self.config.topic)
            .finish()
    }
}

impl SharedConsumer {
    /// A consumer of `config.topic` in shared group `config.group`.
    pub fn new(config: SharedConsumerConfig) -> Result<SharedConsumer> {
        if config.group.is_empty() || config.topic.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group and a topic are needed".into(),
            ));
        }
        weir_proto::validate_group_name(&config.group)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let pool = Arc::new(Pool::new(config.connection.clone()));
        let routes = RouteCache::new(pool, config.servers.clone())?;
        Ok(SharedConsumer {
            config,
            routes,
            next_broker: AtomicUsize::new(0),
        })
    }

    fn pool(&self) -> &Arc<Pool> {
        self.routes.pool()
    }

    /// Receives up to `max` messages, each hidden from other members for `invisible_time`
    /// unless acked. Asks each broker of the topic without waiting, starting at a rotating
    /// one, then long-polls one for up to `max_wait`; returns an empty list when nothing came.
    pub async fn receive(&self, max: u32, invisible_time: Duration) -> Result<Vec<SharedMessage>> {
        let route = self.routes.get(&self.config.topic).await?;
        let brokers = route.named_brokers();
        if brokers.is_empty() {
            return Err(ClientError::NoRoute(self.config.topic.clone()));
        }
        let start = self.next_broker.fetch_add(1, Ordering::Relaxed);
        let invisible_ms = u32::try_from(invisible_time.as_millis()).unwrap_or(u32::MAX);
        let wait_ms = u32::try_from(self.config.max_wait.as_millis()).unwrap_or(u32::MAX);
        if brokers.len() > 1 {
            for i in 0..brokers.len() {
                let broker = &brokers[(start + i) % brokers.len()];
                let got = self.receive_from(broker, max, invisible_ms, 0).await?;
                if !got.is_empty() {
                    return Ok(got);
                }
            }
        }
        let broker = &brokers[start % brokers.len()];
        self.receive_from(broker, max, invisible_ms, wait_ms).await
    }

    async fn receive_from(
        &self,
        broker: &Broker,
        max: u32,
        invisible_ms: u32,
        wait_ms: u32,
    ) -> Result<Vec<SharedMessage>> {
        let request = pb::ReceiveRequest {
            group: self.config.group.clone(),
            topic: self.config.topic.clone(),
            max_messages: max,
            invisible_time_ms: invisible_ms,
            max_wait_ms: wait_ms,
        };
        let timeout = Duration::from_millis(u64::from(wait_ms)) + RECEIVE_GRACE;
        let conn = self.pool().get(&broker.addr).await?;
        let (response, payload) = match conn
            .call::<_, pb::ReceiveResponse>(ApiKey::Receive, &request, Bytes::new(), Some(timeout))
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                self.routes.invalidate(&self.config.topic);
                return Err(e);
            }
        };
        // Each delivery names its message's position; the payload holds their entries.
        let wanted: Vec<(u32, u64)> = response
            .entries
            .iter()
            .map(|e| (e.queue_id, e.queue_offset))
            .collect();
        let messages = entries::at_positions(&payload, Some(&broker.name), &wanted)?;
        response
            .entries
            .into_iter()
            .zip(messages)
            .map(|(entry, message)| {
                let message = message.ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "receive answer lacks the message at {}:{}",
                        entry.queue_id, entry.queue_offset
                    ))
                })?;
                Ok(SharedMessage {
                    message,
                    receipt: entry.receipt,
                    attempt: entry.attempt,
                    broker: broker.addr.clone(),
                    broker_group: broker.name.to_string(),
                })
            })
            .collect()
    }

    /// Acks deliveries (one request per broker); returns the receipts the broker rejected
    /// (their invisibility ran out and the message went to another member, or acked already).
    pub async fn ack(&self, messages: &[SharedMessage]) -> Result<Vec<String>> {
        self.settle(ApiKey::Ack, messages).await
    }

    /// Gives deliveries back: each is delivered again after the broker's back-off, or, out of
    /// attempts, goes to `%DLQ%<group>`. Returns the receipts the broker rejected.
    pub async fn nack(&self, messages: &[SharedMessage]) -> Result<Vec<String>> {
        self.settle(ApiKey::Nack, messages).await
    }

    async fn settle(&self, api: ApiKey, messages: &[SharedMessage]) -> Result<Vec<String>> {
        let mut by_broker: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
        for m in messages {
            by_broker
                .entry((&m.broker_group, &m.broker))
                .or_default()
                .push(m.receipt.clone());
        }
        let mut rejected = Vec::new();
        for ((broker_group, broker), receipts) in by_broker {
            let group = self.config.group.clone();
            let response: pb::AckResponse = match api {
                ApiKey::Nack => {
                    let request = pb::NackRequest { group, receipts };
                    self.call_group(broker_group, broker, api, &request).await?
                }
                _ => {
                    let request = pb::AckRequest { group, receipts };
                    self.call_group(broker_group, broker, api, &request).await?
                }
            };
            rejected.extend(response.rejected);
        }
        Ok(rejected)
    }

    /// Calls `api` at `addr`, a broker of `broker_group`; when that broker is gone or no
    /// longer leads, again at the group's leader now (a receipt handed out before a failover
    /// still names its delivery there).
    async fn call_group<Req, Resp>(
        &self,
        broker_group: &str,
        addr: &str,
        api: ApiKey,
        request: &Req,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut addr = addr.to_owned();
        let mut attempt = 0;
        loop {
            let e = match self.pool().call::<_, Resp>(&addr, api, request).await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            attempt += 1;
            if attempt == SETTLE_ATTEMPTS {
                return Err(e);
            }
            let Some(next) = self
                .routes
                .reroute(broker_group, &self.config.topic, &e)
                .await
            else {
                return Err(e);
            };
            if next == addr || attempt > 1 {
                // The group may have no leader yet, or the name servers may not know it yet.
                tokio::time::sleep(LEADER_WAIT).await;
            }
            addr = next;
        }
    }

    /// Hides a delivery for `invisible_time` from now (extend it while processing takes
    /// long; zero makes it visible again at once). Fails with `invalid_receipt` when the
    /// delivery is over.
    pub async fn change_invisibility(
        &self,
        message: &SharedMessage,
        invisible_time: Duration,
    ) -> Result<()> {
        let request = pb::ChangeInvisibilityRequest {
            group: self.config.group.clone(),
            receipt: message.receipt.clone(),
            invisible_time_ms: u32::try_from(invisible_time.as_millis()).unwrap_or(u32::MAX),
        };
        self.call_group::<_, pb::ChangeInvisibilityResponse>(
            &message.broker_group,
            &message.broker,
            ApiKey::ChangeInvisibility,
            &request,
        )
        .await?;
        Ok(())
    }

    /// Runs `workers` tasks that each receive `config.batch` messages at a time, call
    /// `handler` on each (in `block_in_place` on a multi-threaded runtime), and ack the
    /// successes and nack the retries in one request each. Stop with
    /// [`SharedWorkers::shutdown`].
    pub fn start<F>(self: Arc<Self>, workers: usize, handler: F) -> SharedWorkers
    where
        F: Fn(&SharedMessage) -> ConsumeResult + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let stop = CancellationToken::new();
        let tasks = (0..workers.max(1))
            .map(|_| {
                let consumer = self.clone();
                let handler = handler.clone();
                let stop = stop.clone();
                tokio::spawn(async move { consumer.work(&*handler, &stop).await })
            })
            .collect();
        SharedWorkers { stop, tasks }
    }

    async fn work(
        &self,
        handler: &(dyn Fn(&SharedMessage) -> ConsumeResult + Send + Sync),
        stop: &CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.receive(self.config.batch, self.config.invisible_time) => r,
            };
            let messages = match received {
                Ok(messages) => {
                    backoff = Duration::from_millis(100);
                    messages
                }
                Err(e) => {
                    warn!(group = %self.config.group, error = %e, "receive failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let (done, retry): (Vec<SharedMessage>, Vec<SharedMessage>) =
                messages.into_iter().partition(|m| {
                    crate::consumer::run_handler(|| handler(m)) == ConsumeResult::Success
                });
            for (api, list) in [(ApiKey::Ack, done), (ApiKey::Nack, retry)] {
                if list.is_empty() {
                    continue;
                }
                match self.settle(api, &list).await {
                    Ok(rejected) if !rejected.is_empty() => {
                        warn!(
                            count = rejected.len(),
                            "deliveries were over before they were settled"
                        );
                    }
                    Ok(_) => {}
                    // Unsettled deliveries come back after their invisibility.
                    Err(e) => warn!(error = %e, "settling deliveries failed"),
                }
            }
        }
    }
}

/// The worker tasks of [`SharedConsumer::start`].
#[derive(Debug)]
pub struct SharedWorkers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SharedWorkers {
    /// Stops receiving and waits until the messages in process are handled and settled.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

//! The producer: batched, retried sends with queue choice by key hash or round-robin, avoiding
//! slow or failed brokers.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use weir_proto::batch::{BatchOptions, Compression};
use weir_proto::{ApiKey, pb};

use crate::batch::{BatchConfig, BatchReply, BatchSendResult, Batcher, Reply};
use crate::connection::ConnectionConfig;
use crate::error::{ClientError, Result};
use crate::fault::{FaultConfig, LatencyFaults};
use crate::message::{Message, SendResult};
use crate::pool::Pool;
use crate::route::{QueueRoute, RouteCache, TopicRoute};

/// How a producer picks the queue of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueSelection {
    /// Hash the sharding key, else the message key, so one key always goes to one queue (and
    /// stays in order); messages with neither go round-robin.
    #[default]
    KeyHash,
    /// Round-robin over the queues, ignoring message keys (sharding keys are still honoured).
    RoundRobin,
}

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Servers to ask for routes (`host:port` each).
    pub servers: Vec<String>,
    /// A batch is sent when it holds this many messages.
    pub batch_max_messages: usize,
    /// A batch is sent before it would grow past this many bytes.
    pub batch_max_bytes: usize,
    /// A batch is sent at the latest this long after its first message.
    pub linger: Duration,
    /// How many times a batch that may have been stored (its request timed out, its
    /// connection broke) is sent again. Batches refused as `busy`, or whose broker could not
    /// be reached, are sent again until `delivery_timeout` whatever this says.
    pub retries: u32,
    /// Wait before the first resend of a batch; doubles for each next one (at most 1 s), with
    /// jitter.
    pub retry_backoff: Duration,
    /// The shortest time one produce request may take before it counts as failed; longer
    /// while the broker acknowledges slowly (8 times the smoothed acknowledgement latency).
    pub send_timeout: Duration,
    /// The longest a message may take to be acknowledged, resends and back-offs included;
    /// after it, its send fails with the last error.
    pub delivery_timeout: Duration,
    /// How queues are chosen.
    pub queue_selection: QueueSelection,
    /// Latency fault avoidance.
    pub fault: FaultConfig,
    /// Connection settings.
    pub connection: ConnectionConfig,
    /// Idempotent producer: records carry a producer id (one per broker, from the broker) and
    /// per-queue sequences, and a failed batch is resent as it was, so a resend after a lost
    /// acknowledgement is stored once and answered with the original position. Without it,
    /// such resends are counted in [`Producer::resent_maybe_stored`]. `send_oneway` is not
    /// idempotent.
    pub idempotent: bool,
    /// How batches are compressed (`none` by default). The broker stores and serves them as
    /// they came; consumers decompress.
    pub compression: Compression,
}

impl ProducerConfig {
    /// Defaults, with routes asked from `servers`.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> ProducerConfig {
        ProducerConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            batch_max_messages: 1000,
            batch_max_bytes: 1024 * 1024,
            linger: Duration::from_millis(5),
            retries: 2,
            retry_backoff: Duration::from_millis(100),
            send_timeout: Duration::from_secs(3),
            delivery_timeout: Duration::from_secs(60),
            queue_selection: QueueSelection::KeyHash,
            fault: FaultConfig::default(),
            connection: ConnectionConfig::default(),
            idempotent: false,
            compression: Compression::None,
        }
    }

    /// These settings with batches compressed by `codec`.
    pub fn with_compression(mut self, codec: Compression) -> ProducerConfig {
        self.compression = codec;
        self
    }
}

/// A message waiting, in call order, for its topic's route before joining a batch.
struct RouteWait {
    message: Message,
    /// Gets the message back, with its enqueued attempt (or the error of enqueueing it).
    done: oneshot::Sender<(Message, Result<Enqueued>)>,
}

struct Inner {
    config: ProducerConfig,
    /// Feeds the task that enqueues messages whose route was not cached, in call order.
    route_queue: Mutex<Option<mpsc::UnboundedSender<RouteWait>>>,
    /// Messages in `route_queue`; while any are, later messages queue behind them.
    pending_route: AtomicUsize,
    routes: Arc<RouteCache>,
    faults: Arc<LatencyFaults>,
    batcher: Arc<Batcher>,
    round_robin: AtomicUsize,
    closed: AtomicBool,
}

/// Sends messages; cheap to clone (clones share batches and connections).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("servers", &self.inner.config.servers)
            .finish()
    }
}

/// The result of [`Producer::send_async`]; await it for the send's result.
///
/// When the message joined its batch at once (the topic's route was cached), the handle just
/// waits for the batch's reply (the batch is resent as a whole if it fails): no task per
/// message. Only a message still waiting for its route runs on a task of its own.
pub struct SendHandle {
    state: HandleState,
}

impl std::fmt::Debug for SendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            HandleState::Enqueued { .. } => "enqueued",
            HandleState::Task(_) => "task",
        };
        f.debug_struct("SendHandle").field("state", &state).finish()
    }
}

// The large variant is the common one; boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
enum HandleState {
    /// In a batch, which is resent as a whole if it fails.
    Enqueued { reply: Reply, inner: Arc<Inner> },
    /// Retrying, or waiting for the route, on a task.
    Task(JoinHandle<Result<SendResult>>),
}

impl Future for SendHandle {
    type Output = Result<SendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            HandleState::Task(task) => Pin::new(task)
                .poll(cx)
                .map(|joined| joined.unwrap_or(Err(ClientError::Closed))),
            HandleState::Enqueued { reply, inner } => {
                let answered = std::task::ready!(Pin::new(&mut *reply).poll(cx));
                if let Err(e) = &answered
                    && !e.is_about_the_message()
                {
                    inner.routes.invalidate(reply.topic());
                }
                Poll::Ready(answered)
            }
        }
    }
}

impl Producer {
    /// A producer with `config`. Nothing is connected until the first send.
    pub fn new(config: ProducerConfig) -> Result<Producer> {
        if config.batch_max_messages == 0 || config.batch_max_bytes == 0 {
            return Err(ClientError::InvalidArgument(
                "batch limits must be positive".into(),
            ));
        }
        let pool = Arc::new(Pool::new(config.connection.clone()));
        let faults = Arc::new(LatencyFaults::new(config.fault.clone()));
        let routes = Arc::new(RouteCache::new(pool.clone(), config.servers.clone())?);
        let batcher = Arc::new(Batcher::new(
            BatchConfig {
                max_messages: config.batch_max_messages,
                max_bytes: config.batch_max_bytes,
                linger: config.linger,
                send_timeout: config.send_timeout,
                delivery_timeout: config.delivery_timeout,
                idempotent: config.idempotent,
                retries: config.retries,
                retry_backoff: config.retry_backoff,
                compression: config.compression,
            },
            pool,
            faults.clone(),
            routes.clone(),
        ));
        Ok(Producer {
            inner: Arc::new(Inner {
                config,
                routes,
                faults,
                batcher,
                round_robin: AtomicUsize::new(rand::random::<u16>() as usize),
                route_queue: Mutex::new(None),
                pending_route: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Sends `message` and waits for the broker's acknowledgement, retrying retriable
    /// failures. Concurrent sends share batches.
    pub async fn send(&self, message: Message) -> Result<SendResult> {
        send_with_retries_from(self.inner.clone(), message, None).await
    }

    /// Starts sending `message` and returns a handle to await its result. The first attempt
    /// goes ahead whether or not the handle is awaited; retries run while it is awaited.
    /// Must be called inside a Tokio runtime.
    ///
    /// When the topic's route is cached (after any earlier send, or [`Producer::route`]),
    /// the message joins its batch before this returns, so messages of one key passed to
    /// `send_async` one after the other are stored in that order.
    pub fn send_async(&self, message: Message) -> SendHandle {
        let inner = self.inner.clone();
        let task = match inner.enqueue_now(&message) {
            Some(Ok(reply)) => {
                return SendHandle {
                    state: HandleState::Enqueued { reply, inner },
                };
            }
            Some(Err(e)) => tokio::spawn(async move { Err(e) }),
            None => {
                // No route yet: go through the in-order queue that waits for routes.
                let (done, enqueued) = oneshot::channel();
                inner.pending_route.fetch_add(1, Ordering::AcqRel);
                if let Err(e) = inner
                    .route_waiter(&self.inner)
                    .send(RouteWait { message, done })
                {
                    inner.pending_route.fetch_sub(1, Ordering::AcqRel);
                    let message = e.0.message;
                    tokio::spawn(async move { send_with_retries_from(inner, message, None).await })
                } else {
                    tokio::spawn(async move {
                        let (message, first) = enqueued.await.map_err(|_| ClientError::Closed)?;
                        send_with_retries_from(inner, message, first.ok()).await
                    })
                }
            }
        };
        SendHandle {
            state: HandleState::Task(task),
        }
    }

    /// Sends `message` in a one-way frame: no acknowledgement, no retry, no error report
    /// beyond what is wrong with the message itself. Must be called inside a Tokio runtime.
    pub fn send_oneway(&self, message: Message) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let entry = message.encode_entry(BatchOptions::default(), self.inner.config.compression)?;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let sent = async {
                let route = inner.routes.get(message.topic()).await?;
                let queue = inner.select_queue(&route, &message, None)?;
                let conn = inner.routes.pool().get(&queue.broker_addr).await?;
                let meta = pb::ProduceRequest {
                    topic: message.topic().to_owned(),
                    queue_id: queue.queue_id,
                };
                conn.send_oneway(
                    ApiKey::Produce,
                    Bytes::from(prost::Message::encode_to_vec(&meta)),
                    entry.freeze(),
                )
            };
            if let Err(e) = sent.await {
                debug!(error = %e, "one-way send failed");
            }
        });
        Ok(())
    }

    /// Sends `messages` (all of one topic) as one batch: one entry in one produce request, one
    /// completion for all of them, no task or reply per message. The batch goes to one queue:
    /// the one the first message's routing key picks, else the next in round-robin. It is
    /// sent after the batches already sealed for that queue, resent as a whole on retriable
    /// failures, and compressed and sequenced (idempotent mode) like any other batch.
    ///
    /// The messages are encoded before this returns when the topic's route is known (after
    /// any earlier send, or [`Producer::route`]); otherwise they are copied to a task that
    /// waits for the route. Must be called inside a Tokio runtime.
    pub fn send_batch(&self, messages: &[Message]) -> BatchSendHandle {
        let inner = self.inner.clone();
        let Some(first) = messages.first() else {
            return BatchSendHandle::failed(ClientError::InvalidArgument("an empty batch".into()));
        };
        if inner.closed.load(Ordering::Acquire) {
            return BatchSendHandle::failed(ClientError::Closed);
        }
        if inner.pending_route.load(Ordering::Acquire) == 0
            && let Some(route) = inner.routes.fresh(first.topic())
        {
            let queue = match inner.select_queue(&route, first, None) {
                Ok(queue) => queue,
                Err(e) => return BatchSendHandle::failed(e),
            };
            if inner.batcher.ready_for(&queue.broker_name) {
                return match inner.batcher.enqueue_batch(first.topic(), messages, queue) {
                    Ok(reply) => BatchSendHandle {
                        state: BatchState::Enqueued { reply, inner },
                    },
                    Err(e) => BatchSendHandle::failed(e),
                };
            }
        }
        let messages = messages.to_vec();
        BatchSendHandle {
            state: BatchState::Task(tokio::spawn(async move {
                let topic = messages[0].topic().to_owned();
                let sent = async {
                    let route = inner.routes.get(&topic).await?;
                    let queue = inner.select_queue(&route, &messages[0], None)?;
                    inner
                        .batcher
                        .ensure_producer_id(&queue.broker_name, &queue.broker_addr)
                        .await?;
                    inner.batcher.enqueue_batch(&topic, &messages, queue)
                }
                .await;
                let answered = match sent {
                    Ok(reply) => reply.await,
                    Err(e) => Err(e),
                };
                if answered.as_ref().is_err_and(|e| !e.is_about_the_message()) {
                    inner.routes.invalidate(&topic);
                }
                answered
            })),
        }
    }

    /// Bytes of entries this producer has sent (as on the wire: compressed, envelopes
    /// included; a resent batch counts once). `send_oneway` is not counted.
    pub fn sent_bytes(&self) -> u64 {
        self.inner.batcher.sent_bytes()
    }

    /// Sends every open batch now and waits until every message sent so far is answered.
    pub async fn flush(&self) {
        self.inner.batcher.flush().await;
    }

    /// Flushes, then refuses further sends.
    pub async fn close(self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.batcher.flush().await;
    }

    /// Messages acknowledged after their batch was sent again although an earlier attempt
    /// may have stored it (it timed out, or its connection broke). Outside idempotent mode
    /// each of them may be stored twice; an idempotent producer's resends are stored once, so
    /// this stays 0 for it.
    pub fn resent_maybe_stored(&self) -> u64 {
        self.inner.batcher.resent_maybe_stored()
    }

    /// The route of `topic`, as the producer sees it now.
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        self.inner.routes.get(topic).await
    }
}

/// The result of [`Producer::send_batch`]; await it for where the batch was stored.
pub struct BatchSendHandle {
    state: BatchState,
}

enum BatchState {
    /// Sealed for its queue, sent (or to be sent) as a whole.
    Enqueued {
        reply: BatchReply,
        inner: Arc<Inner>,
    },
    /// Waiting for the route on a task, or failed before it was enqueued.
    Task(JoinHandle<Result<BatchSendResult>>),
    /// Refused at once.
    Failed(Option<ClientError>),
}

impl BatchSendHandle {
    fn failed(e: ClientError) -> BatchSendHandle {
        BatchSendHandle {
            state: BatchState::Failed(Some(e)),
        }
    }
}

impl std::fmt::Debug for BatchSendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            BatchState::Enqueued { .. } => "enqueued",
            BatchState::Task(_) => "task",
            BatchState::Failed(_) => "failed",
        };
        f.debug_struct("BatchSendHandle")
            .field("state", &state)
            .finish()
    }
}

impl Future for BatchSendHandle {
    type Output = Result<BatchSendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            BatchState::Task(task) => Pin::new(task)
                .poll(cx)
                .map(|joined| joined.unwrap_or(Err(ClientError::Closed))),
            BatchState::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(ClientError::Closed))),
            BatchState::Enqueued { reply, inner } => {
                let answered = std::task::ready!(Pin::new(&mut *reply).poll(cx));
                if answered.as_ref().is_err_and(|e| !e.is_about_the_message()) {
                    inner.routes.invalidate(reply.topic());
                }
                Poll::Ready(answered)
            }
        }
    }
}

/// The longest wait between two tries to find a message's route and batch.
const MAX_ROUTE_BACKOFF: Duration = Duration::from_secs(1);

/// A message already added to a batch: the reply to wait for, and the broker it goes to.
type Enqueued = (Reply, String);

/// Sends `message`, starting from an attempt already enqueued if there is one, and retries.
async fn send_with_retries_from(
    inner: Arc<Inner>,
    message: Message,
    mut first: Option<Enqueued>,
) -> Result<SendResult> {
    let mut attempt = 0u32;
    let mut failed_broker: Option<String> = None;
    let deadline = tokio::time::Instant::now() + inner.config.delivery_timeout;
    loop {
        if inner.closed.load(Ordering::Acquire) && first.is_none() {
            return Err(ClientError::Closed);
        }
        let mut broker = None;
        let enqueued = async {
            match first.take() {
                Some((reply, addr)) => {
                    broker = Some(addr);
                    Ok(reply)
                }
                None => {
                    let route = inner.routes.get(message.topic()).await?;
                    let queue = inner.select_queue(&route, &message, failed_broker.as_deref())?;
                    broker = Some(queue.broker_addr.clone());
                    inner
                        .batcher
                        .ensure_producer_id(&queue.broker_name, &queue.broker_addr)
                        .await?;
                    inner.batcher.enqueue(&message, queue)
                }
            }
        }
        .await;
        let e = match enqueued {
            // The batch was resent already, as a batch, until it was stored or could not be:
            // sending its messages again one by one would only be slower (and, after an
            // attempt that may have stored them, store them twice).
            Ok(reply) => {
                let answered = reply.await;
                if answered.is_err() {
                    inner.routes.invalidate(message.topic());
                }
                return answered;
            }
            Err(e) => e,
        };
        match e {
            // Not sent yet (no route, no producer id, the broker unreachable): nothing can be
            // stored twice, so it is tried again until the delivery timeout.
            e if e.is_retriable()
                && tokio::time::Instant::now() + inner.config.retry_backoff < deadline =>
            {
                let backoff = inner
                    .config
                    .retry_backoff
                    .saturating_mul(2u32.saturating_pow(attempt))
                    .min(MAX_ROUTE_BACKOFF);
                attempt += 1;
                warn!(topic = message.topic(), attempt, error = %e, ?backoff, "send failed, retrying");
                failed_broker = broker;
                tokio::time::sleep(backoff).await;
                inner.routes.invalidate(message.topic());
            }
            e => {
                if !e.is_about_the_message() {
                    inner.routes.invalidate(message.topic());
                }
                return Err(e);
            }
        }
    }
}

impl Inner {
    /// The sender into the in-order route queue, starting its task on first use. The task
    /// holds only a weak reference, so it ends when the producer is dropped.
    fn route_waiter(&self, me: &Arc<Inner>) -> mpsc::UnboundedSender<RouteWait> {
        let mut queue = self.route_queue.lock();
        if let Some(sender) = queue.as_ref() {
            return sender.clone();
        }
        let (sender, mut receiver) = mpsc::unbounded_channel::<RouteWait>();
        let weak: Weak<Inner> = Arc::downgrade(me);
        tokio::spawn(async move {
            while let Some(wait) = receiver.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let enqueued = async {
                    let route = inner.routes.get(wait.message.topic()).await?;
                    let queue = inner.select_queue(&route, &wait.message, None)?;
                    inner
                        .batcher
                        .ensure_producer_id(&queue.broker_name, &queue.broker_addr)
                        .await?;
                    let reply = inner.batcher.enqueue(&wait.message, queue)?;
                    Ok((reply, queue.broker_addr.clone()))
                }
                .await;
                inner.pending_route.fetch_sub(1, Ordering::AcqRel);
                let _ = wait.done.send((wait.message, enqueued));
            }
        });
        *queue = Some(sender.clone());
        sender
    }

    /// Adds `message` to its batch now if the topic's route is cached; `None` if it is not.
    fn enqueue_now(&self, message: &Message) -> Option<Result<Reply>> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Err(ClientError::Closed));
        }
        if self.pending_route.load(Ordering::Acquire) > 0 {
            return None;
        }
        let route = self.routes.fresh(message.topic())?;
        let queue = match self.select_queue(&route, message, None) {
            Ok(queue) => queue,
            Err(e) => return Some(Err(e)),
        };
        if !self.batcher.ready_for(&queue.broker_name) {
            // Idempotent, and no producer id from this broker yet: the route queue gets one.
            return None;
        }
        Some(self.batcher.enqueue(message, queue))
    }

    /// The queue for `message`: by key hash when it has a routing key (and selection allows),
    /// else round-robin over queues of available brokers, avoiding `failed_broker` if another
    /// broker serves the topic.
    fn select_queue<'r>(
        &self,
        route: &'r TopicRoute,
        message: &Message,
        failed_broker: Option<&str>,
    ) -> Result<&'r QueueRoute> {
        let queues = &route.queues;
        if queues.is_empty() {
            return Err(ClientError::NoRoute(route.topic.clone()));
        }
        if let Some(key) = routing_key(self.config.queue_selection, message) {
            return Ok(&queues[queue_for_key_bytes(key, queues.len())]);
        }
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let chosen = self
            .faults
            .choose(queues.len(), start, |i| &queues[i].broker_addr)
            .unwrap_or(start % queues.len());
        if let Some(failed) = failed_broker
            && queues[chosen].broker_addr == failed
        {
            let other = (1..queues.len())
                .map(|step| (chosen + step) % queues.len())
                .find(|&i| queues[i].broker_addr != failed);
            if let Some(other) = other {
                return Ok(&queues[other]);
            }
        }
        Ok(&queues[chosen])
    }
}

fn routing_key(selection: QueueSelection, message: &Message) -> Option<&[u8]> {
    match selection {
        QueueSelection::KeyHash => message.routing_key_bytes(),
        QueueSelection::RoundRobin => message.sharding_key().map(str::as_bytes),
    }
}

/// The index of the queue (out of `queues`) that `key` always maps to: XXH3, stable across
/// processes, versions and platforms.
pub fn queue_for_key(key: &str, queues: usize) -> usize {
    queue_for_key_bytes(key.as_bytes(), queues)
}

/// [`queue_for_key`] for a key that need not be text (the same queue for the same bytes).
pub fn queue_for_key_bytes(key: &[u8], queues: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % queues.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_maps_to_the_same_queue() {
        for key in ["order-1", "order-2", "user:42", ""] {
            let first = queue_for_key(key, 8);
            assert!(first < 8);
            for _ in 0..10 {
                assert_eq!(queue_for_key(key, 8), first);
            }
        }
        let spread: std::collections::HashSet<_> = (0..200)
            .map(|i| queue_for_key(&format!("k{i}"), 8))
            .collect();
        assert_eq!(spread.len(), 8, "keys spread over every queue");
        // Pinned: the mapping must never change between releases.
        assert_eq!(queue_for_key("order-1", 4), queue_for_key("order-1", 4));
    }
}

//! The transactional producer: a half message (stored, invisible), a local transaction, then
//! commit (the message becomes visible) or rollback (it never does); and the check-back of
//! transactions left undecided.
//!
//! ```no_run
//! # async fn example() -> weir_client::Result<()> {
//! use weir_client::{Message, ProducerConfig, TransactionProducer, TxState};
//! let producer = TransactionProducer::new(
//!     ProducerConfig::new(["127.0.0.1:9876"]),
//!     "order-service",
//!     // Asked by the broker about a transaction this group left undecided.
//!     |message| if message.key == "order-1" { TxState::Commit } else { TxState::Rollback },
//! )
//! .await?;
//! let outcome = producer
//!     .send_in_transaction(Message::new("orders", "paid").with_key("order-1"), |_half| {
//!         // Write to the local database here; answer with its outcome.
//!         TxState::Commit
//!     })
//!     .await?;
//! assert_eq!(outcome.state, TxState::Commit);
//! # Ok(()) }
//! ```
//!
//! The producer registers its group (`RegisterProducer`) on its connection to every broker it
//! talks to, and again every [`REGISTER_INTERVAL`] (after a reconnect), with the brokers that
//! serve the topics it sent to or answers for as the name servers say then (a broker group's
//! new leader after a failover). A broker that finds a
//! transaction undecided sends a one-way `CheckTransaction` on the connection of a live member
//! of the group; the member runs the [`TransactionChecker`] on the message and answers with a
//! one-way `EndTransaction` (nothing for [`TxState::Unknown`]: the broker asks again later).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::{debug, warn};
use weir_proto::batch::{BatchOptions, attributes};
use weir_proto::transaction::{PROP_PRODUCER_GROUP, PROP_TRANSACTION_ID};
use weir_proto::{ApiKey, MessageId, pb};

use crate::connection::{Connection, RequestHandler};
use crate::error::{ClientError, Result};
use crate::message::{Message, ReceivedMessage, SendResult};
use crate::pool::Pool;
use crate::producer::{ProducerConfig, queue_for_key_bytes};
use crate::route::RouteCache;

/// How often the producer registers its group again with each broker it knows.
pub const REGISTER_INTERVAL: Duration = Duration::from_secs(10);
/// Tries at registering with a topic's brokers before it is left to the next interval.
const REGISTER_ATTEMPTS: u32 = 5;
/// Between two of those tries.
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// The state of a local transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// Make the message visible.
    Commit,
    /// Drop the message.
    Rollback,
    /// Not known yet: the broker will check back later.
    Unknown,
}

impl TxState {
    fn decision(self) -> pb::TransactionDecision {
        match self {
            TxState::Commit => pb::TransactionDecision::Commit,
            TxState::Rollback => pb::TransactionDecision::Rollback,
            TxState::Unknown => pb::TransactionDecision::Unknown,
        }
    }
}

/// Answers the broker's check-back about an undecided transaction, given its message (with
/// the transaction id in the `__TRANSACTION_ID` property).
pub type TransactionChecker = Arc<dyn Fn(&ReceivedMessage) -> TxState + Send + Sync>;

/// What [`TransactionProducer::send_in_transaction`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// The transaction id.
    pub transaction_id: String,
    /// Where the half message was stored (in the broker's `%HALF%` topic).
    pub half: SendResult,
    /// What the local transaction answered (and what was sent to the broker).
    pub state: TxState,
    /// For a commit: where the message was stored in its topic.
    pub committed: Option<SendResult>,
}

struct Inner {
    config: ProducerConfig,
    group: String,
    client_id: String,
    checker: TransactionChecker,
    routes: RouteCache,
    /// Broker address → the connection our group is registered on.
    registered: Mutex<std::collections::HashMap<String, Connection>>,
    /// Topics sent to or answered for: their brokers are registered with again and again.
    topics: Mutex<std::collections::BTreeSet<String>>,
    next_transaction: AtomicU64,
    round_robin: AtomicUsize,
}

/// A producer of transactional messages, member of a producer group; cheap to clone.
#[derive(Clone)]
pub struct TransactionProducer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TransactionProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionProducer")
            .field("group", &self.inner.group)
            .field("client_id", &self.inner.client_id)
            .finish()
    }
}

impl TransactionProducer {
    /// A producer in `group` that answers check-backs with `checker`. Registers the group with
    /// the servers in `config` (in standalone mode, the broker itself) before returning.
    pub async fn new(
        config: ProducerConfig,
        group: impl Into<String>,
        checker: impl Fn(&ReceivedMessage) -> TxState + Send + Sync + 'static,
    ) -> Result<TransactionProducer> {
        let group = group.into();
        if group.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a producer group name is required".into(),
            ));
        }
        let pool = Arc::new(Pool::new(config.connection.clone()));
        let routes = RouteCache::new(pool, config.servers.clone())?;
        let client_id = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let inner = Arc::new(Inner {
            group,
            client_id,
            checker: Arc::new(checker),
            routes,
            registered: Mutex::new(std::collections::HashMap::new()),
            topics: Mutex::new(std::collections::BTreeSet::new()),
            next_transaction: AtomicU64::new(0),
            round_robin: AtomicUsize::new(rand::random::<u16>() as usize),
            config,
        });
        let mut registered = false;
        let mut last_error = None;
        for server in inner.config.servers.clone() {
            match inner.ensure_registered(&server).await {
                Ok(_) => registered = true,
                // A name server: the group registers with brokers as their routes name them.
                Err(e) if e.code() == Some(weir_proto::ErrorCode::UnsupportedApi) => {
                    registered = true
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let (false, Some(e)) = (registered, last_error) {
            return Err(e);
        }
        tokio::spawn(reregister(Arc::downgrade(&inner)));
        Ok(TransactionProducer { inner })
    }

    /// The producer group.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// Registers the group with every broker serving `topic`, so this producer is asked about
    /// that topic's undecided transactions before it has sent one there itself: a process that
    /// only answers check-backs calls it for each topic it answers for. (The servers in the
    /// configuration are registered with already; in standalone mode that is the broker.)
    pub async fn register_for_topic(&self, topic: &str) -> Result<()> {
        self.inner.topics.lock().insert(topic.to_owned());
        self.inner.register_for(topic).await
    }

    /// Sends `message` as a half message, runs `local_tx` with where it was stored, and
    /// commits or rolls back as it answers. For [`TxState::Unknown`] nothing is sent: the
    /// broker checks back with the group later.
    pub async fn send_in_transaction(
        &self,
        message: Message,
        local_tx: impl FnOnce(&SendResult) -> TxState,
    ) -> Result<TxOutcome> {
        let inner = &self.inner;
        let transaction_id = format!(
            "{}-{}",
            inner.client_id,
            inner.next_transaction.fetch_add(1, Ordering::Relaxed)
        );
        let route = inner.routes.get(message.topic()).await?;
        if route.queues.is_empty() {
            return Err(ClientError::NoRoute(route.topic.clone()));
        }
        let index = match message.routing_key_bytes() {
            Some(key) => queue_for_key_bytes(key, route.queues.len()),
            None => inner.round_robin.fetch_add(1, Ordering::Relaxed) % route.queues.len(),
        };
        let queue = &route.queues[index];
        inner.topics.lock().insert(message.topic().to_owned());
        let conn = inner.ensure_registered(&queue.broker_addr).await?;
        let message = message
            .with_property(PROP_TRANSACTION_ID, transaction_id.clone())
            .with_property(PROP_PRODUCER_GROUP, inner.group.clone());
        // The half message: one entry, its batch marked transactional.
        let half_entry = message.encode_entry(
            BatchOptions {
                flags: attributes::TRANSACTIONAL,
                ..BatchOptions::default()
            },
            inner.config.compression,
        )?;
        let (stored, _) = conn
            .call::<_, pb::ProduceResponse>(
                ApiKey::Produce,
                &pb::ProduceRequest {
                    topic: message.topic().to_owned(),
                    queue_id: queue.queue_id,
                },
                half_entry.freeze(),
                Some(inner.config.send_timeout),
            )
            .await
            .inspect_err(|e| {
                // The next transaction goes to the group's new leader: the one named in a
                // `NOT_LEADER` answer, else wherever the name servers say then.
                if !e.is_about_the_message()
                    && !inner.routes.follow_leader_named(&queue.broker_name, e)
                {
                    inner.routes.invalidate(message.topic());
                }
            })?;
        let broker = if stored.broker_name.is_empty() || *stored.broker_name == *queue.broker_name {
            queue.broker_name.clone()
        } else {
            Arc::from(stored.broker_name)
        };
        let half = SendResult {
            message_id: MessageId::new(broker, stored.commit_log_offset, 0),
            topic: message.topic().to_owned(),
            queue_id: queue.queue_id,
            queue_offset: stored.queue_offset,
        };
        let state = local_tx(&half);
        let committed = inner.decide(&conn, &transaction_id, &half, state).await?;
        Ok(TxOutcome {
            transaction_id,
            half,
            state,
            committed,
        })
    }

    /// Decides a transaction its local transaction left [`TxState::Unknown`], once the outcome
    /// is known (an asynchronous local transaction, say), sparing the broker its check-back.
    /// Returns where a committed message was stored (`None` for a transaction decided before:
    /// deciding it again changes nothing).
    pub async fn end_transaction(
        &self,
        outcome: &TxOutcome,
        state: TxState,
    ) -> Result<Option<SendResult>> {
        let half = &outcome.half;
        let broker = self
            .inner
            .routes
            .addr_of_group(&half.message_id.broker, &half.topic)
            .await?;
        let conn = self.inner.ensure_registered(&broker).await?;
        self.inner
            .decide(&conn, &outcome.transaction_id, &outcome.half, state)
            .await
    }
}

impl Inner {
    /// Registers the group with every broker serving `topic`; a broker that fails makes the
    /// route be asked again next time.
    async fn register_for(&self, topic: &str) -> Result<()> {
        // A route may still name a leader that died: asked again, it names the new one.
        let mut attempt = 0;
        loop {
            let route = self.routes.get(topic).await?;
            let mut failed = None;
            for broker in route.brokers() {
                if let Err(e) = self.ensure_registered(&broker).await {
                    failed = Some(e);
                }
            }
            let Some(e) = failed else { return Ok(()) };
            self.routes.invalidate(topic);
            attempt += 1;
            if attempt >= REGISTER_ATTEMPTS {
                return Err(e);
            }
            tokio::time::sleep(REGISTER_RETRY).await;
        }
    }

    /// The connection to `addr`, our group registered on it (registering it if it is new).
    async fn ensure_registered(&self, addr: &str) -> Result<Connection> {
        let conn = self.routes.pool().get(addr).await?;
        let known = self
            .registered
            .lock()
            .get(addr)
            .is_some_and(|c| c.same_as(&conn));
        if !known {
            conn.set_request_handler(check_handler(self.checker.clone()));
            conn.call::<_, pb::Empty>(
                ApiKey::RegisterProducer,
                &pb::RegisterProducerRequest {
                    producer_group: self.group.clone(),
                    client_id: self.client_id.clone(),
                },
                Bytes::new(),
                None,
            )
            .await?;
            debug!(addr, group = %self.group, "producer group registered");
            self.registered.lock().insert(addr.to_owned(), conn.clone());
        }
        Ok(conn)
    }

    /// Sends `state` for the transaction of the half message `half` (nothing for
    /// [`TxState::Unknown`]: the broker checks back later); for a commit, where the message
    /// was stored, if this decision stored it.
    async fn decide(
        &self,
        conn: &Connection,
        transaction_id: &str,
        half: &SendResult,
        state: TxState,
    ) -> Result<Option<SendResult>> {
        if state == TxState::Unknown {
            debug!(%transaction_id, "local transaction undecided; the broker will check back");
            return Ok(None);
        }
        let response = self
            .end(
                conn,
                transaction_id,
                half.message_id.commit_log_offset,
                state,
            )
            .await?;
        // No position: a rollback, a transaction decided before, or one the broker rolled
        // back because its queue is gone.
        let stored = state == TxState::Commit && !response.topic.is_empty();
        Ok(stored.then_some(SendResult {
            // The committed copy is an entry of its own.
            message_id: MessageId::new(
                half.message_id.broker.clone(),
                response.commit_log_offset,
                0,
            ),
            topic: response.topic,
            queue_id: response.queue_id,
            queue_offset: response.queue_offset,
        }))
    }

    /// Sends the decision, retrying retriable failures (deciding twice is harmless).
    async fn end(
        &self,
        conn: &Connection,
        transaction_id: &str,
        half_offset: u64,
        state: TxState,
    ) -> Result<pb::EndTransactionResponse> {
        let request = pb::EndTransactionRequest {
            producer_group: self.group.clone(),
            transaction_id: transaction_id.to_owned(),
            half_offset,
            decision: state.decision() as i32,
        };
        let mut attempt = 0;
        loop {
            let sent = conn
                .call::<_, pb::EndTransactionResponse>(
                    ApiKey::EndTransaction,
                    &request,
                    Bytes::new(),
                    None,
                )
                .await;
            match sent {
                Ok((response, _)) => return Ok(response),
                Err(e) if e.is_retriable() && attempt < self.config.retries => {
                    attempt += 1;
                    warn!(transaction_id, attempt, error = %e, "ending the transaction failed, retrying");
                    tokio::time::sleep(self.config.retry_backoff * attempt).await;
                }
                // The broker will check back and ask the checker.
                Err(e) => return Err(e),
            }
        }
    }
}

/// Registers the group again with every known broker, until the producer is dropped.
async fn reregister(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(REGISTER_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let addrs: Vec<String> = inner.registered.lock().keys().cloned().collect();
        for addr in addrs {
            if let Err(e) = inner.ensure_registered(&addr).await {
                debug!(addr, error = %e, "registering the producer group failed");
            }
        }
        let topics: Vec<String> = inner.topics.lock().iter().cloned().collect();
        for topic in topics {
            if let Err(e) = inner.register_for(&topic).await {
                debug!(topic, error = %e, "registering the producer group failed");
            }
        }
    }
}

/// The handler of `CheckTransaction` requests: runs the checker off the reader task and
/// answers a commit or rollback with a one-way `EndTransaction`.
fn check_handler(checker: TransactionChecker) -> RequestHandler {
    Arc::new(move |frame, replier| {
        if frame.header.api_key != ApiKey::CheckTransaction as u16 {
            debug!(
                api = frame.header.api_key,
                "ignoring an unexpected request from the server"
            );
            return;
        }
        let checker = checker.clone();
        tokio::task::spawn_blocking(move || {
            let request = match <pb::CheckTransactionRequest as prost::Message>::decode(frame.meta)
            {
                Ok(request) => request,
                Err(e) => {
                    warn!(error = %e, "undecodable transaction check");
                    return;
                }
            };
            let payload = frame.payload.freeze();
            let mut message = match ReceivedMessage::decode_all(&payload, "") {
                Ok(mut messages) if messages.len() == 1 => messages.remove(0),
                _ => {
                    warn!(transaction_id = %request.transaction_id, "transaction check without its message");
                    return;
                }
            };
            message.queue_id = request.queue_id;
            let state = checker(&message);
            debug!(transaction_id = %request.transaction_id, ?state, "transaction checked");
            if state == TxState::Unknown {
                return;
            }
            let answer = pb::EndTransactionRequest {
                producer_group: request.producer_group,
                transaction_id: request.transaction_id,
                half_offset: request.half_offset,
                decision: state.decision() as i32,
            };
            if let Err(e) = replier.send_oneway(
                ApiKey::EndTransaction,
                Bytes::from(prost::Message::encode_to_vec(&answer)),
                Bytes::new(),
            ) {
                debug!(error = %e, "answering a transaction check failed");
            }
        });
    })
}

//! The per-queue accumulator: concurrent sends to one queue share produce requests.
//!
//! Each (topic, queue) has at most one open batch: messages are encoded as records straight
//! into its [`BatchBuilder`] (one buffer: the entry a Produce request carries) as they arrive. A batch is sealed when it holds `max_messages` messages, when
//! the next message would take it past `max_bytes`, or `linger` after its first message. One
//! batch per queue is in flight at a time, so batches to a queue are stored in the order they
//! were sealed (per-key order), and under load the next batch fills up while the previous one
//! is in flight. A sealed batch is finished (compressed with the producer's codec, its CRC
//! computed) once, when it is first sent; a resend sends the same bytes.
//! [`Batcher::enqueue_batch`] adds a whole batch of the caller's at once, as one entry with one
//! completion.
//!
//! A batch that fails with a retriable error is sent again as a batch, by its queue's own
//! task, so the retries of many queues' batches proceed side by side (never one message after
//! another). `busy` answers and refused connections (the batch was not stored) are retried
//! with a growing, jittered back-off for as long as the batch's delivery timeout allows; other
//! retriable failures (a timeout, a lost connection: the batch may have been stored) are
//! retried at most `retries` times. The timeout of each attempt follows the broker's
//! acknowledgement latency ([`AckLatency`]). Outside idempotent mode a resend of a batch that
//! may have been stored can store it twice: such resends are counted
//! ([`Batcher::resent_maybe_stored`]) and logged, never silent.
//!
//! A `NOT_LEADER` answer (the broker is a follower of its group) is not a failure of the
//! batch: the batch goes at once, with the same bytes and sequences, to the leader the answer
//! names (the route cache switches the group there for every later batch too), or, when it
//! names none, to wherever the name servers route the group after a short back-off. A
//! connection failure asks the name servers again too, so a batch follows its group's leader
//! when it moves. Both stay within the batch's delivery timeout.
//!
//! Idempotent mode: each broker group hands the producer an id (kept across its leaders) (`InitProducerId`); every batch
//! carries it and the sequence of its first message (Kafka's base sequence; message i has
//! sequence base + i), counted per (topic, queue). A batch that fails with a retriable error is sent again as it is — same bytes, same
//! sequences — so a batch whose acknowledgement was lost is recognised by the broker and
//! answered with its original position instead of being stored twice. A batch that fails for
//! good makes the producer drop its id for that broker: the next batch gets a new id and starts
//! its sequences over (the batches already sealed behind it fail with
//! `out_of_order_sequence`).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, warn};
use weir_proto::batch::{BatchBuilder, BatchOptions, Compression};
use weir_proto::{ApiKey, ErrorCode, MessageId, pb};

use crate::ack_latency::AckLatency;
use crate::error::{ClientError, Result};
use crate::fault::LatencyFaults;
use crate::message::{Message, SendResult, now_ms};
use crate::pool::Pool;
use crate::route::{QueueRoute, RouteCache};

/// When a batch is sealed and sent.
#[derive(Debug, Clone)]
pub(crate) struct BatchConfig {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub linger: Duration,
    pub send_timeout: Duration,
    /// The longest a batch may take, from its first attempt to its last, back-offs included.
    pub delivery_timeout: Duration,
    /// Stamp producer ids and sequences (resends are then recognised by the broker).
    pub idempotent: bool,
    /// How many times a batch that may have been stored is sent again.
    pub retries: u32,
    /// Wait before the first resend; doubles for each next one, up to [`MAX_BACKOFF`].
    pub retry_backoff: Duration,
    /// How batches are compressed.
    pub compression: Compression,
}

/// The longest wait between two attempts of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the broker answered for a batch: its entry's commit-log offset and its first
/// message's queue offset (message i: queue offset + i, index i), or, for a batch with delayed
/// messages, where each message went.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    /// The broker group that stored the batch (one name shared by every message's id).
    pub broker: Arc<str>,
    pub commit_log_offset: u64,
    pub queue_offset: u64,
    /// Each message's (commit-log offset, queue offset, index), when the broker listed them.
    pub listed: Option<Arc<[(u64, u64, u32)]>>,
}

impl Acked {
    /// Where message `index` of the batch went: (commit-log offset of its entry, queue
    /// offset, index in that entry).
    pub(crate) fn position(&self, index: u32) -> (u64, u64, u32) {
        match &self.listed {
            Some(listed) => listed.get(index as usize).copied().unwrap_or((
                self.commit_log_offset,
                self.queue_offset,
                index,
            )),
            None => (
                self.commit_log_offset,
                self.queue_offset + u64::from(index),
                index,
            ),
        }
    }
}

/// The outcome of one batch, shared by the [`Reply`] of every message in it: one allocation
/// and one completion per batch instead of a channel per message.
struct BatchOutcome {
    topic: String,
    /// Its group's name, from the route (for ids when the answer does not name the group).
    broker_name: Arc<str>,
    queue_id: u32,
    state: Mutex<OutcomeState>,
}

#[derive(Default)]
struct OutcomeState {
    result: Option<std::result::Result<Acked, ClientError>>,
    /// Tasks waiting for the result.
    wakers: Vec<Waker>,
}

impl BatchOutcome {
    /// Sets the result (unless one is set) and wakes every waiting message.
    fn finish(&self, result: std::result::Result<Acked, ClientError>) {
        let wakers = {
            let mut state = self.state.lock();
            if state.result.is_some() {
                return;
            }
            state.result = Some(result);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// One message's send result: resolves when its batch is answered. The message's id and
/// queue offset follow from the batch's: it is the batch's `index`-th.
pub(crate) struct Reply {
    outcome: Arc<BatchOutcome>,
    index: u32,
}

impl Reply {
    /// The topic of the message's batch (kept once per batch, not per message).
    pub(crate) fn topic(&self) -> &str {
        &self.outcome.topic
    }
}

impl Future for Reply {
    type Output = Result<SendResult>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Reply { outcome, index } = &*self;
        let mut state = outcome.state.lock();
        match &state.result {
            Some(Ok(acked)) => {
                let (commit_log_offset, queue_offset, index) = acked.position(*index);
                Poll::Ready(Ok(SendResult {
                    message_id: MessageId::new(acked.broker.clone(), commit_log_offset, index),
                    topic: outcome.topic.clone(),
                    queue_id: outcome.queue_id,
                    queue_offset,
                }))
            }
            Some(Err(e)) => Poll::Ready(Err(e.duplicate())),
            None => {
                if state.wakers.last().is_none_or(|w| !w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Where a batch sent with [`Producer::send_batch`](crate::Producer::send_batch) was stored:
/// one value for the whole batch; each message's [`SendResult`] is derived on demand.
#[derive(Debug, Clone)]
pub struct BatchSendResult {
    topic: String,
    queue_id: u32,
    count: u32,
    acked: Acked,
}

impl BatchSendResult {
    fn new(topic: String, queue_id: u32, count: u32, acked: Acked) -> BatchSendResult {
        BatchSendResult {
            topic,
            queue_id,
            count,
            acked,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The queue the batch went to.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    /// Always false: a batch holds at least one message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The broker group that stored it.
    pub fn broker(&self) -> &str {
        &self.acked.broker
    }
    /// Commit-log offset of the entry holding the batch.
    pub fn commit_log_offset(&self) -> u64 {
        self.acked.commit_log_offset
    }
    /// Queue offset of the first message (message i has this + i, unless the batch held
    /// delayed messages, which the broker stores apart: see [`BatchSendResult::get`]).
    pub fn queue_offset(&self) -> u64 {
        self.acked.queue_offset
    }
    /// Where message `index` of the batch was stored.
    pub fn get(&self, index: usize) -> Option<SendResult> {
        let index = u32::try_from(index).ok().filter(|&i| i < self.count)?;
        let (commit_log_offset, queue_offset, in_entry) = self.acked.position(index);
        Some(SendResult {
            message_id: MessageId::new(self.acked.broker.clone(), commit_log_offset, in_entry),
            topic: self.topic.clone(),
            queue_id: self.queue_id,
            queue_offset,
        })
    }
    /// Where each message was stored, in batch order.
    pub fn iter(&self) -> impl Iterator<Item = SendResult> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// The one completion of a whole batch added by [`Batcher::enqueue_batch`].
pub(crate) struct BatchReply {
    outcome: Arc<BatchOutcome>,
    count: u32,
}

impl Future for BatchReply {
    type Output = Result<BatchSendResult>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = &self.outcome;
        let mut state = outcome.state.lock();
        match &state.result {
            Some(Ok(acked)) => Poll::Ready(Ok(BatchSendResult::new(
                outcome.topic.clone(),
                outcome.queue_id,
                self.count,
                acked.clone(),
            ))),
            Some(Err(e)) => Poll::Ready(Err(e.duplicate())),
            None => {
                if state.wakers.last().is_none_or(|w| !w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl BatchReply {
    /// The topic of the batch.
    pub(crate) fn topic(&self) -> &str {
        &self.outcome.topic
    }
}

struct Batch {
    id: u64,
    /// The records so far; taken (and finished) when the batch is first sent.
    builder: Option<BatchBuilder>,
    /// Messages in the batch.
    count: u32,
    /// Born timestamp of its first message (records store theirs as deltas from it).
    base_timestamp: i64,
    outcome: Arc<BatchOutcome>,
    created: Instant,
}

impl Batch {
    /// Bytes so far, uncompressed.
    fn len(&self) -> usize {
        self.builder.as_ref().map_or(0, BatchBuilder::len)
    }
}

impl Drop for Batch {
    /// A batch dropped unanswered (the producer is gone) fails its messages.
    fn drop(&mut self) {
        self.outcome.finish(Err(ClientError::Closed));
    }
}

#[derive(Default)]
struct QueueState {
    broker_addr: String,
    open: Option<Batch>,
    sealed: VecDeque<Batch>,
    in_flight: bool,
    next_id: u64,
    /// Idempotent mode: the producer id the sequences below count for.
    producer_id: Option<i64>,
    /// Idempotent mode: the sequence of the next message.
    next_seq: i32,
}

impl QueueState {
    fn seal(&mut self) {
        // A batch whose first message failed to encode holds nothing to send.
        if let Some(batch) = self.open.take().filter(|b| b.count > 0) {
            self.sealed.push_back(batch);
        }
    }

    /// The next batch to send if none is in flight, marking it in flight.
    fn take_sendable(&mut self) -> Option<Batch> {
        if self.in_flight {
            return None;
        }
        let batch = self.sealed.pop_front()?;
        self.in_flight = true;
        Some(batch)
    }
}

/// The accumulators of every queue a producer sends to.
pub(crate) struct Batcher {
    config: BatchConfig,
    pool: Arc<Pool>,
    faults: Arc<LatencyFaults>,
    /// topic → queue id → state; keyed by `&str` lookups so enqueueing allocates nothing.
    queues: Mutex<HashMap<String, HashMap<u32, QueueState>>>,
    outstanding: AtomicUsize,
    idle: Notify,
    /// Idempotent mode: broker address → the producer id it gave us.
    producer_ids: Mutex<HashMap<String, i64>>,
    /// Produce acknowledgement latency, for the request timeout.
    latency: AckLatency,
    /// Bytes of batches being sent now, for the request timeout.
    in_flight_bytes: AtomicU64,
    /// Messages acknowledged after a resend of a batch that may have been stored already
    /// (outside idempotent mode: possibly stored twice).
    resent_maybe_stored: AtomicU64,
    /// Bytes of entries sent (see [`Batcher::sent_bytes`]).
    sent_bytes: AtomicU64,
    /// Where a batch goes when its group's leader moved.
    routes: Arc<RouteCache>,
}

impl Batcher {
    pub(crate) fn new(
        config: BatchConfig,
        pool: Arc<Pool>,
        faults: Arc<LatencyFaults>,
        routes: Arc<RouteCache>,
    ) -> Self {
        Batcher {
            routes,
            config,
            pool,
            faults,
            queues: Mutex::new(HashMap::new()),
            outstanding: AtomicUsize::new(0),
            idle: Notify::new(),
            producer_ids: Mutex::new(HashMap::new()),
            latency: AckLatency::default(),
            in_flight_bytes: AtomicU64::new(0),
            resent_maybe_stored: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        }
    }

    /// Messages acknowledged after their batch was resent although an earlier attempt may have
    /// been stored (outside idempotent mode, each may be stored twice).
    pub(crate) fn resent_maybe_stored(&self) -> u64 {
        self.resent_maybe_stored.load(Ordering::Relaxed)
    }

    /// Whether records to broker group `group` can be stamped now (always, unless idempotent
    /// and no producer id from that group yet).
    pub(crate) fn ready_for(&self, group: &str) -> bool {
        !self.config.idempotent || self.producer_ids.lock().contains_key(group)
    }

    /// Idempotent mode: asks broker group `group` (its leader at `addr`) for a producer id
    /// unless we have one. The id is the group's, not one replica's: after a failover the new
    /// leader knows the producer's sequences from the replicated log, so the producer keeps
    /// its id and its sequences, and a batch resent across the failover is stored once.
    pub(crate) async fn ensure_producer_id(&self, group: &str, addr: &str) -> Result<()> {
        if self.ready_for(group) {
            return Ok(());
        }
        let conn = self.pool.get(addr).await?;
        let (response, _) = conn
            .call::<_, pb::InitProducerIdResponse>(
                ApiKey::InitProducerId,
                &pb::Empty {},
                bytes::Bytes::new(),
                None,
            )
            .await?;
        debug!(
            addr,
            producer_id = response.producer_id,
            "producer id assigned"
        );
        let id = i64::try_from(response.producer_id).map_err(|_| {
            ClientError::Protocol(format!("producer id {} out of range", response.producer_id))
        })?;
        self.producer_ids
            .lock()
            .entry(group.to_owned())
            .or_insert(id);
        Ok(())
    }

    /// The producer id batches to `queue` carry now (idempotent mode), resetting the queue's
    /// sequences (in a batch of their own) when it changed.
    fn producer_id_for(&self, state: &mut QueueState, queue: &QueueRoute) -> Result<Option<i64>> {
        if !self.config.idempotent {
            return Ok(None);
        }
        let id = self
            .producer_ids
            .lock()
            .get(&*queue.broker_name)
            .copied()
            .ok_or_else(|| {
                ClientError::Protocol(format!("no producer id from {} yet", queue.broker_name))
            })?;
        if state.producer_id != Some(id) {
            // A new id: its sequences start over, in a batch of their own.
            state.seal();
            state.producer_id = Some(id);
            state.next_seq = 0;
        }
        Ok(Some(id))
    }

    /// The batch-level fields of a new batch whose first message has sequence `next_seq`.
    fn options(producer_id: Option<i64>, next_seq: i32) -> BatchOptions {
        match producer_id {
            Some(producer_id) => BatchOptions {
                producer_id,
                producer_epoch: 0,
                base_sequence: next_seq,
                ..BatchOptions::default()
            },
            None => BatchOptions::default(),
        }
    }

    fn new_outcome(topic: &str, queue: &QueueRoute) -> Arc<BatchOutcome> {
        Arc::new(BatchOutcome {
            topic: topic.to_owned(),
            broker_name: queue.broker_name.clone(),
            queue_id: queue.queue_id,
            state: Mutex::new(OutcomeState::default()),
        })
    }

    /// Adds `message` to the open batch of `queue`; the reply yields its send result.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        message: &Message,
        queue: &QueueRoute,
    ) -> Result<Reply> {
        let reply;
        let mut to_send = None;
        let mut new_batch = None;
        let born = now_ms();
        {
            let mut topics = self.queues.lock();
            let topic = match topics.get_mut(message.topic()) {
                Some(t) => t,
                None => topics.entry(message.topic().to_owned()).or_default(),
            };
            let state = topic.entry(queue.queue_id).or_default();
            if state.broker_addr != queue.broker_addr {
                state.broker_addr.clone_from(&queue.broker_addr);
            }
            let producer_id = self.producer_id_for(state, queue)?;
            if let Some(open) = &state.open
                && open.count > 0
                && open.len() + message.encoded_len(born, open.base_timestamp, open.count)
                    > self.config.max_bytes
            {
                state.seal();
            }
            if state.open.is_none() {
                state.next_id += 1;
                new_batch = Some(state.next_id);
            }
            let id = state.next_id;
            let open = match state.open {
                Some(ref mut open) => open,
                None => {
                    // Room for a full batch of records like this one, so the buffer is not
                    // regrown (and copied) while the batch fills.
                    let capacity = message
                        .encoded_len(born, born, 0)
                        .saturating_add(2)
                        .saturating_mul(self.config.max_messages)
                        .min(self.config.max_bytes);
                    let builder = BatchBuilder::with_capacity(
                        message.topic(),
                        Self::options(producer_id, state.next_seq),
                        capacity,
                    )?;
                    state.open.insert(Batch {
                        id,
                        builder: Some(builder),
                        count: 0,
                        base_timestamp: born,
                        outcome: Self::new_outcome(message.topic(), queue),
                        created: Instant::now(),
                    })
                }
            };
            let Some(builder) = open.builder.as_mut() else {
                return Err(ClientError::Protocol("open batch already sent".into()));
            };
            message.push_to(builder, born)?;
            if producer_id.is_some() {
                state.next_seq = next_sequence(state.next_seq, 1);
            }
            reply = Reply {
                outcome: open.outcome.clone(),
                index: open.count,
            };
            open.count += 1;
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            if open.count as usize >= self.config.max_messages
                || open.len() >= self.config.max_bytes
            {
                state.seal();
            }
            if let Some(batch) = state.take_sendable() {
                to_send = Some((state.broker_addr.clone(), batch));
            }
        }
        if let Some(batch_id) = new_batch
            && !self.config.linger.is_zero()
        {
            let me = self.clone();
            let topic = message.topic().to_owned();
            let queue_id = queue.queue_id;
            tokio::spawn(async move {
                tokio::time::sleep(me.config.linger).await;
                me.linger_expired(&topic, queue_id, batch_id);
            });
        }
        if self.config.linger.is_zero() && to_send.is_none() {
            // No lingering: seal at once unless a batch is in flight (which seals on return).
            let mut topics = self.queues.lock();
            if let Some(state) = topics
                .get_mut(message.topic())
                .and_then(|t| t.get_mut(&queue.queue_id))
                && !state.in_flight
            {
                state.seal();
                if let Some(batch) = state.take_sendable() {
                    to_send = Some((state.broker_addr.clone(), batch));
                }
            }
        }
        if let Some((addr, batch)) = to_send {
            self.spawn_send(message.topic().to_owned(), queue.queue_id, addr, batch);
        }
        Ok(reply)
    }

    /// Adds `messages` (all of `topic`) to `queue` as one batch of their own, sent as one
    /// entry after the batches before it; the reply is the one completion of them all. The
    /// queue's open batch is sealed first, so order is kept.
    pub(crate) fn enqueue_batch(
        self: &Arc<Self>,
        topic: &str,
        messages: &[Message],
        queue: &QueueRoute,
    ) -> Result<BatchReply> {
        let count = u32::try_from(messages.len())
            .ok()
            .filter(|&n| n > 0 && n <= i32::MAX as u32)
            .ok_or_else(|| {
                ClientError::InvalidArgument("a batch needs 1 to 2^31 messages".into())
            })?;
        if let Some(other) = messages.iter().find(|m| m.topic() != topic) {
            return Err(ClientError::InvalidArgument(format!(
                "a batch goes to one topic: '{}' is not '{topic}'",
                other.topic()
            )));
        }
        // Encoded before the queue's lock is taken: only the batch-level fields (producer id,
        // base sequence) are set under it.
        let born = now_ms();
        let capacity = messages
            .iter()
            .enumerate()
            .map(|(i, m)| m.encoded_len(born, born, i as u32))
            .sum();
        let mut builder = BatchBuilder::with_capacity(topic, BatchOptions::default(), capacity)?;
        for message in messages {
            message.push_to(&mut builder, born)?;
        }
        let to_send = {
            let mut topics = self.queues.lock();
            let topics_entry = match topics.get_mut(topic) {
                Some(t) => t,
                None => topics.entry(topic.to_owned()).or_default(),
            };
            let state = topics_entry.entry(queue.queue_id).or_default();
            if state.broker_addr != queue.broker_addr {
                state.broker_addr.clone_from(&queue.broker_addr);
            }
            let producer_id = self.producer_id_for(state, queue)?;
            *builder.options_mut() = Self::options(producer_id, state.next_seq);
            if producer_id.is_some() {
                state.next_seq = next_sequence(state.next_seq, count);
            }
            state.seal();
            state.next_id += 1;
            let outcome = Self::new_outcome(topic, queue);
            state.sealed.push_back(Batch {
                id: state.next_id,
                builder: Some(builder),
                count,
                base_timestamp: born,
                outcome: outcome.clone(),
                created: Instant::now(),
            });
            self.outstanding.fetch_add(count as usize, Ordering::AcqRel);
            let to_send = state
                .take_sendable()
                .map(|batch| (state.broker_addr.clone(), batch));
            (to_send, outcome)
        };
        let (to_send, outcome) = to_send;
        if let Some((addr, batch)) = to_send {
            self.spawn_send(topic.to_owned(), queue.queue_id, addr, batch);
        }
        Ok(BatchReply { outcome, count })
    }

    fn linger_expired(self: &Arc<Self>, topic: &str, queue_id: u32, batch_id: u64) {
        let to_send = {
            let mut topics = self.queues.lock();
            let Some(state) = topics.get_mut(topic).and_then(|t| t.get_mut(&queue_id)) else {
                return;
            };
            if state.open.as_ref().is_some_and(|b| b.id == batch_id) {
                state.seal();
            }
            state
                .take_sendable()
                .map(|batch| (state.broker_addr.clone(), batch))
        };
        if let Some((addr, batch)) = to_send {
            self.spawn_send(topic.to_owned(), queue_id, addr, batch);
        }
    }

    fn spawn_send(self: &Arc<Self>, topic: String, queue_id: u32, addr: String, batch: Batch) {
        let me = self.clone();
        tokio::spawn(async move { me.send_loop(topic, queue_id, addr, batch).await });
    }

    /// Sends `batch`, then whatever else became ready for the queue meanwhile.
    async fn send_loop(self: Arc<Self>, topic: String, queue_id: u32, addr: String, batch: Batch) {
        let mut next = Some((addr, batch));
        while let Some((addr, batch)) = next.take() {
            let reached = self.send_one(&topic, queue_id, &addr, batch).await;
            let mut topics = self.queues.lock();
            let Some(state) = topics.get_mut(&topic).and_then(|t| t.get_mut(&queue_id)) else {
                return;
            };
            state.in_flight = false;
            if reached != addr && state.broker_addr == addr {
                // The group's leader moved: the batches sealed behind this one follow it.
                state.broker_addr = reached;
            }
            if state.sealed.is_empty()
                && state
                    .open
                    .as_ref()
                    .is_some_and(|b| b.created.elapsed() >= self.config.linger)
            {
                state.seal();
            }
            next = state
                .take_sendable()
                .map(|batch| (state.broker_addr.clone(), batch));
        }
    }

    /// Sends `batch` to `addr` (or wherever its group's leader moved meanwhile) until it is
    /// answered or fails for good; returns the address it went to last.
    async fn send_one(&self, topic: &str, queue_id: u32, addr: &str, mut batch: Batch) -> String {
        let count = batch.count as usize;
        let payload = match self.finish(&mut batch) {
            Ok(payload) => payload,
            Err(e) => {
                batch.outcome.finish(Err(e));
                self.answered(count);
                return addr.to_owned();
            }
        };
        let group = batch.outcome.broker_name.clone();
        let mut target = addr.to_owned();
        let addr = &mut target;
        let started = Instant::now();
        let deadline = started + self.config.delivery_timeout;
        let request = pb::ProduceRequest {
            topic: topic.to_owned(),
            queue_id,
        };
        let bytes = payload.len() as u64;
        let ahead = self.in_flight_bytes.fetch_add(bytes, Ordering::Relaxed);
        // Resends after failures that may have stored the batch, and after ones that did not.
        let mut unsure_resends = 0u32;
        let mut sure_resends = 0u32;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = self
                .latency
                .timeout(self.config.send_timeout, ahead + bytes)
                .min(left);
            let sent_at = Instant::now();
            let result = async {
                let conn = self.pool.get(addr.as_str()).await?;
                conn.call::<_, pb::ProduceResponse>(
                    ApiKey::Produce,
                    &request,
                    payload.clone(),
                    Some(timeout),
                )
                .await
            }
            .await;
            match &result {
                Ok(_) | Err(ClientError::Timeout { .. }) => {
                    self.latency.record(sent_at.elapsed());
                }
                Err(_) => {}
            }
            let e = match result {
                Ok(answer) => break Ok(answer),
                Err(e) if !e.is_retriable() => break Err(e),
                Err(e) => e,
            };
            let not_leader = e.code() == Some(ErrorCode::NotLeader);
            if not_leader
                || matches!(
                    e,
                    ClientError::Connect { .. }
                        | ClientError::ConnectionLost { .. }
                        | ClientError::Timeout { .. }
                )
            {
                // Follow the group's leader: named in the answer (at once), else as the name
                // servers route it now (a leader that hangs, stopped or cut off from its
                // clients, answers nothing: once the others have elected a new one, the name
                // servers name it).
                let named = not_leader && crate::route::leader_hint(&e.to_string()).is_some();
                if not_leader && !named {
                    let pause = jittered(backoff(self.config.retry_backoff, sure_resends + 1));
                    if Instant::now() + pause >= deadline {
                        break Err(e);
                    }
                    tokio::time::sleep(pause).await;
                }
                if let Some(next) = self.routes.reroute(&group, topic, &e).await
                    && next != *addr
                {
                    debug!(topic, queue_id, from = %addr, to = %next, error = %e, "batch follows its group's leader");
                    *addr = next;
                    if not_leader && sure_resends < 3 {
                        // Refused, so not stored: resent at once, same bytes and sequences
                        // (after a few switches in a row, with the usual back-off).
                        sure_resends += 1;
                        continue;
                    }
                }
            }
            let maybe_stored = e.may_have_been_stored();
            if maybe_stored && unsure_resends >= self.config.retries {
                break Err(e);
            }
            let step = if maybe_stored {
                unsure_resends += 1;
                unsure_resends
            } else {
                sure_resends += 1;
                sure_resends
            };
            let backoff = jittered(backoff(self.config.retry_backoff, step));
            if Instant::now() + backoff >= deadline {
                break Err(e);
            }
            debug!(topic, queue_id, maybe_stored, error = %e, ?backoff, "resending a batch");
            tokio::time::sleep(backoff).await;
        };
        let result = match result {
            // Stored or not, its sequences are spent: a new id makes the next batch safe.
            Err(e) if self.config.idempotent => {
                self.producer_ids.lock().remove(&*group);
                Err(e)
            }
            Ok(answer) if unsure_resends > 0 && !self.config.idempotent => {
                self.resent_maybe_stored
                    .fetch_add(count as u64, Ordering::Relaxed);
                warn!(
                    topic,
                    queue_id,
                    count,
                    "a batch was resent after an attempt that may have stored it: its messages may be stored twice (use an idempotent producer to rule that out)"
                );
                Ok(answer)
            }
            other => other,
        };
        self.in_flight_bytes.fetch_sub(bytes, Ordering::Relaxed);
        let latency = started.elapsed();
        let failed = matches!(&result, Err(e) if e.is_retriable());
        self.faults.record(addr.as_str(), latency, failed);
        debug!(
            topic,
            queue_id,
            count,
            ?latency,
            ok = result.is_ok(),
            "batch sent"
        );
        match result {
            Ok((response, _)) => {
                let acked = acked(topic, &batch.outcome.broker_name, count, &response);
                batch.outcome.finish(Ok(acked));
            }
            Err(e) => batch.outcome.finish(Err(e)),
        }
        self.answered(count);
        target
    }

    /// Seals `batch`'s records into the entry to send: compressed, its CRC computed. Once
    /// per batch: resends send the same bytes.
    fn finish(&self, batch: &mut Batch) -> Result<Bytes> {
        let builder = batch
            .builder
            .take()
            .ok_or_else(|| ClientError::Protocol("batch sent twice".into()))?;
        let entry = builder.finish(self.config.compression)?;
        self.sent_bytes
            .fetch_add(entry.len() as u64, Ordering::Relaxed);
        Ok(entry.freeze())
    }

    /// `count` messages were answered (stored or failed for good).
    fn answered(&self, count: usize) {
        if self.outstanding.fetch_sub(count, Ordering::AcqRel) == count {
            self.idle.notify_waiters();
        }
    }

    /// Bytes of entries sent so far (compressed, envelopes included; resends counted once).
    pub(crate) fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }

    /// Seals every open batch and waits until every message enqueued so far is answered.
    pub(crate) async fn flush(self: &Arc<Self>) {
        let mut to_send = Vec::new();
        {
            let mut topics = self.queues.lock();
            for (topic, queues) in topics.iter_mut() {
                for (queue_id, state) in queues.iter_mut() {
                    state.seal();
                    if let Some(batch) = state.take_sendable() {
                        to_send.push((topic.clone(), *queue_id, state.broker_addr.clone(), batch));
                    }
                }
            }
        }
        for (topic, queue_id, addr, batch) in to_send {
            self.spawn_send(topic, queue_id, addr, batch);
        }
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// The sequence `count` messages after `seq`: sequences run 0 to `i32::MAX`, then start over
/// at 0 (Kafka's rule).
fn next_sequence(seq: i32, count: u32) -> i32 {
    ((i64::from(seq) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

/// The wait before resend number `step` (1-based): `base`, doubled for each next one, at
/// most [`MAX_BACKOFF`].
fn backoff(base: Duration, step: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(step.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

/// `wait`, spread over its upper half at random, so producers refused together do not come
/// back together.
fn jittered(wait: Duration) -> Duration {
    wait / 2 + wait.mul_f64(rand::random::<f64>() / 2.0)
}

/// Where an acknowledged batch went: its entry's commit-log offset and its first message's
/// queue offset; message i follows at index i (see [`Acked::position`]). The ids name the
/// group the answer names, else the group the route names (`routed`); the route's name is
/// shared when the two agree, so an answer costs no allocation.
fn acked(topic: &str, routed: &Arc<str>, count: usize, response: &pb::ProduceResponse) -> Acked {
    let broker = if response.broker_name.is_empty() || *response.broker_name == **routed {
        routed.clone()
    } else {
        Arc::from(response.broker_name.as_str())
    };
    if response.count as usize != count {
        debug!(
            topic,
            expected = count,
            got = response.count,
            "produce count mismatch"
        );
    }
    // A batch with delayed messages was not stored as one entry: the broker lists each
    // message's position.
    let listed = (response.record_offsets.len() == count
        && response.record_queue_offsets.len() == count)
        .then(|| {
            (0..count)
                .map(|i| {
                    (
                        response.record_offsets[i],
                        response.record_queue_offsets[i],
                        response.record_indexes.get(i).copied().unwrap_or(0),
                    )
                })
                .collect()
        });
    Acked {
        broker,
        commit_log_offset: response.commit_log_offset,
        queue_offset: response.queue_offset,
        listed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(broker_name: &str) -> pb::ProduceResponse {
        pb::ProduceResponse {
            commit_log_offset: 100,
            count: 1,
            broker_name: broker_name.into(),
            ..pb::ProduceResponse::default()
        }
    }

    #[test]
    fn ids_name_the_group_the_answer_names() {
        let routed: Arc<str> = Arc::from("group-a");
        // Agreeing with the route: the route's name is shared, not copied.
        let acked_same = acked("t", &routed, 1, &answer("group-a"));
        assert!(Arc::ptr_eq(&acked_same.broker, &routed));
        // An answer without a name: the route's.
        assert_eq!(&*acked("t", &routed, 1, &answer("")).broker, "group-a");
        // The broker knows best which group stored the batch.
        assert_eq!(
            &*acked("t", &routed, 1, &answer("group-b")).broker,
            "group-b"
        );
    }

    #[test]
    fn positions_follow_the_entry_or_the_list() {
        let routed: Arc<str> = Arc::from("g");
        let mut response = pb::ProduceResponse {
            commit_log_offset: 4096,
            queue_offset: 10,
            count: 3,
            ..pb::ProduceResponse::default()
        };
        let whole = acked("t", &routed, 3, &response);
        assert_eq!(whole.position(2), (4096, 12, 2));
        response.record_offsets = vec![4096, 9000, 4096];
        response.record_queue_offsets = vec![10, 0, 11];
        response.record_indexes = vec![0, 0, 2];
        let split = acked("t", &routed, 3, &response);
        assert_eq!(split.position(1), (9000, 0, 0));
        assert_eq!(split.position(2), (4096, 11, 2));
    }

    #[test]
    fn sequences_start_over_after_the_largest() {
        assert_eq!(next_sequence(5, 3), 8);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 4), 2);
    }
}

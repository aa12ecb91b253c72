//! The per-queue accumulator: concurrent sends to one queue share produce requests.
//!
//! Each (topic, queue) has at most one open batch: records are encoded straight into its one
//! buffer as messages arrive. A batch is sealed when it holds `max_messages` messages, when
//! the next message would take it past `max_bytes`, or `linger` after its first message. One
//! batch per queue is in flight at a time, so batches to a queue are stored in the order they
//! were sealed (per-key order), and under load the next batch fills up while the previous one
//! is in flight.
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
//! Idempotent mode: each broker hands the producer an id (`InitProducerId`); every record
//! carries it and a sequence counted per (topic, queue), set when the record joins its batch.
//! A batch that fails with a retriable error is sent again as it is — same bytes, same
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

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, warn};
use weir_proto::record;
use weir_proto::{ApiKey, MessageId, pb};

use crate::ack_latency::AckLatency;
use crate::error::{ClientError, Result};
use crate::fault::LatencyFaults;
use crate::message::{Message, SendResult, now_ms};
use crate::pool::Pool;
use crate::route::QueueRoute;

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
}

/// The longest wait between two attempts of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the broker answered for a batch: where its first record went (the others follow
/// contiguously), or, for a batch with delayed messages, where each record went.
#[derive(Clone)]
struct Acked {
    /// The broker group that stored the batch (one name shared by every message's id).
    broker: Arc<str>,
    commit_log_offset: u64,
    queue_offset: u64,
    /// Each record's (commit-log offset, queue offset), when the broker listed them.
    listed: Option<Arc<[(u64, u64)]>>,
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
/// queue offset follow from the batch's: its record starts `offset` bytes into the batch and
/// is the batch's `index`-th.
pub(crate) struct Reply {
    outcome: Arc<BatchOutcome>,
    index: u32,
    offset: u32,
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
        let Reply {
            outcome,
            index,
            offset,
        } = &*self;
        let mut state = outcome.state.lock();
        match &state.result {
            Some(Ok(acked)) => {
                let (commit_log_offset, queue_offset) = match &acked.listed {
                    Some(listed) => listed
                        .get(*index as usize)
                        .copied()
                        .unwrap_or((acked.commit_log_offset, acked.queue_offset)),
                    None => (
                        acked.commit_log_offset + u64::from(*offset),
                        acked.queue_offset + u64::from(*index),
                    ),
                };
                Poll::Ready(Ok(SendResult {
                    message_id: MessageId {
                        broker: acked.broker.clone(),
                        commit_log_offset,
                    },
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

struct Batch {
    id: u64,
    buf: BytesMut,
    /// Messages in the batch.
    count: u32,
    outcome: Arc<BatchOutcome>,
    created: Instant,
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
    producer_id: u64,
    /// Idempotent mode: the sequence of the next record.
    next_seq: u32,
}

impl QueueState {
    fn seal(&mut self) {
        if let Some(batch) = self.open.take() {
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
    producer_ids: Mutex<HashMap<String, u64>>,
    /// Produce acknowledgement latency, for the request timeout.
    latency: AckLatency,
    /// Bytes of batches being sent now, for the request timeout.
    in_flight_bytes: AtomicU64,
    /// Messages acknowledged after a resend of a batch that may have been stored already
    /// (outside idempotent mode: possibly stored twice).
    resent_maybe_stored: AtomicU64,
}

impl Batcher {
    pub(crate) fn new(config: BatchConfig, pool: Arc<Pool>, faults: Arc<LatencyFaults>) -> Self {
        Batcher {
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
        }
    }

    /// Messages acknowledged after their batch was resent although an earlier attempt may have
    /// been stored (outside idempotent mode, each may be stored twice).
    pub(crate) fn resent_maybe_stored(&self) -> u64 {
        self.resent_maybe_stored.load(Ordering::Relaxed)
    }

    /// Whether records to `addr` can be stamped now (always, unless idempotent and no producer
    /// id from that broker yet).
    pub(crate) fn ready_for(&self, addr: &str) -> bool {
        !self.config.idempotent || self.producer_ids.lock().contains_key(addr)
    }

    /// Idempotent mode: asks the broker at `addr` for a producer id unless we have one.
    pub(crate) async fn ensure_producer_id(&self, addr: &str) -> Result<()> {
        if self.ready_for(addr) {
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
        self.producer_ids
            .lock()
            .entry(addr.to_owned())
            .or_insert(response.producer_id);
        Ok(())
    }

    /// Adds `message` to the open batch of `queue`; the receiver yields its send result.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        message: &Message,
        queue: &QueueRoute,
    ) -> Result<Reply> {
        let reply;
        let mut to_send = None;
        let mut new_batch = None;
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
            let producer_id = if self.config.idempotent {
                let id = self
                    .producer_ids
                    .lock()
                    .get(&queue.broker_addr)
                    .copied()
                    .ok_or_else(|| {
                        ClientError::Protocol(format!(
                            "no producer id from {} yet",
                            queue.broker_addr
                        ))
                    })?;
                if state.producer_id != id {
                    // A new id: its sequences start over, in a batch of their own.
                    state.seal();
                    state.producer_id = id;
                    state.next_seq = 0;
                }
                id
            } else {
                0
            };
            if let Some(open) = &state.open
                && open.count > 0
                && open.buf.len() + Self::record_len(message)? > self.config.max_bytes
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
                    let capacity = Self::record_len(message)?
                        .saturating_mul(self.config.max_messages)
                        .min(self.config.max_bytes);
                    state.open.insert(Batch {
                        id,
                        buf: BytesMut::with_capacity(capacity),
                        count: 0,
                        outcome: Arc::new(BatchOutcome {
                            topic: message.topic().to_owned(),
                            broker_name: queue.broker_name.clone(),
                            queue_id: queue.queue_id,
                            state: Mutex::new(OutcomeState::default()),
                        }),
                        created: Instant::now(),
                    })
                }
            };
            let offset = u32::try_from(open.buf.len())
                .map_err(|_| ClientError::InvalidArgument("batch larger than 4 GiB".into()))?;
            message.encode_sequenced(now_ms(), producer_id, state.next_seq, 0, &mut open.buf)?;
            if self.config.idempotent {
                state.next_seq = state.next_seq.wrapping_add(1);
            }
            reply = Reply {
                outcome: open.outcome.clone(),
                index: open.count,
                offset,
            };
            open.count += 1;
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            if open.count as usize >= self.config.max_messages
                || open.buf.len() >= self.config.max_bytes
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

    fn record_len(message: &Message) -> Result<usize> {
        let fields = record::RecordFields {
            topic: message.topic(),
            key: message.key(),
            tag: message.tag(),
            properties: message.properties(),
            body: message.body(),
            ..Default::default()
        };
        Ok(record::encoded_len(&fields)?)
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
            self.send_one(&topic, queue_id, &addr, batch).await;
            let mut topics = self.queues.lock();
            let Some(state) = topics.get_mut(&topic).and_then(|t| t.get_mut(&queue_id)) else {
                return;
            };
            state.in_flight = false;
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

    async fn send_one(&self, topic: &str, queue_id: u32, addr: &str, mut batch: Batch) {
        let count = batch.count as usize;
        let started = Instant::now();
        let deadline = started + self.config.delivery_timeout;
        let request = pb::ProduceRequest {
            topic: topic.to_owned(),
            queue_id,
        };
        let payload = std::mem::take(&mut batch.buf).freeze();
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
                let conn = self.pool.get(addr).await?;
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
                self.producer_ids.lock().remove(addr);
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
        self.faults.record(addr, latency, failed);
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
        if self.outstanding.fetch_sub(count, Ordering::AcqRel) == count {
            self.idle.notify_waiters();
        }
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

/// Where an acknowledged batch went: its first record is at the response's commit-log
/// offset and queue offset; each next one follows (see [`Reply`]). The ids name the group the
/// answer names, else the group the route names (`routed`); the route's name is shared when
/// the two agree, so an answer costs no allocation.
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
    // A batch with delayed messages was not stored contiguously: the broker lists each
    // record's position.
    let listed = (response.record_offsets.len() == count
        && response.record_queue_offsets.len() == count)
        .then(|| {
            response
                .record_offsets
                .iter()
                .copied()
                .zip(response.record_queue_offsets.iter().copied())
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
}

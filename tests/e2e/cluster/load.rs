//! The load a fault test runs under, recording its [`History`]: producers sending numbered
//! messages (`p<producer>-s<seq>` as body and key) one at a time, each acknowledgement and
//! error noted; one clustering consumer group whose members note what they are handed; a
//! sampler noting the group's committed offsets; and at the end every queue read back from
//! offset 0 through the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use weir_client::{
    Admin, ConsumeResult, ConsumerConfig, Message, Producer, ProducerConfig, PushConsumer,
    QueueSelection, StartFrom,
};

use super::history::{
    Ack, CommitSample, Delivery, Fault, History, MessageKey, SendFailure, Stored,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The servers clients are given (the name servers, or a standalone broker).
    pub servers: Vec<String>,
    /// The brokers' own addresses (every replica of the group): the topic is created on the
    /// one that takes it, and committed offsets are read from each.
    pub brokers: Vec<String>,
    /// The topic, created by [`Load::start`].
    pub topic: String,
    /// Its queues.
    pub queues: u32,
    /// Producers, each sending one message at a time.
    pub producers: u32,
    /// The consumer group.
    pub group: String,
    /// Members of the group.
    pub consumers: usize,
    /// How often the group's committed offsets are read.
    pub commit_sample_interval: Duration,
    /// A send not acknowledged within this long fails (resends included).
    pub delivery_timeout: Duration,
}

impl LoadConfig {
    /// Four producers and a group of two on an 8-queue topic, against `servers`, with the
    /// group's replicas at `brokers`.
    pub fn new(servers: Vec<String>, brokers: Vec<String>) -> LoadConfig {
        LoadConfig {
            servers,
            brokers,
            topic: "cluster-load".into(),
            queues: 8,
            producers: 4,
            group: "cluster-checker".into(),
            consumers: 2,
            commit_sample_interval: Duration::from_millis(250),
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

/// How long setting up (creating the topic, starting the group) may take; long enough for a
/// group to elect its first leader and register with the name servers.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the read back at the end may take in all, retries included.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);
/// After the producers stop, how long the group gets to read what is left.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the load's tasks share.
struct Shared {
    started: Instant,
    history: Mutex<History>,
    /// The latest acknowledgement time.
    last_ack: Mutex<Option<Duration>>,
    stop_producers: AtomicBool,
    stop_sampler: AtomicBool,
}

impl Shared {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A running load.
pub struct Load {
    config: LoadConfig,
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
    producers: Vec<JoinHandle<()>>,
    sampler: Option<JoinHandle<()>>,
    consumers: Vec<PushConsumer>,
}

impl Load {
    /// Creates the topic (on the replica that takes it), waits until the servers route it,
    /// starts the group and the producers. Call it from a plain thread (it runs its own
    /// runtime), not from inside an async context.
    pub fn start(config: LoadConfig) -> Load {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cluster-load")
            .enable_all()
            .build()
            .expect("load runtime");
        let shared = Arc::new(Shared {
            started: Instant::now(),
            history: Mutex::new(History::default()),
            last_ack: Mutex::new(None),
            stop_producers: AtomicBool::new(false),
            stop_sampler: AtomicBool::new(false),
        });
        let consumers = runtime.block_on(async {
            retry("create the topic", || create_topic(&config)).await;
            let admin = Admin::new(config.servers.clone()).expect("admin");
            retry("see the topic's route", || admin.route(&config.topic)).await;
            let mut consumers = Vec::new();
            for _ in 0..config.consumers {
                let mut consumer = ConsumerConfig::new(
                    config.servers.clone(),
                    config.group.clone(),
                    config.topic.clone(),
                );
                consumer.start_from = StartFrom::Earliest;
                consumer.commit_interval = Duration::from_millis(200);
                consumer.max_wait = Duration::from_secs(2);
                let shared = Arc::clone(&shared);
                let handler = move |m: &weir_client::ReceivedMessage| {
                    let delivery = Delivery {
                        key: MessageKey::parse(&m.body),
                        queue: m.queue_id,
                        offset: m.queue_offset,
                        at: shared.now(),
                    };
                    shared.history.lock().deliveries.push(delivery);
                    ConsumeResult::Success
                };
                let started = retry("start a consumer", || {
                    PushConsumer::start(consumer.clone(), handler.clone())
                })
                .await;
                consumers.push(started);
            }
            consumers
        });
        let producers = (0..config.producers)
            .map(|id| runtime.spawn(produce(id, config.clone(), Arc::clone(&shared))))
            .collect();
        let sampler = runtime.spawn(sample_commits(config.clone(), Arc::clone(&shared)));
        Load {
            config,
            runtime: Some(runtime),
            shared,
            producers,
            sampler: Some(sampler),
            consumers,
        }
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("load runtime")
    }

    /// Time since the load started: the clock of its history.
    pub fn now(&self) -> Duration {
        self.shared.now()
    }

    /// Notes a fault about to be injected into node `node`, and returns its time.
    pub fn fault(&self, what: &str, node: u64) -> Duration {
        let at = self.now();
        self.shared.history.lock().faults.push(Fault {
            what: what.to_owned(),
            node,
            at,
        });
        at
    }

    /// Produces acknowledged so far.
    pub fn acked(&self) -> usize {
        self.shared.history.lock().acks.len()
    }

    /// Waits up to `timeout` for at least `n` acknowledgements in all.
    pub fn wait_acked(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.acked() >= n)
    }

    /// Waits up to `timeout` for a produce acknowledged after `at`; returns how long after
    /// `at` it came.
    pub fn wait_ack_after(&self, at: Duration, timeout: Duration) -> Option<Duration> {
        let mut found = None;
        wait_until(timeout, || {
            found = (*self.shared.last_ack.lock()).filter(|&t| t > at);
            found.is_some()
        });
        found.map(|t| t - at)
    }

    /// Stops the producers, lets the group read what is left, stops it, and reads every queue
    /// back from offset 0 through the cluster. Returns the history.
    pub fn finish(mut self) -> History {
        self.shared.stop_producers.store(true, Ordering::SeqCst);
        let producers = std::mem::take(&mut self.producers);
        let consumers = std::mem::take(&mut self.consumers);
        let sampler = self.sampler.take();
        let config = self.config.clone();
        let shared = Arc::clone(&self.shared);
        self.runtime().block_on(async move {
            for p in producers {
                let _ = p.await;
            }
            // Let the group catch up with everything acknowledged, within reason.
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while !consumers.is_empty()
                && Instant::now() < deadline
                && shared.history.lock().undelivered() > 0
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for c in consumers {
                let _ = c.shutdown().await;
            }
            shared.stop_sampler.store(true, Ordering::SeqCst);
            if let Some(sampler) = sampler {
                let _ = sampler.await;
            }
            let (read_back, ends) = read_back(&config).await;
            let mut history = shared.history.lock();
            history.read_back = read_back;
            history.queue_ends = ends;
        });
        std::mem::take(&mut *self.shared.history.lock())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.stop_producers.store(true, Ordering::SeqCst);
        self.shared.stop_sampler.store(true, Ordering::SeqCst);
        // Safe from inside another runtime, unlike dropping it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Polls `done` every 50 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `op` until it succeeds, for up to [`SETUP_TIMEOUT`].
async fn retry<T, E: std::fmt::Debug, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut op: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("cannot {what}: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Creates the topic on the first broker that takes it (a follower refuses).
async fn create_topic(config: &LoadConfig) -> Result<(), String> {
    let mut errors = Vec::new();
    for broker in &config.brokers {
        let admin = Admin::new([broker.as_str()]).map_err(|e| e.to_string())?;
        match admin.create_topic(&config.topic, config.queues).await {
            Ok(_) => return Ok(()),
            Err(e) => errors.push(format!("{broker}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// One producer: sends `p<id>-s<seq>` for seq = 0, 1, ... one at a time until told to stop.
async fn produce(id: u32, config: LoadConfig, shared: Arc<Shared>) {
    let mut settings = ProducerConfig::new(config.servers.clone());
    settings.idempotent = true;
    settings.queue_selection = QueueSelection::RoundRobin;
    settings.linger = Duration::from_millis(1);
    settings.send_timeout = Duration::from_secs(2);
    settings.delivery_timeout = config.delivery_timeout;
    let producer = match Producer::new(settings) {
        Ok(p) => p,
        Err(e) => panic!("producer {id}: {e}"),
    };
    let mut seq = 0u64;
    while !shared.stop_producers.load(Ordering::SeqCst) {
        let key = MessageKey { producer: id, seq };
        shared.history.lock().attempted.insert(id, seq + 1);
        let body = key.body();
        let began = shared.now();
        let result = producer
            .send(Message::new(config.topic.clone(), body.clone()).with_key(body))
            .await;
        let at = shared.now();
        match result {
            Ok(sent) => {
                shared.history.lock().acks.push(Ack {
                    key,
                    queue: sent.queue_id,
                    offset: sent.queue_offset,
                    message_id: sent.message_id.to_string(),
                    sent: began,
                    at,
                });
                let mut last = shared.last_ack.lock();
                *last = Some(last.map_or(at, |t| t.max(at)));
            }
            Err(e) => {
                shared.history.lock().failures.push(SendFailure {
                    key,
                    error: e.to_string(),
                    at,
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        seq += 1;
    }
    producer.close().await;
}

/// Reads the group's committed offsets of the topic's queues every so often, from every
/// replica, and notes per queue the highest any answered: a replica that lags (or was just
/// wiped) shows less than the group committed, but none may show more than the leader keeps,
/// so the highest going down means the group's committed offset was lost.
async fn sample_commits(config: LoadConfig, shared: Arc<Shared>) {
    let admins: Vec<Admin> = config
        .brokers
        .iter()
        .filter_map(|b| Admin::new([b.as_str()]).ok())
        .collect();
    while !shared.stop_sampler.load(Ordering::SeqCst) {
        let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
        for admin in &admins {
            let answer =
                tokio::time::timeout(Duration::from_secs(1), admin.describe_group(&config.group))
                    .await;
            let Ok(Ok(group)) = answer else { continue };
            for q in group.queues.iter().filter(|q| q.topic == config.topic) {
                let high = highest.entry(q.queue_id).or_default();
                *high = (*high).max(q.committed_offset);
            }
        }
        let at = shared.now();
        shared.history.lock().commits.extend(
            highest
                .into_iter()
                .map(|(queue, offset)| CommitSample { queue, offset, at }),
        );
        tokio::time::sleep(config.commit_sample_interval).await;
    }
}

/// Messages asked for per pull while reading back.
const READ_BACK_BATCH: u32 = 256;

/// Every queue of the topic from offset 0 to its end, and each end.
async fn read_back(
    config: &LoadConfig,
) -> (BTreeMap<u32, BTreeMap<u64, Stored>>, BTreeMap<u32, u64>) {
    let admin = Admin::new(config.servers.clone()).expect("admin");
    let mut stored = BTreeMap::new();
    let mut ends = BTreeMap::new();
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    for queue in 0..config.queues {
        let mut messages = BTreeMap::new();
        let mut offset = 0u64;
        let end = loop {
            match admin
                .pull(&config.topic, queue, offset, READ_BACK_BATCH)
                .await
            {
                Ok(result) => {
                    for m in &result.messages {
                        messages.insert(
                            m.queue_offset,
                            Stored {
                                key: MessageKey::parse(&m.body),
                                message_id: m
                                    .id
                                    .as_ref()
                                    .map(ToString::to_string)
                                    .unwrap_or_default(),
                            },
                        );
                    }
                    if result.next_offset >= result.max_offset || result.next_offset <= offset {
                        // The end, or no way past a hole: the offsets not read are missing.
                        break result.max_offset;
                    }
                    offset = result.next_offset;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot read back queue {queue} at {offset}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        stored.insert(queue, messages);
        ends.insert(queue, end);
    }
    (stored, ends)
}

//! Group membership: heartbeats, queue assignment, and the hand-over of queues.
//!
//! A member heartbeats every broker hosting its topics' queues, reporting the queues it
//! `held`. Each answer lists the queues the member owns now. A queue newly assigned starts a
//! [`fetcher`](super::fetcher) loop at the group's committed offset (or `start_from`). A held
//! queue no longer assigned is stopped: its in-process batch finishes, its offset is
//! committed, and the next heartbeat (sent at once) no longer reports it, so the broker may
//! give it to another member. Offsets of owned queues are also committed every
//! `commit_interval`, and on shutdown, after which the member leaves the group.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weir_proto::names::{is_retry_topic, retry_topic};
use weir_proto::{ApiKey, ErrorCode, pb};

use crate::consumer::offset_store::{OffsetStore, QueueProgress};
use crate::consumer::orderly::{self, Lease};
use crate::consumer::{ConsumeMode, ConsumerConfig, Member, QueueKey, Sink, StartFrom, fetcher};
use crate::error::{ClientError, Result};
use crate::pool::Pool;
use crate::route::{Broker, RouteCache};

/// A queue this member holds.
struct OwnedQueue {
    broker_addr: String,
    epoch: u64,
    progress: Arc<Mutex<QueueProgress>>,
    /// The lease on the queue's lock (orderly consumers check it).
    lease: Arc<Lease>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    committed: Option<u64>,
}

/// A queue a heartbeat round says this member owns.
struct Assigned {
    broker: Broker,
    /// Until when the broker's answer guarantees the ownership (an instant already past when
    /// the broker could not be asked).
    lease_until: tokio::time::Instant,
}

/// One member of a consumer group: its identity, its queues and their progress.
pub(crate) struct Group {
    /// Settings, id, connections and sink, shared with the queues' fetch loops.
    pub member: Arc<Member>,
    pub routes: RouteCache,
    /// Every topic the member heartbeats with: the configured ones, plus the group's retry
    /// topic `%RETRY%<group>` for a clustering push consumer (the broker creates it on demand).
    subscriptions: Vec<String>,
    offsets: OffsetStore,
    owned: Mutex<HashMap<QueueKey, OwnedQueue>>,
    next_epoch: AtomicU64,
    heartbeat_ms: AtomicU64,
    /// Cancelled on shutdown; every queue's token is a child of it.
    pub stop: CancellationToken,
}

impl Group {
    pub(crate) fn new(config: ConsumerConfig, sink: Sink) -> Result<Arc<Group>> {
        if config.group.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group name is needed".into(),
            ));
        }
        weir_proto::validate_group_name(&config.group)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        if config.orderly && config.mode != ConsumeMode::Clustering {
            return Err(ClientError::InvalidArgument(
                "orderly consumption needs clustering mode".into(),
            ));
        }
        if config.topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "at least one topic is needed".into(),
            ));
        }
        let pool = Arc::new(Pool::new(config.connection.clone()));
        let routes = RouteCache::new(pool.clone(), config.servers.clone())?;
        let offsets = match config.mode {
            ConsumeMode::Clustering => OffsetStore::Broker,
            ConsumeMode::Broadcast => OffsetStore::local(
                config
                    .offsets_dir
                    .as_ref()
                    .map(|dir| dir.join(format!("{}.json", config.group))),
            ),
        };
        let member_id = format!(
            "{}-{}-{:08x}",
            config.group,
            std::process::id(),
            rand::random::<u32>()
        );
        let mut subscriptions = config.topics.clone();
        if matches!(sink, Sink::Push(_)) && config.mode == ConsumeMode::Clustering {
            subscriptions.push(retry_topic(&config.group));
        }
        Ok(Arc::new(Group {
            member: Arc::new(Member {
                config,
                member_id,
                pool,
                sink,
                damaged_skipped: AtomicU64::new(0),
            }),
            routes,
            subscriptions,
            offsets,
            owned: Mutex::new(HashMap::new()),
            next_epoch: AtomicU64::new(1),
            heartbeat_ms: AtomicU64::new(1000),
            stop: CancellationToken::new(),
        }))
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.member.pool
    }

    /// The member's settings.
    pub(crate) fn config(&self) -> &ConsumerConfig {
        &self.member.config
    }

    /// Joins the group (one heartbeat round, so a missing topic is reported here) and starts
    /// the background loop of heartbeats and commits.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<JoinHandle<()>> {
        let mut revoked = self.rebalance().await?;
        while revoked {
            revoked = self.rebalance().await?;
        }
        let me = self.clone();
        Ok(tokio::spawn(async move { me.background().await }))
    }

    async fn background(self: Arc<Self>) {
        let mut commit = tokio::time::interval(self.config().commit_interval);
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_heartbeat = tokio::time::Instant::now() + self.heartbeat_interval();
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = commit.tick() => {
                    if let Err(e) = self.commit().await {
                        warn!(group = %self.config().group, error = %e, "offset commit failed");
                    }
                }
                _ = tokio::time::sleep_until(next_heartbeat) => {
                    let again = match self.rebalance().await {
                        Ok(revoked) => revoked,
                        Err(e) => {
                            warn!(group = %self.config().group, error = %e, "heartbeat failed");
                            false
                        }
                    };
                    next_heartbeat = tokio::time::Instant::now()
                        + if again { Duration::ZERO } else { self.heartbeat_interval() };
                }
            }
        }
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed).clamp(100, 30_000))
    }

    /// One round: heartbeat every broker, stop revoked queues, start new ones. Returns whether
    /// queues were revoked (so the next heartbeat should go at once).
    async fn rebalance(self: &Arc<Self>) -> Result<bool> {
        if self.stop.is_cancelled() {
            return Ok(false);
        }
        // Queues whose fetch loop ended by itself (not owner, topic gone) are no longer held.
        self.owned.lock().retain(|key, q| {
            let alive = !q.task.is_finished();
            if !alive {
                debug!(queue = %key, "fetch loop ended; releasing the queue");
            }
            alive
        });
        let assigned = self.heartbeat_all().await?;
        let (revoked, new): (Vec<_>, Vec<_>) = {
            let owned = self.owned.lock();
            let revoked = owned
                .iter()
                .filter(|(key, q)| {
                    assigned.get(*key).map(|a| &a.broker.addr) != Some(&q.broker_addr)
                })
                .map(|(key, _)| key.clone())
                .collect();
            let new = assigned
                .iter()
                .filter(|(key, _)| !owned.contains_key(*key))
                .map(|(k, a)| (k.clone(), a.broker.clone(), a.lease_until))
                .collect();
            for (key, q) in owned.iter() {
                if let Some(a) = assigned.get(key) {
                    q.lease.set(a.lease_until);
                }
            }
            (revoked, new)
        };
        for key in &revoked {
            let queue = self.owned.lock().remove(key);
            if let Some(queue) = queue {
                info!(group = %self.config().group, queue = %key, "queue revoked");
                self.stop_queue(key, queue).await;
            }
        }
        for (key, broker, lease_until) in new {
            if let Err(e) = self.start_queue(key.clone(), broker, lease_until).await {
                warn!(queue = %key, error = %e, "cannot start consuming the queue");
            }
        }
        Ok(!revoked.is_empty())
    }

    /// Heartbeats every broker serving the subscribed topics; returns the queues assigned,
    /// with their brokers. A broker that cannot be reached keeps its queues for now.
    async fn heartbeat_all(&self) -> Result<HashMap<QueueKey, Assigned>> {
        let mut brokers = Vec::new();
        for topic in &self.config().topics {
            match self.routes.get(topic).await {
                Ok(route) => brokers.extend(route.named_brokers()),
                Err(e) => {
                    if self.owned.lock().is_empty() {
                        return Err(e);
                    }
                    warn!(topic, error = %e, "no route for the topic");
                }
            }
        }
        brokers.sort_by(|a, b| a.addr.cmp(&b.addr));
        brokers.dedup_by(|a, b| a.addr == b.addr);
        let mut assigned = HashMap::new();
        for broker in brokers {
            let held: Vec<pb::QueueRef> = self
                .owned
                .lock()
                .iter()
                .filter(|(_, q)| q.broker_addr == broker.addr)
                .map(|(key, _)| pb::QueueRef {
                    topic: key.topic.clone(),
                    queue_id: key.queue_id,
                })
                .collect();
            let request = pb::GroupHeartbeatRequest {
                group: self.config().group.clone(),
                member_id: self.member.member_id.clone(),
                mode: self.config().mode.to_pb() as i32,
                topics: self.subscriptions.clone(),
                held: held.clone(),
            };
            let sent = tokio::time::Instant::now();
            let answer = async {
                let conn = self.pool().get(&broker.addr).await?;
                conn.call::<_, pb::GroupHeartbeatResponse>(
                    ApiKey::GroupHeartbeat,
                    &request,
                    Bytes::new(),
                    None,
                )
                .await
            };
            match answer.await {
                Ok((response, _)) => {
                    if response.heartbeat_interval_ms > 0 {
                        self.heartbeat_ms
                            .store(u64::from(response.heartbeat_interval_ms), Ordering::Relaxed);
                    }
                    let lease_until = orderly::lease_end(sent, response.session_timeout_ms);
                    for q in response.assigned {
                        let key = QueueKey {
                            topic: q.topic,
                            queue_id: q.queue_id,
                        };
                        let broker = broker.clone();
                        assigned.insert(
                            key,
                            Assigned {
                                broker,
                                lease_until,
                            },
                        );
                    }
                }
                Err(e) => {
                    warn!(broker = %broker.addr, error = %e, "group heartbeat failed");
                    // Kept for now, but the broker may have released them (a closed
                    // connection releases at once): the lease ends.
                    for q in held {
                        let key = QueueKey {
                            topic: q.topic,
                            queue_id: q.queue_id,
                        };
                        let broker = broker.clone();
                        assigned.insert(
                            key,
                            Assigned {
                                broker,
                                lease_until: sent,
                            },
                        );
                    }
                    // A follower names its group's leader: the routes switch there at once
                    // (and the queues' fetch loops with them, below); else ask again.
                    if !self.routes.follow_leader_named(&broker.name, &e) {
                        for topic in &self.config().topics {
                            self.routes.invalidate(topic);
                        }
                    }
                }
            }
        }
        Ok(assigned)
    }

    /// Starts consuming `key` from `broker`, at the group's offset.
    async fn start_queue(
        self: &Arc<Self>,
        key: QueueKey,
        broker: Broker,
        lease_until: tokio::time::Instant,
    ) -> Result<()> {
        // `committed` is false when the group never had a position on this queue and the
        // offset was resolved from `start_from`: that position is committed at once below,
        // so the group keeps it from its first assignment even if it never receives
        // anything (otherwise its next start would resolve `start_from` again and skip what
        // was produced meanwhile).
        let (offset, committed) = match self.offsets.local_offset(&key) {
            Some(offset) => (offset, true),
            None => {
                let request = pb::FetchOffsetRequest {
                    group: self.config().group.clone(),
                    topic: key.topic.clone(),
                    queue_id: key.queue_id,
                    // Retry copies are stored for this group only: never skip one.
                    start_from: if is_retry_topic(&key.topic) {
                        StartFrom::Earliest.to_pb() as i32
                    } else {
                        self.config().start_from.to_pb() as i32
                    },
                };
                let conn = self.pool().get(&broker.addr).await?;
                let (response, _) = conn
                    .call::<_, pb::FetchOffsetResponse>(
                        ApiKey::FetchOffset,
                        &request,
                        Bytes::new(),
                        None,
                    )
                    .await?;
                (response.offset, response.committed)
            }
        };
        info!(group = %self.config().group, queue = %key, offset, committed, "queue assigned");
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(Mutex::new(QueueProgress::new(offset)));
        let cancel = self.stop.child_token();
        let lease = Arc::new(Lease::new(lease_until));
        let broker_addr = broker.addr.clone();
        let task = tokio::spawn(fetcher::run(
            self.member.clone(),
            key.clone(),
            broker,
            epoch,
            progress.clone(),
            lease.clone(),
            cancel.clone(),
        ));
        self.owned.lock().insert(
            key.clone(),
            OwnedQueue {
                broker_addr: broker_addr.clone(),
                epoch,
                progress,
                lease,
                cancel,
                task,
                committed: committed.then_some(offset),
            },
        );
        if !committed {
            match self.commit_one(broker_addr, &key, offset).await {
                Ok(()) => {
                    if let Some(q) = self.owned.lock().get_mut(&key).filter(|q| q.epoch == epoch) {
                        q.committed.get_or_insert(offset);
                    }
                }
                // The periodic commit tries again: `committed` is still unset.
                Err(e) => warn!(queue = %key, error = %e, "cannot commit the starting offset"),
            }
        }
        Ok(())
    }

    /// Stops the fetch loop of a queue (letting its in-process batch finish) and commits.
    async fn stop_queue(&self, key: &QueueKey, queue: OwnedQueue) {
        queue.cancel.cancel();
        let _ = queue.task.await;
        let offset = queue.progress.lock().committable();
        if queue.committed != Some(offset)
            && let Err(e) = self.commit_one(queue.broker_addr, key, offset).await
        {
            warn!(queue = %key, error = %e, "cannot commit the offset of a released queue");
        }
    }

    /// Commits one queue's offset to the broker at `broker_addr`.
    async fn commit_one(&self, broker_addr: String, key: &QueueKey, offset: u64) -> Result<()> {
        let entry = [(broker_addr, key.clone(), offset)];
        self.offsets
            .commit(
                self.pool(),
                &self.config().group,
                &self.member.member_id,
                &entry,
            )
            .await
    }

    /// The progress of `key` if it is still held under `epoch`.
    pub(crate) fn progress(&self, key: &QueueKey, epoch: u64) -> Option<Arc<Mutex<QueueProgress>>> {
        self.owned
            .lock()
            .get(key)
            .filter(|q| q.epoch == epoch)
            .map(|q| q.progress.clone())
    }

    /// The queues held now.
    pub(crate) fn held(&self) -> Vec<QueueKey> {
        let mut held: Vec<QueueKey> = self.owned.lock().keys().cloned().collect();
        held.sort();
        held
    }

    /// Commits the offset of every held queue that moved since its last commit.
    pub(crate) async fn commit(&self) -> Result<()> {
        let entries: Vec<(String, QueueKey, u64)> = self
            .owned
            .lock()
            .iter()
            .filter_map(|(key, q)| {
                let offset = q.progress.lock().committable();
                (q.committed != Some(offset)).then(|| (q.broker_addr.clone(), key.clone(), offset))
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        self.offsets
            .commit(
                self.pool(),
                &self.config().group,
                &self.member.member_id,
                &entries,
            )
            .await?;
        let mut owned = self.owned.lock();
        for (_, key, offset) in entries {
            if let Some(q) = owned.get_mut(&key) {
                q.committed = Some(offset);
            }
        }
        Ok(())
    }

    /// Stops every queue (each finishing its in-process batch and committing), then leaves
    /// the group on every broker.
    pub(crate) async fn shutdown(&self, background: Option<JoinHandle<()>>) -> Result<()> {
        self.stop.cancel();
        if let Some(background) = background {
            let _ = background.await;
        }
        let queues: Vec<(QueueKey, OwnedQueue)> = self.owned.lock().drain().collect();
        let mut brokers: HashSet<String> =
            queues.iter().map(|(_, q)| q.broker_addr.clone()).collect();
        for topic in &self.config().topics {
            if let Some(route) = self.routes.cached(topic) {
                brokers.extend(route.brokers());
            }
        }
        for (key, queue) in queues {
            self.stop_queue(&key, queue).await;
        }
        let request = pb::LeaveGroupRequest {
            group: self.config().group.clone(),
            member_id: self.member.member_id.clone(),
        };
        let mut result = Ok(());
        for broker in brokers {
            let left = async {
                let conn = self.pool().get(&broker).await?;
                conn.call::<_, pb::Empty>(ApiKey::LeaveGroup, &request, Bytes::new(), None)
                    .await
            };
            match left.await {
                Ok(_) => {}
                Err(ClientError::Server {
                    code: ErrorCode::GroupNotFound,
                    ..
                }) => {}
                Err(e) => {
                    warn!(broker, error = %e, "leave group failed");
                    result = Err(e);
                }
            }
        }
        result
    }
}

//! Start-up and shutdown: opens the store (recovering it), builds the core parts and every
//! feature from the parts it needs, binds the listeners and starts the background tasks. The
//! only module that knows every part; nothing imports it but `lib.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_store::Store;

use crate::config::BrokerConfig;
use crate::core::identity::Identity;
use crate::core::long_poll::LongPoll;
use crate::core::message_log::MessageLog;
use crate::core::replica::{self, StatusSender};
use crate::core::role::{self, Role, RoleSetter};
use crate::core::topics::TopicTable;
use crate::core::traffic::Traffic;
use crate::error::BrokerError;
use crate::features::delay::{self, DelayProgress, Delays};
use crate::features::groups::classic::ClassicGroups;
use crate::features::groups::coordinator::GroupCoordinator;
use crate::features::groups::offsets::OffsetTable;
use crate::features::groups::shared::SharedGroups;
use crate::features::groups::shared_progress;
use crate::features::idempotence::{self, Idempotence};
use crate::features::retry::Retries;
use crate::features::transaction::{self, Transactions};
use crate::protocols::http::HttpServer;
use crate::protocols::http::metrics_endpoint;
use crate::protocols::in_flight::BrokerBudget;
use crate::protocols::kafka::{self, Endpoint, dispatch::Listener as KafkaListener};
use crate::protocols::native::outbox::Outboxes;
use crate::protocols::native::registration::{Registrar, Target};
use crate::protocols::native::server;
use crate::replication::{self, Replication};
use crate::routing::name_server::NameServer;
use crate::state::BrokerState;

/// How often dirty offsets are written to disk.
const OFFSET_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A running broker (and, in the same process, name server).
pub struct Broker {
    state: Arc<BrokerState>,
    /// The store itself, for shutdown (everything else writes through `state.log`).
    store: Arc<Store>,
    /// Sets the role (standalone: leader from start to shutdown).
    role: RoleSetter,
    /// Publishes this replica's group status (fixed while standalone; Raft's in a group).
    replica_status: StatusSender,
    /// This replica's Raft node, in a broker group.
    replication: Option<Replication>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http_addr: Option<SocketAddr>,
    /// The bound address of the Kafka listener, when one is configured.
    kafka_addr: Option<SocketAddr>,
    /// Set when the process must start again (a replica that accepted a snapshot).
    restart: watch::Sender<bool>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("local_addr", &self.state.identity.local_addr)
            .field("advertised_addr", &self.state.identity.advertised_addr)
            .field("http_addr", &self.http_addr)
            .field("kafka_addr", &self.kafka_addr)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the store (recovering it), loads topics and offsets, binds the listener and starts
    /// serving. Returns once connections are being accepted.
    ///
    /// The HTTP listener, when configured, opens first: `/health` answers during recovery and
    /// `/ready` turns 200 once this returns.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        config.validate()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let http = match config
            .http_listen
            .as_deref()
            .filter(|addr| !addr.is_empty())
        {
            Some(addr) => {
                Some(HttpServer::start(addr, config.dashboard, shutdown_rx.clone()).await?)
            }
            None => None,
        };
        let result = Broker::open_and_serve(config, shutdown, shutdown_rx, http.as_ref()).await;
        match (result, http) {
            (Ok(mut broker), Some(http)) => {
                broker.http_addr = Some(http.shared.local_addr);
                broker.tasks.push(http.task);
                Ok(broker)
            }
            (Ok(broker), None) => Ok(broker),
            (Err(e), http) => {
                // `open_and_serve` dropped the shutdown sender, which stops the HTTP task.
                if let Some(http) = http {
                    let _ = http.task.await;
                }
                Err(e)
            }
        }
    }

    /// Opens the store (recovering it) and starts serving on it.
    async fn open_and_serve(
        config: BrokerConfig,
        shutdown: watch::Sender<bool>,
        shutdown_rx: watch::Receiver<bool>,
        http: Option<&HttpServer>,
    ) -> Result<Broker, BrokerError> {
        let data_dir = config.data_dir.clone();
        let mut store_config = config.store_config()?;
        if config.node_id != 0 {
            // A snapshot accepted before the last stop replaces the log first.
            crate::replication::finish_install(&data_dir)?;
            // A replica makes readable only what its group has committed, and lets retention
            // delete only what its Raft log has let go of.
            store_config.dispatch_limit = Some(crate::replication::commit_point(&data_dir)?);
            store_config.retention_floor = Some(crate::replication::retention_floor(&data_dir));
        }
        // Opening recovers the log, which reads files: keep it off the async workers.
        let store = tokio::task::spawn_blocking(move || Store::open(store_config))
            .await
            .map_err(|e| BrokerError::Config(format!("store open task failed: {e}")))?
            .map_err(|e| BrokerError::from_store(e, &data_dir))?;
        let result =
            Broker::start_with_store(config, store.clone(), shutdown, shutdown_rx, http).await;
        if result.is_err() {
            // Release the data directory's lock so the caller may try again.
            let _ = store.shutdown();
        }
        result
    }

    async fn start_with_store(
        config: BrokerConfig,
        store: Arc<Store>,
        shutdown: watch::Sender<bool>,
        shutdown_rx: watch::Receiver<bool>,
        http: Option<&HttpServer>,
    ) -> Result<Broker, BrokerError> {
        let mut log = MessageLog::new(store.clone());
        let topics = Arc::new(crate::core::topic_rebuild::load_or_rebuild(
            &config.data_dir,
            &log,
        )?);
        crate::features::groups::offsets_check::check(&config.data_dir, &log)?;
        let offsets = Arc::new(OffsetTable::load(&config.data_dir)?);
        let shared = Arc::new(SharedGroups::load(
            &config.data_dir,
            config.shared_settings()?,
        )?);
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| BrokerError::io("reading the bound address", e))?;
        let kafka = match config.kafka_listen.as_deref().filter(|a| !a.is_empty()) {
            Some(addr) => Some(bind_kafka(addr, config.kafka_advertised_addr.as_deref()).await?),
            None => None,
        };
        let identity = Arc::new(Identity {
            cluster_name: config.cluster_name.clone(),
            broker_name: Arc::from(config.broker_name.as_str()),
            advertised_addr: config
                .advertised_addr
                .clone()
                .unwrap_or_else(|| default_advertised(local_addr).to_string()),
            local_addr,
        });
        // Standalone: this node is its group's only replica, so always the leader. In a
        // broker group, Raft drives the role.
        let (role_setter, role) = Role::new(config.node_id == 0);
        let (replica_status, replica_rx) = replica::standalone();
        let delay_progress = Arc::new(DelayProgress::load(&config.data_dir)?);
        let mut replication = None;
        let mut raft_tasks = Vec::new();
        let (restart, _) = watch::channel(false);
        if config.node_id != 0 {
            // Until Raft reports, a replica registers as a follower with its own node id, never
            // as a standalone node 0 that leads.
            replica_status.send_modify(|s| {
                s.node_id = config.node_id;
                s.role = replica::ReplicaRole::Follower;
            });
            let addr = config.raft_listen.clone().unwrap_or_default();
            let raft_listener = TcpListener::bind(&addr)
                .await
                .map_err(|source| BrokerError::Bind { addr, source })?;
            let parts = replication::Parts {
                store: store.clone(),
                listener: raft_listener,
                native_addr: identity.advertised_addr.clone(),
                status: replica_status.clone(),
                role: role_setter.clone(),
                applier: Arc::new(crate::ops::replicated::Applier {
                    topics: topics.clone(),
                    offsets: offsets.clone(),
                    shared: shared.clone(),
                    log: log.clone(),
                    delay_progress: delay_progress.clone(),
                }),
                restart: restart.clone(),
            };
            shared.keep_changes();
            let (started, tasks) = Replication::start(&config, parts, shutdown_rx.clone()).await?;
            log.replicate(Arc::new(started.clone()));
            replication = Some(started);
            raft_tasks = tasks;
        }
        let features = load_features(&config, &log, &topics, &identity, delay_progress).await?;
        let name_server = Arc::new(NameServer::new(Duration::from_millis(
            config.broker_expiry_ms,
        )));
        let targets = if config.name_servers.is_empty() {
            vec![Target::Local(name_server.clone())]
        } else {
            config
                .name_servers
                .iter()
                .map(|addr| Target::Remote(addr.clone()))
                .collect()
        };
        let max_frame_len = u32::try_from(config.max_frame_size)
            .map_err(|_| BrokerError::Config("max_frame_size is above 4 GiB".to_owned()))?;
        let registrar = Arc::new(
            Registrar::new(
                targets,
                identity.cluster_name.clone(),
                identity.broker_name.to_string(),
                identity.advertised_addr.clone(),
                topics.clone(),
                Duration::from_millis(config.broker_heartbeat_interval_ms),
                max_frame_len,
            )
            .with_replica(replica_rx.clone())
            .with_listeners(
                http.map(|h| advertised_like(&identity.advertised_addr, h.shared.local_addr)),
                kafka
                    .as_ref()
                    .map(|(_, _, endpoint)| format!("{}:{}", endpoint.host, endpoint.port)),
            ),
        );
        // Routes follow the topic table, whoever changes it (a weak handle: the registrar
        // holds the table too).
        let follower = Arc::downgrade(&registrar);
        topics.on_change(move || {
            if let Some(registrar) = follower.upgrade() {
                registrar.topics_changed();
            }
        });
        let long_poll = Arc::new(LongPoll::new());
        let waker = long_poll.clone();
        let shared_waker = shared.clone();
        store.set_dispatch_listener(Arc::new(move |topic: &str, queue_id: u32, _max: u64| {
            waker.wake(topic, queue_id);
            shared_waker.wake(topic);
        }));
        let groups = Arc::new(GroupCoordinator::new(Duration::from_millis(
            config.group_session_timeout_ms,
        )));
        let classic_groups = Arc::new(ClassicGroups::new(
            config.classic_group_settings(),
            groups.clone(),
        ));
        let state = Arc::new(BrokerState {
            groups,
            classic_groups,
            config,
            log,
            identity,
            topics,
            role: role.clone(),
            replica: replica_rx,
            membership: replication
                .clone()
                .map(|r| Arc::new(r) as Arc<dyn crate::core::membership::Membership>),
            offsets,
            shared,
            long_poll,
            name_server,
            transactions: features.transactions,
            idempotence: features.idempotence,
            delays: features.delays,
            retries: features.retries,
            traffic: Traffic::default(),
            max_frame_len,
            shutting_down: AtomicBool::new(false),
        });
        // The first registration happens before we return, so routes exist at once.
        registrar.register_all().await;
        let outboxes = Arc::new(Outboxes::default());
        // One budget for every listener: the broker's memory bound holds across protocols.
        let budget = BrokerBudget::new(
            state.config.max_in_flight_bytes,
            state.config.max_answer_bytes,
            state.config.max_connection_in_flight_bytes,
        );
        let mut tasks = vec![
            tokio::spawn(server::serve(
                state.clone(),
                outboxes.clone(),
                listener,
                budget.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(registrar.run(shutdown_rx.clone())),
            tokio::spawn(idempotence::snapshot::run(
                state.idempotence.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(leader_only_work(
                state.clone(),
                role,
                outboxes,
                shutdown_rx.clone(),
            )),
            tokio::spawn(housekeeping(state.clone(), shutdown_rx.clone())),
        ];
        tasks.append(&mut raft_tasks);
        let kafka_addr = kafka.as_ref().map(|(_, addr, _)| *addr);
        if let Some((socket, addr, endpoint)) = kafka {
            tracing::info!(%addr, advertised = %format!("{}:{}", endpoint.host, endpoint.port), "kafka listener started");
            let listener = Arc::new(KafkaListener {
                state: state.clone(),
                endpoint,
                peers: Default::default(),
                epochs: Default::default(),
            });
            tasks.push(tokio::spawn(kafka::server::serve(
                listener,
                socket,
                budget,
                shutdown_rx.clone(),
            )));
        }
        if let Some(http) = http {
            http.shared.set_broker(state.clone());
        }
        tracing::info!(
            addr = %local_addr,
            advertised = %state.identity.advertised_addr,
            broker = %state.identity.broker_name,
            topics = state.topics.list().len(),
            "broker started"
        );
        Ok(Broker {
            state,
            store,
            role: role_setter,
            replica_status,
            replication,
            shutdown,
            tasks,
            http_addr: None,
            kafka_addr,
            restart,
        })
    }

    /// The parts the request handlers see, for the crate's own handler tests.
    #[cfg(test)]
    pub(crate) fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// The bound address of the native listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.state.identity.local_addr
    }

    /// The bound address of the HTTP listener, if one is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound address of the Kafka listener, if one is configured.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// Resolves when this process must start again with the same arguments: a replica of a
    /// broker group has accepted a snapshot from its leader (it needed entries the leader's
    /// retention had deleted), and installs it when it starts. Never resolves otherwise.
    /// The caller should re-execute at once, without [`Broker::shutdown`]: everything the
    /// replica holds is replaced by the snapshot, and its Raft log refuses writes meanwhile.
    pub async fn restart_requested(&self) {
        let mut rx = self.restart.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|restart| *restart).await;
    }

    /// The address put in routes and message ids.
    pub fn advertised_addr(&self) -> &str {
        &self.state.identity.advertised_addr
    }

    /// Stops accepting, lets requests in flight finish (bounded), persists offsets and shuts
    /// the store down (flush and checkpoint).
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        tracing::info!("broker shutting down");
        self.state.shutting_down.store(true, Ordering::Release);
        // Step down first: leader-only work (deliveries, check-backs) ends before the
        // connections drain and the store closes.
        self.role.set_leader(false);
        let _ = self.shutdown.send(true);
        self.state.long_poll.wake_all();
        self.state.shared.wake_all();
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a broker task failed");
            }
        }
        if let Some(replication) = &self.replication {
            replication.shutdown().await;
        }
        drop(self.replica_status);
        let offsets = self.state.offsets.persist();
        let shared = self.state.shared.persist();
        let store = self.store.clone();
        let data_dir = self.state.config.data_dir.clone();
        tokio::task::spawn_blocking(move || store.shutdown())
            .await
            .map_err(|e| BrokerError::Config(format!("store shutdown task failed: {e}")))?
            .map_err(|e| BrokerError::from_store(e, &data_dir))?;
        offsets?;
        shared?;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// The features' state, rebuilt from the log and their files.
struct Features {
    delays: Arc<Delays>,
    transactions: Arc<Transactions>,
    idempotence: Arc<Idempotence>,
    retries: Arc<Retries>,
}

/// Builds every feature from the parts it uses, rebuilding its state from the log (reads
/// files: off the async workers).
async fn load_features(
    config: &BrokerConfig,
    log: &MessageLog,
    topics: &Arc<TopicTable>,
    identity: &Arc<Identity>,
    delay_progress: Arc<DelayProgress>,
) -> Result<Features, BrokerError> {
    let data_dir = config.data_dir.clone();
    let timings = transaction::CheckTimings {
        first: Duration::from_millis(config.transaction_check_first_ms),
        interval: Duration::from_millis(config.transaction_check_interval_ms),
        max: config.transaction_check_max,
    };
    let max_message_size = usize::try_from(config.max_message_size).unwrap_or(usize::MAX);
    let steps = config.retry_backoff()?;
    let (max_retries, max_read_bytes) = (config.max_retries, config.max_pull_bytes());
    let (log, topics, identity) = (log.clone(), topics.clone(), identity.clone());
    tokio::task::spawn_blocking(move || {
        let delays = Arc::new(Delays::load(
            &data_dir,
            log.clone(),
            topics.clone(),
            identity.clone(),
            max_message_size,
            delay_progress,
        )?);
        let transactions = Arc::new(transaction::recovery::load(
            log.clone(),
            topics.clone(),
            &data_dir,
            timings,
        )?);
        let idempotence = Arc::new(idempotence::snapshot::load(
            log.clone(),
            delays.clone(),
            &data_dir,
        )?);
        let retries = Arc::new(Retries::new(
            log,
            topics,
            identity,
            delays.clone(),
            steps,
            max_retries,
            max_read_bytes,
        ));
        Ok(Features {
            delays,
            transactions,
            idempotence,
            retries,
        })
    })
    .await
    .map_err(|e| BrokerError::Config(format!("feature load task failed: {e}")))?
}

/// Work only the group's leader does, started and stopped with the role: delayed delivery,
/// transaction check-backs (over the native protocol's server-to-client channel) and, in a
/// broker group, sending the shared groups' changes to the other replicas.
async fn leader_only_work(
    state: Arc<BrokerState>,
    role: Role,
    outboxes: Arc<Outboxes>,
    shutdown: watch::Receiver<bool>,
) {
    let delays = state.delays.clone();
    let transactions = state.transactions.clone();
    let shared = state.shared.clone();
    let log = state.log.clone();
    drop(state);
    let delivery = role::while_leader(role.clone(), shutdown.clone(), move |stop| {
        delay::run(delays.clone(), stop)
    });
    let shared_progress = async {
        if log.is_replicated() {
            role::while_leader(role.clone(), shutdown.clone(), move |stop| {
                shared_progress::run(shared.clone(), log.clone(), stop)
            })
            .await;
        }
    };
    let check_backs = role::while_leader(role.clone(), shutdown.clone(), move |stop| {
        transaction::check::run(transactions.clone(), outboxes.clone(), stop)
    });
    tokio::join!(delivery, shared_progress, check_backs);
}

/// The address another listener bound at `local` is reached at: on an unspecified IP, the
/// host of the native advertised address with `local`'s port.
fn advertised_like(advertised: &str, local: SocketAddr) -> String {
    match advertised.rsplit_once(':') {
        Some((host, _)) if local.ip().is_unspecified() => format!("{host}:{}", local.port()),
        _ => default_advertised(local).to_string(),
    }
}

/// The bound address, with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback.
fn default_advertised(local: SocketAddr) -> SocketAddr {
    if local.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
    } else {
        local
    }
}

/// Binds the Kafka listener; answers the socket, its bound address and the endpoint clients
/// are told (`advertised`, else the bound address with an unspecified IP made loopback).
async fn bind_kafka(
    addr: &str,
    advertised: Option<&str>,
) -> Result<(TcpListener, SocketAddr, Endpoint), BrokerError> {
    let socket = TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    let bound = socket
        .local_addr()
        .map_err(|e| BrokerError::io("reading the bound kafka address", e))?;
    let endpoint = match advertised.filter(|a| !a.is_empty()) {
        Some(advertised) => {
            let (host, port) = advertised.rsplit_once(':').ok_or_else(|| {
                BrokerError::Config(format!(
                    "kafka_advertised_addr {advertised:?} is not host:port"
                ))
            })?;
            let port = port.parse::<u16>().map_err(|_| {
                BrokerError::Config(format!(
                    "kafka_advertised_addr {advertised:?} has no valid port"
                ))
            })?;
            Endpoint {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: i32::from(port),
            }
        }
        None => {
            let shown = default_advertised(bound);
            Endpoint {
                host: shown.ip().to_string(),
                port: i32::from(shown.port()),
            }
        }
    };
    Ok((socket, bound, endpoint))
}

/// Periodic chores: write dirty offsets, drop silent group members and expired brokers, keep
/// the metrics recorder's buffers small.
async fn housekeeping(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(OFFSET_FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
        let chores = state.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Err(e) = chores.offsets.persist() {
                tracing::error!(error = %e, "persisting consumer offsets failed");
            }
            if let Err(e) = chores.shared.persist() {
                tracing::error!(error = %e, "persisting shared groups' acks failed");
            }
            let expired = chores.groups.expire(&|topic| chores.queues_of(topic));
            if expired > 0 {
                tracing::info!(members = expired, "group members expired (no heartbeat)");
            }
            let expired = chores.classic_groups.expire(tokio::time::Instant::now());
            if expired > 0 {
                tracing::info!(members = expired, "Kafka group members expired or dropped");
            }
            chores.name_server.expire();
            metrics_endpoint::upkeep();
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "housekeeping failed");
        }
    }
}

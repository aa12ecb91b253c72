//! The broker: its shared state, start-up (recovery, listener, background tasks) and shutdown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_store::Store;

use crate::config::BrokerConfig;
use crate::delay::{self, Delays};
use crate::error::BrokerError;
use crate::group::GroupCoordinator;
use crate::http::HttpServer;
use crate::http::metrics_endpoint;
use crate::idempotence::Idempotence;
use crate::long_poll::LongPoll;
use crate::name_server::NameServer;
use crate::offsets::OffsetTable;
use crate::outbox::Outboxes;
use crate::registration::{Registrar, Target};
use crate::server;
use crate::shared_group::SharedGroups;
use crate::topics::TopicTable;
use crate::traffic::Traffic;
use crate::transaction::Transactions;

/// How often dirty offsets are written to disk.
const OFFSET_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Everything request handlers share.
pub(crate) struct BrokerState {
    pub config: BrokerConfig,
    pub store: Arc<Store>,
    pub topics: Arc<TopicTable>,
    pub offsets: OffsetTable,
    pub groups: GroupCoordinator,
    pub shared: Arc<SharedGroups>,
    pub long_poll: Arc<LongPoll>,
    pub name_server: Arc<NameServer>,
    pub registrar: Arc<Registrar>,
    /// Every open connection's send side, for server-to-client requests.
    pub outboxes: Outboxes,
    /// Pending transactions and producer-group members.
    pub transactions: Transactions,
    /// Idempotent producers' ids and last batches.
    pub idempotence: Idempotence,
    /// Delayed messages waiting in `%DELAY%`.
    pub delays: Delays,
    /// Messages and bytes in and out since start, for the dashboard's charts.
    pub traffic: Traffic,
    /// Our address as put in routes and message ids.
    pub advertised_addr: String,
    /// The bound address.
    pub local_addr: SocketAddr,
    pub max_frame_len: u32,
    shutting_down: AtomicBool,
}

impl BrokerState {
    /// Queues this broker hosts for a topic (0 when it has no such topic).
    pub fn queues_of(&self, topic: &str) -> u32 {
        self.topics.get(topic).map_or(0, |t| t.queues)
    }

    /// Whether the broker is stopping (long polls answer at once).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Whether a message id's broker address is this broker's.
    pub fn is_own_addr(&self, addr: SocketAddr) -> bool {
        addr == self.local_addr
            || self
                .advertised_addr
                .parse::<SocketAddr>()
                .is_ok_and(|advertised| advertised == addr)
    }
}

/// A running broker (and, in the same process, name server).
pub struct Broker {
    state: Arc<BrokerState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("local_addr", &self.state.local_addr)
            .field("advertised_addr", &self.state.advertised_addr)
            .field("http_addr", &self.http_addr)
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
        let store_config = config.store_config()?;
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
        let topics = Arc::new(TopicTable::load(&config.data_dir)?);
        let offsets = OffsetTable::load(&config.data_dir)?;
        let (transactions, idempotence) = load_producer_state(&config, &store).await?;
        let shared = Arc::new(SharedGroups::load(
            &config.data_dir,
            config.shared_settings()?,
        )?);
        let retention = store.config().retention_age;
        let delay_store = store.clone();
        let delay_dir = config.data_dir.clone();
        // Rebuilding the wheel reads the undelivered part of %DELAY%: keep it off the workers.
        let delays =
            tokio::task::spawn_blocking(move || Delays::load(&delay_dir, &delay_store, retention))
                .await
                .map_err(|e| BrokerError::Config(format!("delay load task failed: {e}")))??;
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
        let advertised_addr = config
            .advertised_addr
            .clone()
            .unwrap_or_else(|| default_advertised(local_addr).to_string());
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
        let registrar = Arc::new(Registrar::new(
            targets,
            config.cluster_name.clone(),
            config.broker_name.clone(),
            advertised_addr.clone(),
            topics.clone(),
            Duration::from_millis(config.broker_heartbeat_interval_ms),
            max_frame_len,
        ));
        let long_poll = Arc::new(LongPoll::new());
        let waker = long_poll.clone();
        let shared_waker = shared.clone();
        store.set_dispatch_listener(Arc::new(move |topic: &str, queue_id: u32, _max: u64| {
            waker.wake(topic, queue_id);
            shared_waker.wake(topic);
        }));
        let state = Arc::new(BrokerState {
            groups: GroupCoordinator::new(Duration::from_millis(config.group_session_timeout_ms)),
            config,
            store,
            topics,
            offsets,
            shared,
            long_poll,
            name_server,
            registrar: registrar.clone(),
            outboxes: Outboxes::default(),
            transactions,
            idempotence,
            delays,
            traffic: Traffic::default(),
            advertised_addr,
            local_addr,
            max_frame_len,
            shutting_down: AtomicBool::new(false),
        });
        // The first registration happens before we return, so routes exist at once.
        registrar.register_all().await;
        let tasks = vec![
            tokio::spawn(server::accept_loop(
                state.clone(),
                listener,
                shutdown_rx.clone(),
            )),
            tokio::spawn(registrar.run(shutdown_rx.clone())),
            tokio::spawn(crate::transaction::check::run(
                state.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(crate::idempotence::snapshot::run(
                state.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(delay::run(state.clone(), shutdown_rx.clone())),
            tokio::spawn(housekeeping(state.clone(), shutdown_rx)),
        ];
        if let Some(http) = http {
            http.shared.set_broker(state.clone());
        }
        tracing::info!(
            addr = %local_addr,
            advertised = %state.advertised_addr,
            topics = state.topics.list().len(),
            "broker started"
        );
        Ok(Broker {
            state,
            shutdown,
            tasks,
            http_addr: None,
        })
    }

    /// The bound address of the native listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.state.local_addr
    }

    /// The bound address of the HTTP listener, if one is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address put in routes and message ids.
    pub fn advertised_addr(&self) -> &str {
        &self.state.advertised_addr
    }

    /// Stops accepting, lets requests in flight finish (bounded), persists offsets and shuts
    /// the store down (flush and checkpoint).
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        tracing::info!("broker shutting down");
        self.state.shutting_down.store(true, Ordering::Release);
        let _ = self.shutdown.send(true);
        self.state.long_poll.wake_all();
        self.state.shared.wake_all();
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a broker task failed");
            }
        }
        let offsets = self.state.offsets.persist();
        let shared = self.state.shared.persist();
        let store = self.state.store.clone();
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

/// Rebuilds the pending transactions and the idempotence table from the store (reads files:
/// off the async workers).
async fn load_producer_state(
    config: &BrokerConfig,
    store: &Arc<Store>,
) -> Result<(Transactions, Idempotence), BrokerError> {
    let store = store.clone();
    let data_dir = config.data_dir.clone();
    let timings = crate::transaction::CheckTimings {
        first: Duration::from_millis(config.transaction_check_first_ms),
        interval: Duration::from_millis(config.transaction_check_interval_ms),
        max: config.transaction_check_max,
    };
    tokio::task::spawn_blocking(move || {
        Ok((
            crate::transaction::recovery::load(&store, &data_dir, timings)?,
            crate::idempotence::snapshot::load(&store, &data_dir)?,
        ))
    })
    .await
    .map_err(|e| BrokerError::Config(format!("producer state load task failed: {e}")))?
}

/// The bound address, with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback.
fn default_advertised(local: SocketAddr) -> SocketAddr {
    if local.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
    } else {
        local
    }
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
            chores.name_server.expire();
            metrics_endpoint::upkeep();
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "housekeeping failed");
        }
    }
}

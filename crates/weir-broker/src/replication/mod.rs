//! Replication of a broker group: one Raft group (openraft) per broker group, whose log is
//! the commit log.
//!
//! ```text
//! produce ─► MessageLog::append ─► Raft::client_write(Append)
//!                                    │ leader: log_store stamps + writes the batch (term = epoch)
//!                                    │ followers: network ─► log_store writes the same bytes
//!                                    ▼ committed on a majority (sync: fsynced there)
//!                                  state_machine::apply ─► store dispatch limit ─► readable
//! ```
//!
//! * `command`       what an entry carries (`Append` on the leader, `Entries` as stored,
//!   `Refused`) and what applying answers
//! * `log_index`     `raft/log.index`: each entry's term, kind and commit-log range
//! * `log_store`     openraft's log storage over the commit log and the index
//! * `state_machine` applying = moving the store's dispatch limit; building and installing
//!   snapshots
//! * `snapshot`      what a snapshot is, sending and receiving it, installing it at start
//! * `compaction`    purging the Raft log where retention wants segments gone
//! * `membership`    adding (learner, then voter) and removing replicas
//! * `network`       the Raft listener and the per-peer clients
//! * `status`        Raft metrics → this replica's status and the role signal
//!
//! Only the leader takes writes: elsewhere [`Consensus::append`] answers `NotLeader`
//! naming the leader's client address, learned from the leader's own requests.

mod command;
mod compaction;
mod log_index;
mod log_store;
mod membership;
mod network;
mod snapshot;
mod state_machine;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_store::{AppendResult, Store, StoreError};

use crate::config::BrokerConfig;
use crate::core::message_log::Consensus;
use crate::core::replica::StatusSender;
use crate::core::role::RoleSetter;
use crate::core::state_change::{StateApplier, StateChange};
use crate::error::BrokerError;
use command::{Applied, Command};
use log_store::{LogShared, LogStore};
use network::{Network, PeerAddrs};
use state_machine::StateMachine;

openraft::declare_raft_types!(
    /// The Raft types of a broker group.
    pub(crate) TypeConfig:
        D = Command,
        R = Applied,
        Node = BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A broker group's Raft node.
pub(crate) type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// The group's voters as configured: node id → how this node dials its Raft listener.
pub(crate) fn parse_peers(peers: &[String]) -> Result<BTreeMap<u64, String>, BrokerError> {
    let mut out = BTreeMap::new();
    for peer in peers {
        let (id, addr) = peer.split_once('=').ok_or_else(|| {
            BrokerError::Config(format!(
                "raft_peers entry {peer:?} is not \"<node id>=<host:port>\""
            ))
        })?;
        let id: u64 = id.trim().parse().map_err(|_| {
            BrokerError::Config(format!(
                "raft_peers entry {peer:?}: {id:?} is not a node id"
            ))
        })?;
        if id == 0 {
            return Err(BrokerError::Config(
                "raft_peers: node ids start at 1".into(),
            ));
        }
        if out.insert(id, addr.trim().to_owned()).is_some() {
            return Err(BrokerError::Config(format!(
                "raft_peers names node {id} twice"
            )));
        }
    }
    Ok(out)
}

/// The dispatch limit a replicated store must open with: the end of the last entry applied
/// (records after it stay unreadable until Raft commits and applies them again).
pub(crate) fn commit_point(data_dir: &Path) -> Result<u64, BrokerError> {
    let dir = data_dir.join("raft");
    if !dir.exists() {
        return Ok(0);
    }
    let index = log_index::LogIndex::open(&dir, u64::MAX).map_err(|source| BrokerError::Io {
        context: format!("opening the raft log index in {}", dir.display()),
        source,
    })?;
    let applied = log_store::read_applied_file(&dir);
    Ok(applied
        .and_then(|id| log_store::held(&index, id))
        .and_then(|id| match index.get(id.index) {
            Some(slot) => Some(slot.end),
            None => index.purged().map(|p| p.end),
        })
        .unwrap_or(0))
}

/// Installs the snapshot accepted before the last stop, if there is one; returns whether
/// there was. Must run before the store is opened.
pub(crate) fn finish_install(data_dir: &Path) -> Result<bool, BrokerError> {
    snapshot::finish_install(data_dir).map_err(|source| BrokerError::Io {
        context: "installing the snapshot received from the leader".into(),
        source,
    })
}

/// The retention floor a replicated store must open with: the end of the entries this
/// replica's Raft log has purged (0 when it has purged none).
pub(crate) fn retention_floor(data_dir: &Path) -> u64 {
    log_index::Purged::read(&data_dir.join("raft")).map_or(0, |p| p.end)
}

/// What a replica is started with, besides its configuration.
pub(crate) struct Parts {
    /// The store, opened with [`commit_point`] as its dispatch limit.
    pub store: Arc<Store>,
    /// The bound Raft listener.
    pub listener: TcpListener,
    /// This broker's native address, named to clients that reach a follower.
    pub native_addr: String,
    /// Where this replica's status goes.
    pub status: StatusSender,
    /// The role signal leader-only work follows.
    pub role: RoleSetter,
    /// Applies committed state changes to this replica's tables.
    pub applier: Arc<dyn StateApplier>,
    /// Set when the process must start again (on a snapshot from the leader).
    pub restart: watch::Sender<bool>,
}

/// A running broker-group replica.
#[derive(Debug, Clone)]
pub(crate) struct Replication {
    raft: Raft,
    peers: Arc<PeerAddrs>,
    /// Longest a write waits to be committed.
    commit_timeout: Duration,
    /// How long a leader may go without a majority's acknowledgement and still take writes.
    lease_ms: u64,
}

impl Replication {
    /// Starts this node's Raft over `store` (opened with [`commit_point`]), serving the Raft
    /// listener, publishing the status and driving the role signal. Initializes the group
    /// with the configured voters when this node has never been part of it.
    pub async fn start(
        config: &BrokerConfig,
        parts: Parts,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Replication, Vec<JoinHandle<()>>), BrokerError> {
        let Parts {
            store,
            listener,
            native_addr,
            status,
            role,
            applier,
            restart,
        } = parts;
        let node_id = config.node_id;
        let voters = parse_peers(&config.raft_peers)?;
        if !voters.contains_key(&node_id) {
            return Err(BrokerError::Config(format!(
                "raft_peers must name this node ({node_id})"
            )));
        }
        let raft_config = openraft::Config {
            cluster_name: config.broker_name.clone(),
            heartbeat_interval: config.raft_heartbeat_ms,
            election_timeout_min: config.raft_election_timeout_ms,
            election_timeout_max: config.raft_election_timeout_ms * 3 / 2,
            // Snapshots are built and logs purged only where retention wants segments gone
            // (`compaction.rs`), never by openraft's own policy.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            max_payload_entries: 512,
            enable_pre_vote: Some(true),
            // A replica that comes back with an empty data directory (a replaced disk or
            // machine) is brought up to date from the start of the log instead of stopping
            // the leader's replication to it.
            allow_log_reversion: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| BrokerError::Config(format!("raft settings: {e}")))?;
        let shared =
            LogShared::open(store, &config.data_dir).map_err(|source| BrokerError::Io {
                context: "opening the raft log".into(),
                source,
            })?;
        // Applying replays from the last entry applied (not the commit point, which is saved
        // before its entries are applied): every state change is applied after a crash.
        let applied = shared.read_applied_held();
        let peers = Arc::new(PeerAddrs::default());
        peers.set(node_id, &native_addr);
        let network = Network {
            me: node_id,
            my_addr: native_addr,
            dial: Arc::new(
                voters
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
        };
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            network,
            LogStore::new(shared.clone()),
            StateMachine::new(shared.clone(), applied, applier, restart),
        )
        .await
        .map_err(|e| BrokerError::Replication(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| BrokerError::Replication(e.to_string()))?;
        if !initialized && config.raft_join {
            tracing::info!(
                node_id,
                "waiting to be added to the broker group as a replica"
            );
        } else if !initialized {
            let members: BTreeMap<u64, BasicNode> = voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                // Another voter initialized first: its membership reaches us as entries.
                tracing::info!(error = %e, "raft group already initialized");
            }
        }
        let tasks = vec![
            tokio::spawn(network::serve(
                listener,
                raft.clone(),
                peers.clone(),
                config.data_dir.join("raft"),
                shutdown.clone(),
            )),
            tokio::spawn(compaction::run(
                raft.clone(),
                shared.clone(),
                Duration::from_millis(config.raft_snapshot_min_interval_ms),
                shutdown.clone(),
            )),
            tokio::spawn(status::run(
                raft.clone(),
                peers.clone(),
                status,
                role,
                shutdown,
            )),
        ];
        tracing::info!(node_id, voters = ?voters.keys().collect::<Vec<_>>(), "raft started");
        // Long enough for an election and a retry, short enough that a client of a leader cut
        // off from its group moves on.
        let commit_timeout = Duration::from_millis(config.raft_election_timeout_ms * 4);
        let lease_ms = config.raft_election_timeout_ms * 3 / 2;
        Ok((
            Replication {
                raft,
                peers,
                commit_timeout,
                lease_ms,
            },
            tasks,
        ))
    }

    /// Stops Raft (after the listeners: nothing new arrives).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
    }

    fn not_leader(&self, leader: Option<u64>) -> StoreError {
        StoreError::NotLeader {
            leader: leader.and_then(|id| self.peers.get(id)),
        }
    }
}

impl Consensus for Replication {
    fn append<'a>(
        &'a self,
        topic: &'a str,
        queue_id: u32,
        batch: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<AppendResult, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            if !self.is_leader() {
                let leader = self.raft.metrics().borrow_watched().current_leader;
                // A leader out of touch with its group names no one.
                let other = leader.filter(|id| *id != self.raft.metrics().borrow_watched().id);
                return Err(self.not_leader(other));
            }
            let command = Command::Append {
                topic: topic.to_owned(),
                queue_id,
                batch,
            };
            let write = tokio::time::timeout(self.commit_timeout, self.raft.client_write(command));
            let Ok(written) = write.await else {
                // A leader cut off from its followers cannot commit: the client hears so
                // (and retries at whoever leads now) instead of waiting for ever.
                return Err(StoreError::Replication(format!(
                    "not committed by a majority within {:?}",
                    self.commit_timeout
                )));
            };
            match written {
                Ok(response) => match response.data {
                    Applied::Written(w) => Ok(w.into()),
                    Applied::Refused { code, message } => {
                        Err(StoreError::Refused { code, message })
                    }
                    Applied::Nothing => Err(StoreError::Replication(
                        "a batch entry was applied without an outcome".into(),
                    )),
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(self.not_leader(f.leader_id))
                }
                Err(e) => Err(StoreError::Replication(e.to_string())),
            }
        })
    }

    fn propose(
        &self,
        change: StateChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            let write = self.raft.client_write(Command::State(change));
            let Ok(written) = tokio::time::timeout(self.commit_timeout, write).await else {
                return Err(StoreError::Replication(format!(
                    "not committed by a majority within {:?}",
                    self.commit_timeout
                )));
            };
            match written {
                Ok(_) => Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(self.not_leader(f.leader_id))
                }
                Err(e) => Err(StoreError::Replication(e.to_string())),
            }
        })
    }

    fn leader_addr(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        // Never itself: a leader asked this has lost touch with its group.
        let leader = metrics.current_leader.filter(|id| *id != metrics.id);
        leader.and_then(|id| self.peers.get(id))
    }

    fn is_leader(&self) -> bool {
        // A leader that has not heard from a majority within its lease may have been
        // replaced: it sends clients away at once instead of holding their writes.
        // One read of the metrics, holding nothing else: a second read while the first is held
        // would wait behind Raft's next metrics update, which waits for the first.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        // A new leader serves nothing until it has applied an entry of its own term (the
        // blank entry it starts with): before, entries its predecessor committed may not be
        // applied here, and a consumer asking for its group's offsets would be rewound.
        metrics.state == openraft::ServerState::Leader
            && metrics
                .last_applied
                .is_some_and(|a| a.leader_id.term == metrics.current_term)
            && metrics.last_quorum_acked.as_ref().is_some_and(|at| {
                openraft::Instant::elapsed(&**at) <= Duration::from_millis(self.lease_ms)
            })
    }

    fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }
}

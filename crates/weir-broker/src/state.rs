//! What the protocol edges (native, HTTP) and the protocol-neutral operations share: the core
//! parts and every feature, built once at start-up by [`crate::broker`].
//!
//! Features never see this type: each is built from the few core parts it uses (the layering
//! test in `tests/layering.rs` keeps it so).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::BrokerConfig;
use crate::core::identity::Identity;
use crate::core::long_poll::LongPoll;
use crate::core::membership::Membership;
use crate::core::message_log::MessageLog;
use crate::core::replica::StatusReceiver;
use crate::core::role::Role;
use crate::core::topics::TopicTable;
use crate::core::traffic::Traffic;
use crate::features::delay::Delays;
use crate::features::groups::classic::ClassicGroups;
use crate::features::groups::coordinator::GroupCoordinator;
use crate::features::groups::offsets::OffsetTable;
use crate::features::groups::shared::SharedGroups;
use crate::features::idempotence::Idempotence;
use crate::features::retry::Retries;
use crate::features::transaction::Transactions;
use crate::routing::name_server::NameServer;

/// The broker's parts, as the request handlers of every protocol see them.
pub(crate) struct BrokerState {
    pub config: BrokerConfig,
    /// The one write path (and the reads).
    pub log: MessageLog,
    /// This node's names and addresses; mints message ids.
    pub identity: Arc<Identity>,
    pub topics: Arc<TopicTable>,
    /// Whether this node leads its broker group.
    pub role: Role,
    /// This replica's view of its broker group (role, term, commit index, the leader).
    pub replica: StatusReceiver,
    /// Adds and removes replicas of this broker group; `None` standalone.
    pub membership: Option<Arc<dyn Membership>>,
    pub offsets: Arc<OffsetTable>,
    pub groups: Arc<GroupCoordinator>,
    pub shared: Arc<SharedGroups>,
    /// Kafka's classic consumer groups (JoinGroup, SyncGroup, ...), over the same offsets.
    pub classic_groups: Arc<ClassicGroups>,
    pub long_poll: Arc<LongPoll>,
    pub name_server: Arc<NameServer>,
    /// Pending transactions and producer-group members.
    pub transactions: Arc<Transactions>,
    /// Idempotent producers' ids and last batches.
    pub idempotence: Arc<Idempotence>,
    /// Delayed messages waiting in `%DELAY%`.
    pub delays: Arc<Delays>,
    /// Retries and dead letters.
    pub retries: Arc<Retries>,
    /// Messages and bytes in and out since start, for the dashboard's charts.
    pub traffic: Traffic,
    /// Largest frame a connection may send or be sent, bytes.
    pub max_frame_len: u32,
    pub(crate) shutting_down: AtomicBool,
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
}

//! The broker's configuration: one flat table, so every key can also be set as `WEIR_<KEY>`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_store::{FlushMode, StoreConfig};

use crate::error::BrokerError;
use crate::features::groups::classic::ClassicSettings;
use crate::features::groups::shared::SharedSettings;

/// Everything a broker (and its name-server role) can be told at start.
///
/// Flat on purpose: the binary maps each key to a `weir.toml` key, a flag and a `WEIR_<KEY>`
/// environment variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where the commit log, the indexes and `config/` (topics, offsets) live.
    pub data_dir: PathBuf,
    /// Address of the native listener (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Address of the HTTP listener (admin API, `/metrics`, `/health`, `/ready`); port 0
    /// picks a free port. `None` or empty: no HTTP listener — the library default, so that
    /// embedded brokers and tests open no fixed port; `weir serve` defaults it to
    /// `127.0.0.1:9877`.
    pub http_listen: Option<String>,
    /// Serve the web dashboard at `/` of the HTTP listener (it is read-write, like the admin
    /// API, so it listens only where `http_listen` does).
    pub dashboard: bool,
    /// Address of the Kafka listener (`host:port`; port 0 picks a free port). `None` or
    /// empty: none — the library default; `weir serve` defaults it to `127.0.0.1:9092`.
    pub kafka_listen: Option<String>,
    /// Address Kafka clients are told to use (Metadata, FindCoordinator); default: the bound
    /// Kafka address (an unspecified IP such as `0.0.0.0` replaced by `127.0.0.1`).
    pub kafka_advertised_addr: Option<String>,
    /// Address put in routes and message ids; default: the bound address (an unspecified IP
    /// such as `0.0.0.0` replaced by `127.0.0.1`).
    pub advertised_addr: Option<String>,
    /// Name servers to register with; empty = standalone (register with our own name-server
    /// role, in-process).
    pub name_servers: Vec<String>,
    /// Cluster this broker belongs to.
    pub cluster_name: String,
    /// Name of this broker (its broker group).
    pub broker_name: String,
    /// `async` (acknowledge once in the page cache) or `sync` (acknowledge once durable).
    pub flush: String,
    /// How often `async` mode flushes, ms.
    pub flush_interval_ms: u64,
    /// How much of the newest flushed commit log the page cache keeps, MiB; older pages are
    /// let go after each flush. Unset: a quarter of the machine's memory. A value above the
    /// machine's memory leaves it all to the kernel.
    pub page_cache_window_mb: Option<u64>,
    /// Size of a commit-log segment file, bytes.
    pub segment_size: u64,
    /// Largest record accepted, bytes.
    pub max_message_size: u64,
    /// Largest frame accepted or sent on the native protocol, bytes.
    pub max_frame_size: u64,
    /// Bytes of requests the broker holds for all its clients at once (read, not yet
    /// handled: for a produce, until it is stored as the flush mode requires). A produce that
    /// would go over it is answered `busy`.
    pub max_in_flight_bytes: u64,
    /// Bytes of answers made and not yet written, over all connections. A pull answer that
    /// would go over it is answered `busy` instead.
    pub max_answer_bytes: u64,
    /// Bytes of requests one connection may hold, and of answers (its share of each pool).
    pub max_connection_in_flight_bytes: u64,
    /// Most native-protocol connections open at once; one more is closed as soon as it is
    /// accepted.
    pub max_connections: u32,
    /// A connection that sends nothing for this long, with no request in flight, is closed,
    /// ms (0: never).
    pub connection_idle_timeout_ms: u64,
    /// A connection whose peer takes none of its answers for this long is closed, ms (0:
    /// never). Its answers and their memory go with it.
    pub connection_stall_timeout_ms: u64,
    /// Queues of a topic created without a count (and of auto-created topics).
    pub default_queues: u32,
    /// Create a topic on its first produce instead of answering `topic_not_found`.
    pub auto_create_topics: bool,
    /// Longest a pull is held waiting for messages, ms.
    pub long_poll_max_ms: u64,
    /// How often consumer group members should heartbeat, ms.
    pub group_heartbeat_interval_ms: u64,
    /// A member without a heartbeat for this long is removed from its group, ms.
    pub group_session_timeout_ms: u64,
    /// How often the broker registers with the name servers, ms.
    pub broker_heartbeat_interval_ms: u64,
    /// The name-server role drops a broker not registered for this long, ms.
    pub broker_expiry_ms: u64,
    /// Commit-log segments older than this are deleted, hours.
    pub retention_hours: u64,
    /// Oldest segments are deleted while the disk is fuller than this ratio.
    pub retention_disk_ratio: f64,
    /// From a half message to the first check-back of its transaction, ms.
    pub transaction_check_first_ms: u64,
    /// Between two check-backs of an undecided transaction, ms.
    pub transaction_check_interval_ms: u64,
    /// Check-backs of an undecided transaction before it is rolled back.
    pub transaction_check_max: u32,
    /// Shared groups: back-off before a nacked message is delivered again, by attempt
    /// (space-separated durations, the last one repeats).
    pub shared_retry_delays: String,
    /// Shared groups: deliveries before a message goes to `%DLQ%<group>`.
    pub shared_max_attempts: u32,
    /// Waits before each redelivery of a message a consumer handed back (`SendBack`), as
    /// durations (`"10s"`, `"1m"`, `"200ms"`); the last one repeats. A list, or one string
    /// with the steps separated by commas (handy for `WEIR_RETRY_BACKOFF=1s,2s`).
    #[serde(deserialize_with = "list_or_csv")]
    pub retry_backoff: Vec<String>,
    /// Failed deliveries after the first before a message goes to the group's dead-letter
    /// topic `%DLQ%<group>`.
    pub max_retries: u32,
    /// Kafka consumer groups: how long the first rebalance of an empty group waits for more
    /// members to join, ms (Kafka's `group.initial.rebalance.delay.ms`).
    pub kafka_group_initial_rebalance_delay_ms: u64,
    /// Kafka consumer groups: most members of one group.
    pub kafka_group_max_members: u32,
    /// This replica's node id in its broker group's Raft group; 0: standalone (no Raft).
    pub node_id: u64,
    /// Address the Raft listener binds (`host:port`), for the other replicas of the group.
    pub raft_listen: Option<String>,
    /// The group's initial voters and how this node reaches each one's Raft listener, as
    /// `"<node id>=<host:port>"` (this node's own entry included). A list, or one
    /// comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub raft_peers: Vec<String>,
    /// How often the leader sends heartbeats to the other replicas, ms.
    pub raft_heartbeat_ms: u64,
    /// A follower that hears no leader for this long (randomised up to 1.5 times as long) starts
    /// an election, ms.
    pub raft_election_timeout_ms: u64,
    /// This node joins an existing broker group (`weir cluster add-replica`) instead of
    /// forming one with `raft_peers`: it never initializes the group itself and waits for the
    /// group's leader to bring it in.
    pub raft_join: bool,
    /// The least time between two Raft snapshots built so that retention may delete segments
    /// (see `docs/clusters.md`, "Retention and snapshots"), ms.
    pub raft_snapshot_min_interval_ms: u64,
}

/// Accepts a list of strings or one comma-separated string.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => csv
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

/// RocketMQ's retry back-off: 10s 30s 1m 2m ... 10m 20m 30m 1h 2h.
const DEFAULT_RETRY_BACKOFF: [&str; 16] = [
    "10s", "30s", "1m", "2m", "3m", "4m", "5m", "6m", "7m", "8m", "9m", "10m", "20m", "30m", "1h",
    "2h",
];

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("./weir-data"),
            listen: "127.0.0.1:9876".to_owned(),
            http_listen: None,
            dashboard: true,
            kafka_listen: None,
            kafka_advertised_addr: None,
            advertised_addr: None,
            name_servers: Vec::new(),
            cluster_name: "DefaultCluster".to_owned(),
            broker_name: "broker-a".to_owned(),
            flush: "async".to_owned(),
            flush_interval_ms: 500,
            page_cache_window_mb: None,
            segment_size: 1 << 30,
            max_message_size: 4 << 20,
            max_frame_size: 16 << 20,
            max_in_flight_bytes: 64 << 20,
            max_answer_bytes: 256 << 20,
            max_connection_in_flight_bytes: 8 << 20,
            max_connections: 10_000,
            connection_idle_timeout_ms: 600_000,
            connection_stall_timeout_ms: 30_000,
            default_queues: 4,
            auto_create_topics: false,
            long_poll_max_ms: 15_000,
            group_heartbeat_interval_ms: 1_000,
            group_session_timeout_ms: 10_000,
            broker_heartbeat_interval_ms: 30_000,
            broker_expiry_ms: 120_000,
            retention_hours: 72,
            retention_disk_ratio: 0.75,
            transaction_check_first_ms: 6_000,
            transaction_check_interval_ms: 30_000,
            transaction_check_max: 15,
            shared_retry_delays: "10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h".to_owned(),
            shared_max_attempts: 16,
            retry_backoff: DEFAULT_RETRY_BACKOFF.map(str::to_owned).to_vec(),
            max_retries: 16,
            kafka_group_initial_rebalance_delay_ms: 0,
            kafka_group_max_members: 1_000,
            node_id: 0,
            raft_listen: None,
            raft_peers: Vec::new(),
            raft_heartbeat_ms: 100,
            raft_election_timeout_ms: 600,
            raft_join: false,
            raft_snapshot_min_interval_ms: 30_000,
        }
    }
}

/// Room in a frame for everything but the records: header, protobuf body, slack.
const FRAME_OVERHEAD: u64 = 64 * 1024;

impl BrokerConfig {
    /// Checks the values that can be wrong on their own or together.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |msg: String| Err(BrokerError::Config(msg));
        if self.flush.parse::<FlushMode>().is_err() {
            return bad(format!(
                "flush must be \"async\" or \"sync\", not {:?}",
                self.flush
            ));
        }
        if self.max_frame_size > u64::from(u32::MAX) || self.max_frame_size < 1024 {
            return bad(format!(
                "max_frame_size must be between 1 KiB and 4 GiB, not {}",
                self.max_frame_size
            ));
        }
        if self.max_message_size == 0
            || self.max_message_size + FRAME_OVERHEAD > self.max_frame_size
        {
            return bad(format!(
                "max_message_size ({}) must be above 0 and at least 64 KiB below max_frame_size ({})",
                self.max_message_size, self.max_frame_size
            ));
        }
        if self.max_connection_in_flight_bytes == 0
            || self.max_in_flight_bytes < self.max_connection_in_flight_bytes
            || self.max_answer_bytes < self.max_connection_in_flight_bytes
        {
            return bad(format!(
                "max_connection_in_flight_bytes ({}) must be above 0 and at most max_in_flight_bytes ({}) and max_answer_bytes ({})",
                self.max_connection_in_flight_bytes,
                self.max_in_flight_bytes,
                self.max_answer_bytes
            ));
        }
        if self.max_connections == 0 {
            return bad("max_connections must be above 0".to_owned());
        }
        if self.segment_size < self.max_message_size {
            return bad(format!(
                "segment_size ({}) must be at least max_message_size ({})",
                self.segment_size, self.max_message_size
            ));
        }
        if self.default_queues == 0 || self.default_queues > crate::core::topics::MAX_QUEUES {
            return bad(format!(
                "default_queues must be between 1 and {}, not {}",
                crate::core::topics::MAX_QUEUES,
                self.default_queues
            ));
        }
        if !(0.0..=1.0).contains(&self.retention_disk_ratio) {
            return bad(format!(
                "retention_disk_ratio must be between 0 and 1, not {}",
                self.retention_disk_ratio
            ));
        }
        if self.group_heartbeat_interval_ms == 0
            || self.group_session_timeout_ms <= self.group_heartbeat_interval_ms
        {
            return bad(
                "group_session_timeout_ms must be above group_heartbeat_interval_ms > 0".to_owned(),
            );
        }
        self.shared_settings()?;
        if self.kafka_group_initial_rebalance_delay_ms > 300_000
            || self.kafka_group_max_members == 0
        {
            return bad(
                "kafka_group_initial_rebalance_delay_ms must be at most 300000 and \
                 kafka_group_max_members above 0"
                    .to_owned(),
            );
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_expiry_ms <= self.broker_heartbeat_interval_ms
        {
            return bad(
                "broker_expiry_ms must be above broker_heartbeat_interval_ms > 0".to_owned(),
            );
        }
        if self.transaction_check_first_ms == 0 || self.transaction_check_interval_ms == 0 {
            return bad(
                "transaction_check_first_ms and transaction_check_interval_ms must be above 0"
                    .to_owned(),
            );
        }
        self.retry_backoff()?;
        Ok(())
    }

    /// The retry back-off steps, parsed.
    pub(crate) fn retry_backoff(&self) -> Result<Vec<Duration>, BrokerError> {
        if self.retry_backoff.is_empty() {
            return Err(BrokerError::Config(
                "retry_backoff needs at least one duration".to_owned(),
            ));
        }
        self.retry_backoff
            .iter()
            .map(|s| {
                humantime::parse_duration(s).map_err(|e| {
                    BrokerError::Config(format!("retry_backoff: {s:?} is not a duration: {e}"))
                })
            })
            .collect()
    }

    /// The storage engine's configuration derived from this one.
    pub(crate) fn store_config(&self) -> Result<StoreConfig, BrokerError> {
        let flush = self
            .flush
            .parse::<FlushMode>()
            .map_err(|_| BrokerError::Config(format!("invalid flush mode {:?}", self.flush)))?;
        let mut config = StoreConfig::new(self.data_dir.clone());
        config.segment_size = self.segment_size;
        config.flush = flush;
        config.flush_interval = Duration::from_millis(self.flush_interval_ms.max(1));
        if let Some(mb) = self.page_cache_window_mb {
            config.page_cache_window = Some(mb.saturating_mul(1 << 20));
        }
        config.max_message_size = usize::try_from(self.max_message_size).map_err(|_| {
            BrokerError::Config("max_message_size does not fit in memory".to_owned())
        })?;
        config.retention_age = Duration::from_secs(self.retention_hours.saturating_mul(3600));
        config.retention_disk_ratio = self.retention_disk_ratio;
        Ok(config)
    }

    /// The shared groups' settings derived from this one.
    pub(crate) fn shared_settings(&self) -> Result<SharedSettings, BrokerError> {
        let retry_delays = self
            .shared_retry_delays
            .split_whitespace()
            .map(humantime::parse_duration)
            .collect::<Result<Vec<Duration>, _>>()
            .map_err(|e| {
                BrokerError::Config(format!(
                    "shared_retry_delays {:?}: {e}",
                    self.shared_retry_delays
                ))
            })?;
        if retry_delays.is_empty() || self.shared_max_attempts == 0 {
            return Err(BrokerError::Config(
                "shared_retry_delays needs one duration at least and shared_max_attempts must be above 0"
                    .to_owned(),
            ));
        }
        Ok(SharedSettings {
            retry_delays,
            max_attempts: self.shared_max_attempts,
        })
    }

    /// The Kafka classic group coordinator's settings derived from this one.
    pub(crate) fn classic_group_settings(&self) -> ClassicSettings {
        ClassicSettings {
            initial_rebalance_delay: Duration::from_millis(
                self.kafka_group_initial_rebalance_delay_ms,
            ),
            max_members: usize::try_from(self.kafka_group_max_members).unwrap_or(usize::MAX),
            ..ClassicSettings::default()
        }
    }

    /// Largest record payload a pull answer may carry (the frame limit less its overhead).
    pub(crate) fn max_pull_bytes(&self) -> u32 {
        u32::try_from(self.max_frame_size - FRAME_OVERHEAD).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml_like_json() {
        let config = BrokerConfig::default();
        config
            .validate()
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let json = serde_json::to_string(&config).unwrap_or_default();
        let back: BrokerConfig = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, config);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(serde_json::from_str::<BrokerConfig>(r#"{"nope": 1}"#).is_err());
        let config = BrokerConfig {
            flush: "sometimes".to_owned(),
            ..BrokerConfig::default()
        };
        assert!(config.validate().is_err());
        let config = BrokerConfig {
            max_message_size: 16 << 20,
            ..BrokerConfig::default()
        };
        assert!(config.validate().is_err());
    }
}

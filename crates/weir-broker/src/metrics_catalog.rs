//! Every metric Weir exposes at `GET /metrics`: its name, kind, labels and help text, defined
//! here once. docs/operations.md lists them for operators.
//!
//! Two sources feed the page:
//!
//! * **Events** — counters, histograms and up/down gauges recorded through the `metrics` facade
//!   where things happen (a produce, a pull, a connection, an fdatasync), once per batch or
//!   request, never per message. [`describe`] gives them their help text.
//! * **Snapshots** — gauges computed from the broker's state at scrape time ([`Snapshot`]s):
//!   storage positions and sizes, and each group's committed offset and lag. They are always
//!   current and vanish with the topic or group they describe.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
pub(crate) use weir_store::metric_names::{
    DAMAGED_MESSAGES_TOTAL, FSYNC_DURATION_SECONDS, FSYNC_TOTAL,
};

/// Counter `{topic}`: messages stored by produce requests.
pub(crate) const MESSAGES_IN_TOTAL: &str = "weir_messages_in_total";
/// Counter `{topic}`: record bytes stored by produce requests.
pub(crate) const BYTES_IN_TOTAL: &str = "weir_bytes_in_total";
/// Counter `{topic}`: messages sent to consumers by pull requests.
pub(crate) const MESSAGES_OUT_TOTAL: &str = "weir_messages_out_total";
/// Counter `{topic}`: record bytes sent to consumers by pull requests.
pub(crate) const BYTES_OUT_TOTAL: &str = "weir_bytes_out_total";
/// Counter `{api, code}`: native-protocol requests answered, by api and error code (`ok` for
/// success).
pub(crate) const REQUESTS_TOTAL: &str = "weir_requests_total";
/// Histogram `{api}`: time from a native request's arrival to its answer, seconds (a long
/// poll's wait included).
pub(crate) const REQUEST_DURATION_SECONDS: &str = "weir_request_duration_seconds";
/// Histogram: time from a produce request's arrival until its batch is stored as the flush
/// mode requires (durable with `flush = "sync"`), seconds.
pub(crate) const PRODUCE_DURABLE_SECONDS: &str = "weir_produce_durable_seconds";
/// Gauge: open native-protocol connections.
pub(crate) const CONNECTIONS: &str = "weir_connections";
/// Counter: connections closed as soon as accepted because `max_connections` were open.
pub(crate) const CONNECTIONS_REFUSED_TOTAL: &str = "weir_connections_refused_total";
/// Counter: connections closed after `connection_idle_timeout_ms` without a request.
pub(crate) const CONNECTIONS_IDLE_CLOSED_TOTAL: &str = "weir_connections_idle_closed_total";
/// Gauge: pulls held waiting for messages (long polling).
pub(crate) const LONG_POLL_WAITERS: &str = "weir_long_poll_waiters";
/// Gauge: delayed messages waiting for their delivery time (emitted by the delay scheduler).
pub(crate) const DELAYED_MESSAGES: &str = "weir_delayed_messages";
/// Histogram: how late delayed messages were appended to their queue (store time minus the
/// due time of the earliest message in the append), seconds.
pub(crate) const DELAY_LATENESS_SECONDS: &str = "weir_delay_lateness_seconds";
/// Counter: delayed or retried messages dropped because they can never be stored (their
/// topic name is refused by the store, or they are over the size limit); each drop is logged.
pub(crate) const DELAYED_DROPPED_TOTAL: &str = "weir_delayed_dropped_total";
/// Counter `{group}`: messages sent to a group's retry topic (emitted by retry handling).
pub(crate) const RETRY_MESSAGES_TOTAL: &str = "weir_retry_messages_total";
/// Counter `{group}`: messages moved to a group's dead-letter topic (emitted by retry
/// handling).
pub(crate) const DLQ_MESSAGES_TOTAL: &str = "weir_dlq_messages_total";
/// Counter `{group}`: rebalances of a Kafka consumer group completed (each a new generation).
pub(crate) const KAFKA_GROUP_REBALANCES_TOTAL: &str = "weir_kafka_group_rebalances_total";

/// A gauge computed at scrape time: its name and help text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    /// The metric name.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
}

/// Snapshot gauge: bytes between the oldest and the newest commit-log offset on disk.
pub(crate) const COMMIT_LOG_BYTES: Snapshot = Snapshot {
    name: "weir_commit_log_bytes",
    help: "Bytes between the oldest and the newest commit-log offset on disk.",
};
/// Snapshot gauge: commit-log segment files.
pub(crate) const COMMIT_LOG_SEGMENTS: Snapshot = Snapshot {
    name: "weir_commit_log_segments",
    help: "Commit-log segment files.",
};
/// Snapshot gauge: bytes the segment files take on disk (preallocated).
pub(crate) const COMMIT_LOG_SEGMENT_BYTES: Snapshot = Snapshot {
    name: "weir_commit_log_segment_bytes",
    help: "Bytes the commit-log segment files take on disk (preallocated).",
};
/// Snapshot gauge: written but not yet durable bytes.
pub(crate) const UNFLUSHED_BYTES: Snapshot = Snapshot {
    name: "weir_unflushed_bytes",
    help: "Commit-log bytes written but not yet durable (fdatasync pending).",
};
/// Snapshot gauge: written but not yet dispatched to the consume queues and indexes.
pub(crate) const DISPATCH_LAG_BYTES: Snapshot = Snapshot {
    name: "weir_dispatch_lag_bytes",
    help: "Commit-log bytes written but not yet dispatched to consume queues and indexes.",
};
/// Snapshot gauge: free bytes on the data directory's filesystem.
pub(crate) const DISK_FREE_BYTES: Snapshot = Snapshot {
    name: "weir_disk_free_bytes",
    help: "Free bytes on the data directory's filesystem.",
};
/// Snapshot gauge: size of the data directory's filesystem.
pub(crate) const DISK_TOTAL_BYTES: Snapshot = Snapshot {
    name: "weir_disk_total_bytes",
    help: "Size of the data directory's filesystem in bytes.",
};
/// Snapshot gauge: topics.
pub(crate) const TOPICS: Snapshot = Snapshot {
    name: "weir_topics",
    help: "Topics on this broker.",
};
/// Snapshot gauge: seconds since the broker's HTTP listener opened.
pub(crate) const UPTIME_SECONDS: Snapshot = Snapshot {
    name: "weir_uptime_seconds",
    help: "Seconds since the broker started.",
};
/// Snapshot gauge `{group, topic, queue}`: a group's committed offset on a queue.
pub(crate) const GROUP_COMMITTED_OFFSET: Snapshot = Snapshot {
    name: "weir_group_committed_offset",
    help: "A consumer group's committed offset on a queue.",
};
/// Snapshot gauge `{group, topic, queue}`: messages of a queue the group has still to consume.
pub(crate) const GROUP_LAG: Snapshot = Snapshot {
    name: "weir_group_lag",
    help: "Messages of a queue a consumer group has still to consume.",
};

/// Gauge: the Raft term this replica is in (0 standalone).
pub(crate) const RAFT_TERM: &str = "weir_raft_term";
/// Gauge: the last Raft log index known committed here.
pub(crate) const RAFT_COMMIT_INDEX: &str = "weir_raft_commit_index";
/// Gauge: 1 while this replica leads its broker group.
pub(crate) const RAFT_LEADER: &str = "weir_raft_leader";

/// Gives every event metric its help text; call once, after installing the recorder.
pub(crate) fn describe() {
    describe_counter!(
        MESSAGES_IN_TOTAL,
        Unit::Count,
        "Messages stored by produce requests, per topic."
    );
    describe_counter!(
        BYTES_IN_TOTAL,
        Unit::Bytes,
        "Record bytes stored by produce requests, per topic."
    );
    describe_counter!(
        MESSAGES_OUT_TOTAL,
        Unit::Count,
        "Messages sent to consumers by pull requests, per topic."
    );
    describe_counter!(
        BYTES_OUT_TOTAL,
        Unit::Bytes,
        "Record bytes sent to consumers by pull requests, per topic."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Native-protocol requests answered, per api and error code (ok for success)."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a native request's arrival to its answer, per api (long-poll waits included)."
    );
    describe_histogram!(
        PRODUCE_DURABLE_SECONDS,
        Unit::Seconds,
        "Time from a produce request's arrival until its batch is stored as the flush mode requires (durable in sync mode)."
    );
    describe_counter!(
        DAMAGED_MESSAGES_TOTAL,
        Unit::Count,
        "Messages found damaged on disk and skipped (never served), per reason; each damaged range counted once."
    );
    describe_counter!(
        FSYNC_TOTAL,
        Unit::Count,
        "fdatasync calls on commit-log segments."
    );
    describe_histogram!(
        FSYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each fdatasync of a commit-log segment."
    );
    describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Open native-protocol connections."
    );
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        Unit::Count,
        "Connections closed as soon as accepted because max_connections were open."
    );
    describe_counter!(
        CONNECTIONS_IDLE_CLOSED_TOTAL,
        Unit::Count,
        "Connections closed after connection_idle_timeout_ms without a request."
    );
    describe_gauge!(
        RAFT_TERM,
        Unit::Count,
        "The Raft term this replica is in (0 standalone)."
    );
    describe_gauge!(
        RAFT_COMMIT_INDEX,
        Unit::Count,
        "The last Raft log index known committed on this replica."
    );
    describe_gauge!(
        RAFT_LEADER,
        Unit::Count,
        "1 while this replica leads its broker group, else 0."
    );
    describe_gauge!(
        LONG_POLL_WAITERS,
        Unit::Count,
        "Pull requests held waiting for messages (long polling)."
    );
    describe_gauge!(
        DELAYED_MESSAGES,
        Unit::Count,
        "Delayed messages waiting for their delivery time."
    );
    describe_histogram!(
        DELAY_LATENESS_SECONDS,
        Unit::Seconds,
        "How late delayed messages were appended to their queue after their due time."
    );
    describe_counter!(
        DELAYED_DROPPED_TOTAL,
        Unit::Count,
        "Delayed or retried messages dropped because they can never be stored."
    );
    describe_counter!(
        KAFKA_GROUP_REBALANCES_TOTAL,
        Unit::Count,
        "Rebalances of a Kafka consumer group completed (each a new generation), per group."
    );
    describe_counter!(
        RETRY_MESSAGES_TOTAL,
        Unit::Count,
        "Messages sent to a consumer group's retry topic, per group."
    );
    describe_counter!(
        DLQ_MESSAGES_TOTAL,
        Unit::Count,
        "Messages moved to a consumer group's dead-letter topic, per group."
    );
}

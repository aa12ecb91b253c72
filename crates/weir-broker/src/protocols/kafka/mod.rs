//! The Kafka wire protocol: any Kafka client produces to and consumes from Weir's own topics.
//!
//! A Kafka partition is a Weir queue and a Kafka offset is the queue offset; a Kafka record
//! batch is the batch inside a stored entry (see `weir_proto::batch`), so nothing is converted
//! in either direction: a produced batch gets Weir's envelope and is stored as it came, a fetch
//! sends stored batches back without their envelopes. Requests and responses are decoded and
//! encoded with the `kafka-protocol` crate.
//!
//! ```text
//! server       the accept loop (bounded connections, in-flight byte budgets)
//! connection   one client: length-prefixed frames in, responses out in request order
//! dispatch     API key + version → handler; encodes the response with its header
//! versions     the advertised API version ranges; ApiVersions
//! names        Kafka topic names ↔ Weir topic names (retry and dead-letter topics)
//! epochs       leader epochs: the current one, fencing, where each starts in a queue
//! errors       Weir error codes → Kafka error codes
//! metadata     Metadata (auto-creating topics), FindCoordinator
//! replicas     a broker group as Kafka brokers: broker id = node id, the leader leads
//! produce      Produce (acks 0, 1, all; idempotent producers)
//! fetch        Fetch (long polls with fetch.max.wait.ms / fetch.min.bytes)
//! offsets      ListOffsets (earliest, latest, by time), OffsetForLeaderEpoch
//! admin        CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, InitProducerId
//! groups       the classic consumer-group protocol and committed offsets
//! ```

pub(crate) mod admin;
pub(crate) mod connection;
pub(crate) mod dispatch;
pub(crate) mod epochs;
pub(crate) mod errors;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod metadata;
pub(crate) mod names;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod replicas;
pub(crate) mod server;
pub(crate) mod versions;

/// The broker id a standalone broker gives itself in Kafka metadata (in a broker group, each
/// replica is its Raft node id).
pub(crate) const NODE_ID: i32 = 0;

/// Where Kafka clients reach this broker, as Metadata and FindCoordinator say.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: i32,
}

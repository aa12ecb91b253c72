//! Weir's server: the broker (commit log, queues, consumer groups, delayed delivery, retries,
//! transactions, idempotence) and the name-server role, behind the native protocol and an HTTP
//! admin API.
//!
//! [`Broker::start`] opens the store, loads the features' state, binds the listeners and
//! serves until [`Broker::shutdown`]. The native protocol is `docs/protocol.md`; the HTTP API,
//! metrics and probes are `docs/http-api.md`; `docs/architecture.md` explains the layout below.
//!
//! # Layout
//!
//! ```text
//! broker.rs      start-up and shutdown: builds every part, wires them, starts the tasks
//! state.rs       what the protocol edges share (BrokerState): core parts + every feature
//! name_server_process.rs  `weir nameserver`: a process that is only the name-server role
//!
//! core/          message_log (the ONE writer of the commit log; decides "acknowledged"),
//!                identity (names, addresses, message ids), topics (+ topic_rebuild from the
//!                log), role (leader or not), replica (Raft status), membership (adding
//!                and removing replicas), state_change (broker state carried by the log),
//!                position, long_poll, session, traffic, clock
//! features/      delay, retry (+ dead letters), transaction, idempotence,
//!                groups (coordinator, classic, offsets, offsets_check, shared)
//! ops/           protocol-neutral operations: produce, pull, send (one message from
//!                fields), topics, groups, lookups, browse, dead letters, overview
//! protocols/     accept (the accept loop every listener runs), in_flight (byte budgets),
//!                socket; native (frames + protobuf: server, connection, dispatch,
//!                handlers, outbox, registration with name servers), kafka (the Kafka wire
//!                protocol with the kafka-protocol crate),
//!                http (admin API, dashboard, history, metrics, probes, damaged ranges)
//! routing/       the name-server registry (routes from broker registrations)
//! replication/   a broker group's Raft (openraft) over the commit log: log storage, log
//!                index, state machine, network, status, membership changes
//! ```
//!
//! # Dependency rules
//!
//! * `core` depends on nothing else in the crate (but `config`/`error`/`shutdown` helpers).
//! * A feature depends on `core` and on other features' handles — never on `state`, `ops`,
//!   `protocols` or protobuf types (`weir_proto::pb`). It is built from explicit parts.
//! * `ops` turns a request's fields into calls on core and features and returns neutral
//!   results; it knows no protocol.
//! * `protocols` decode, call `ops`/features, encode. Nothing depends on them but `broker.rs`.
//! * `replication` depends on `core` only; the write path reaches it through
//!   `core::message_log::Consensus`.
//! * Only `core::message_log` (and, in a broker group, `replication::log_store`, which Raft
//!   drives) calls the store's append functions.
//!
//! `tests/layering.rs` checks these rules on the source.

mod atomic_file;
mod broker;
mod config;
mod core;
mod error;
mod features;
mod metrics_catalog;
mod name_server_process;
mod ops;
mod protocols;
mod replication;
mod routing;
mod shutdown;
mod state;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use name_server_process::{NameServerConfig, NameServerProcess};

//! Weir's server: the native-protocol listener, request handlers, topics, consumer groups and
//! their offsets, long polling, and the name-server role.
//!
//! [`Broker::start`] opens the store, loads topics and offsets, binds the listeners and serves
//! until [`Broker::shutdown`]. The native protocol it speaks is `docs/protocol.md`; its HTTP
//! admin API, metrics and probes are `docs/http-api.md`.

mod atomic_file;
mod broker;
mod config;
mod connection;
mod dead_letter;
mod delay;
mod dispatch;
mod error;
mod group;
mod handlers;
mod http;
mod idempotence;
mod in_flight;
mod long_poll;
mod metrics_catalog;
mod name_server;
mod offsets;
mod ops;
mod outbox;
mod registration;
mod retry;
mod server;
mod shared_group;
mod shutdown;
mod timing_wheel;
mod topics;
mod transaction;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;

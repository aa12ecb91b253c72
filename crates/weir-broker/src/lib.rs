//! Weir's server: the native-protocol listener, request handlers, topics, consumer groups and
//! their offsets, long polling, and the name-server role.
//!
//! [`Broker::start`] opens the store, loads topics and offsets, binds the listener and serves
//! until [`Broker::shutdown`]. The protocol it speaks is `docs/protocol.md`.

mod atomic_file;
mod broker;
mod config;
mod connection;
mod delay;
mod dispatch;
mod error;
mod group;
mod handlers;
mod long_poll;
mod name_server;
mod offsets;
mod registration;
mod retry;
mod server;
mod shutdown;
mod timing_wheel;
mod topics;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;

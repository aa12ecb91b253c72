//! End-to-end tests: each starts the real `weir` binary on a free loopback port and talks to it
//! over TCP, through the CLI and the client crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod bench;
mod cli;
mod cluster;
mod damaged;
mod dashboard;
mod dashboard_api;
mod delay;
mod filter;
mod groups;
mod harness;
mod http_api;
mod idempotence;
mod kafka;
mod kafka_groups;
mod metrics;
mod names;
mod orderly;
mod overload;
mod positions;
mod replay;
mod retry;
mod shared;
mod transaction;

//! Cluster tests: name servers and a 3-replica broker group as real `weir` processes on
//! loopback, faults injected under load, and a checker over everything the load saw.
//!
//! # How a test cluster is wired
//!
//! ```text
//!        clients (producers, consumer group, admin): --server ns0,ns1,ns2
//!             │ routes                                   │ produce / pull / commit
//!   ┌─────────▼──────────────┐                           ▼
//!   │ weir nameserver ×3     │◀── register ── node 1 ─ node 2 ─ node 3 (weir serve --config)
//!   └────────────────────────┘              native, HTTP on port 0 (read from their output)
//!
//!   Raft, every directed link i→j through its own proxy P(i→j):
//!
//!     node 1 ──▶ P(1→2) ──▶ raft_listen 2        node 2 ──▶ P(2→1) ──▶ raft_listen 1
//!     node 1 ──▶ P(1→3) ──▶ raft_listen 3        node 3 ──▶ P(3→1) ──▶ raft_listen 1
//!     node 2 ──▶ P(2→3) ──▶ raft_listen 3        node 3 ──▶ P(3→2) ──▶ raft_listen 2
//! ```
//!
//! Raft listeners need addresses every replica knows before any starts: the harness picks
//! free ports up front (bind port 0, read it, close). Node i's `raft_peers` names, for each
//! peer j, the proxy P(i→j) (and its own `raft_listen` for itself), so each direction of each
//! pair can be cut on its own: [`proxy::LinkMode`] `Pass`, `Refuse` (close), `Drop` (silent
//! partition) or `Delay`. [`proxy::Proxies::isolate`] cuts every link of one node.
//!
//! Each replica has its own directory (`node-N.toml`, `data/`, `weir.log`); it can be
//! SIGKILLed, SIGSTOPped and resumed, restarted (same config, same data directory, the same
//! native and HTTP addresses it bound first) or restarted empty. The leader is the replica
//! that says it leads with the highest term ([`nodes::replica_view`], the one function that
//! knows where a replica publishes its status).
//!
//! A [`load::Load`] runs producers and a consumer group through the name servers, recording a
//! [`history::History`]; [`checker::check`] turns it into a [`checker::Report`].

pub mod checker;
pub mod history;
pub mod load;
pub mod nodes;
pub mod proxy;

mod delays;
mod faults;
mod kafka;
mod kafka_epochs;
mod kafka_wire;
mod membership;
mod name_servers;
mod shared;
mod smoke;
mod snapshots;
mod transactions;

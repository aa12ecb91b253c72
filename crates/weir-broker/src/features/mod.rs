//! Features, each built from the few core parts it uses (the write path, the topic table, the
//! identity, each other's handles) and free of any protocol's types: delayed delivery
//! ([`delay`]), retries and dead letters ([`retry`]), transactions ([`transaction`]),
//! idempotent producers ([`idempotence`]) and consumer groups ([`groups`]).
//!
//! A feature returns neutral results (positions, records, typed errors); the protocol edges
//! turn them into their own answers.

pub(crate) mod delay;
pub(crate) mod groups;
pub(crate) mod idempotence;
pub(crate) mod retry;
pub(crate) mod transaction;

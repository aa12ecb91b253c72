//! Broker operations that do not depend on a protocol: the native handlers and the HTTP admin
//! API both call these, then encode the answer their own way (protobuf or JSON). Produce
//! ([`produce`]) and the long-polling read ([`pull`]) return neutral results, ready for any
//! protocol; [`send`] produces one message given as fields (HTTP, the dashboard).

pub(crate) mod browse;
pub(crate) mod dead_letter;
pub(crate) mod group;
pub(crate) mod lookup;
pub(crate) mod overview;
pub(crate) mod produce;
pub(crate) mod pull;
pub(crate) mod replicas;
pub(crate) mod replicated;
pub(crate) mod send;
pub(crate) mod topic;

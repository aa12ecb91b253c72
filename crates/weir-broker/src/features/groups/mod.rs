//! Consumer groups: the coordinator that assigns queues to members ([`coordinator`]), the
//! committed offsets ([`offsets`]) and shared (per-message ack) groups ([`shared`]).

pub(crate) mod coordinator;
pub(crate) mod offsets;
pub(crate) mod offsets_check;
pub(crate) mod shared;

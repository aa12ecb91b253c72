//! Consumer groups: the coordinator that assigns queues to members ([`coordinator`]), the
//! committed offsets ([`offsets`]) and shared (per-message ack) groups ([`shared`]; in a broker
//! group the leader sends their changes to the other replicas, [`shared_progress`]).
//! Kafka's classic group protocol has its own coordinator ([`classic`]) over the same offsets.

pub(crate) mod classic;
pub(crate) mod coordinator;
pub(crate) mod offsets;
pub(crate) mod offsets_check;
pub(crate) mod shared;
pub(crate) mod shared_progress;

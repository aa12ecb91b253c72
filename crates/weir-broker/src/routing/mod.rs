//! Routing: the name-server registry ([`name_server`]), built from broker registrations,
//! answering which broker group (and which of its replicas, the leader) serves which queue,
//! and the cluster's status as name servers see it ([`cluster_status`]). Brokers register
//! over the native protocol (`protocols::native::registration`).

pub(crate) mod cluster_status;
pub(crate) mod name_server;

//! Routing: the name-server registry ([`name_server`]), built from broker registrations,
//! answering which broker group serves which queue. Brokers register over the native
//! protocol (`protocols::native::registration`).

pub(crate) mod name_server;

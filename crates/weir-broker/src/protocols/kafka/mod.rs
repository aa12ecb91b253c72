//! The Kafka wire protocol. So far its consumer-group APIs ([`groups`]); the listener and its
//! dispatch call them.

// Until the listener's dispatch calls the handlers.
#[allow(dead_code)]
pub(crate) mod groups;

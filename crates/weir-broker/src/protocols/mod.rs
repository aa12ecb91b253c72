//! The protocol edges: each decodes requests, calls the protocol-neutral operations
//! ([`crate::ops`]) and the features, and encodes the answers. Nothing depends on them but
//! start-up.

pub(crate) mod accept;
pub(crate) mod http;
pub(crate) mod in_flight;
pub(crate) mod kafka;
pub(crate) mod native;
pub(crate) mod socket;

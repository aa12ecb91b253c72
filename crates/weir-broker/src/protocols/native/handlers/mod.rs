//! Request handlers, one module per family of api keys. Each takes the decoded request and
//! answers with a [`Reply`] or a [`RequestError`].

pub(crate) mod group;
pub(crate) mod lookup;
pub(crate) mod produce;
pub(crate) mod pull;
pub(crate) mod replicas;
pub(crate) mod retry;
pub(crate) mod route;
pub(crate) mod shared;
pub(crate) mod topic;
pub(crate) mod transaction;

use std::net::SocketAddr;

use bytes::Bytes;

use crate::core::session::ConnectionId;

/// A successful answer: the encoded protobuf body and the payload.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The encoded response body.
    pub meta: Bytes,
    /// Raw records, or empty.
    pub payload: Bytes,
}

impl Reply {
    /// An answer with `meta` and no payload.
    pub fn meta(meta: &impl prost::Message) -> Reply {
        Reply::with_payload(meta, Bytes::new())
    }

    /// An answer with `meta` and `payload`.
    pub fn with_payload(meta: &impl prost::Message, payload: Bytes) -> Reply {
        Reply {
            meta: meta.encode_to_vec().into(),
            payload,
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestContext {
    /// The connection it came on.
    pub connection: ConnectionId,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// Refuses a request whose required text `field` is empty.
pub(crate) fn require(field: &str, value: &str) -> Result<(), crate::error::RequestError> {
    if value.is_empty() {
        return Err(crate::error::RequestError::new(
            weir_proto::ErrorCode::InvalidArgument,
            format!("{field} must be set"),
        ));
    }
    Ok(())
}

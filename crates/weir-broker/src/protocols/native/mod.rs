//! The native protocol (`docs/protocol.md`): length-prefixed frames with a protobuf body and a
//! raw record payload. The listener ([`server`]), one reader and writer per connection
//! ([`connection`]), the api-key table ([`dispatch`]), the handlers ([`handlers`]) and the
//! server-to-client channel ([`outbox`]), and this broker's registration with name servers
//! ([`registration`]).

pub(crate) mod cluster_query;
pub(crate) mod connection;
pub(crate) mod dispatch;
pub(crate) mod handlers;
pub(crate) mod name_server_connection;
pub(crate) mod outbox;
pub(crate) mod registration;
pub(crate) mod remote;
pub(crate) mod server;

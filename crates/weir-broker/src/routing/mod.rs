//! Routing: the name-server registry ([`name_server`]) and this broker's registration with
//! every name server ([`registration`]).

pub(crate) mod name_server;
pub(crate) mod registration;

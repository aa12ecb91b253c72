//! The core every feature and protocol builds on: the one write path ([`message_log`]) and
//! where a produce went ([`position`]), this node's identity ([`identity`]), the topic table
//! ([`topics`]), the role signal ([`role`]), this replica's group status ([`replica`]) and
//! who replicates the group ([`membership`]), the long-poll waiters ([`long_poll`]), client
//! sessions ([`session`]) and the clock ([`clock`]). Nothing here knows a feature or a
//! protocol.

pub(crate) mod clock;
pub(crate) mod identity;
pub(crate) mod long_poll;
pub(crate) mod membership;
pub(crate) mod message_log;
pub(crate) mod position;
pub(crate) mod replica;
pub(crate) mod role;
pub(crate) mod session;
pub(crate) mod state_change;
pub(crate) mod topic_rebuild;
pub(crate) mod topics;
pub(crate) mod traffic;

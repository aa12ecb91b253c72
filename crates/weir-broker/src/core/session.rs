//! Client sessions as features see them: an id per connection, whatever the protocol.

/// Identifies one client connection for as long as it is open (never reused).
pub type ConnectionId = u64;

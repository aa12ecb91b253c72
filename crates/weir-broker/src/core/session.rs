//! Client sessions as features see them: an id per connection, whatever the protocol.

use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one client connection for as long as it is open (never reused).
pub type ConnectionId = u64;

/// The next connection id, shared by every listener so ids never collide across protocols.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id.
pub fn next_connection_id() -> ConnectionId {
    NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)
}

//! Names of the metrics the store emits through the `metrics` facade. The broker's metric
//! catalog describes them next to its own; whoever installs a recorder decides where they go
//! (without one they cost an atomic load each).

/// Counter: fdatasync calls on commit-log segments.
pub const FSYNC_TOTAL: &str = "weir_fsync_total";
/// Histogram: how long each fdatasync of a commit-log segment took, seconds.
pub const FSYNC_DURATION_SECONDS: &str = "weir_fsync_duration_seconds";
/// Counter: messages a read or recovery found damaged and skipped (label `reason`: see
/// `DamageReason::as_str`), counted once per damaged range.
pub const DAMAGED_MESSAGES_TOTAL: &str = "weir_damaged_messages_total";

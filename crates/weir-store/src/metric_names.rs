//! Names of the metrics the store emits through the `metrics` facade. The broker's metric
//! catalog describes them next to its own; whoever installs a recorder decides where they go
//! (without one they cost an atomic load each).

/// Counter: fdatasync calls on commit-log segments.
pub const FSYNC_TOTAL: &str = "weir_fsync_total";
/// Histogram: how long each fdatasync of a commit-log segment took, seconds.
pub const FSYNC_DURATION_SECONDS: &str = "weir_fsync_duration_seconds";

//! `GET /api/v1/damaged`: the damaged ranges the store has found (by recovery and by reads),
//! so the operator can see what was isolated and act on it (restore from a replica or a
//! backup, or accept the loss). See `docs/operations.md`, "Damaged data".

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use weir_store::{DamageLocation, DamagedRange};

use super::HttpShared;
use super::api_error::ApiError;

/// One damaged range.
#[derive(Debug, Serialize)]
pub(crate) struct DamagedRangeInfo {
    /// `log` (commit-log bytes) or `queue` (queue offsets).
    kind: &'static str,
    /// The topic, for a queue range.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// The queue, for a queue range.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_id: Option<u32>,
    /// First damaged offset (a commit-log offset for `log`, a queue offset for `queue`).
    from: u64,
    /// One past the last damaged offset.
    to: u64,
    /// `corrupt_record`, `index_mismatch`, `missing_entry`, `lost_in_log` or `damaged_log`.
    reason: &'static str,
}

/// The answer: every damaged range, oldest first.
#[derive(Debug, Serialize)]
pub(crate) struct DamagedList {
    damaged: Vec<DamagedRangeInfo>,
}

fn info(range: DamagedRange) -> DamagedRangeInfo {
    let (kind, topic, queue_id) = match range.location {
        DamageLocation::Log => ("log", None, None),
        DamageLocation::Queue { topic, queue_id } => ("queue", Some(topic), Some(queue_id)),
    };
    DamagedRangeInfo {
        kind,
        topic,
        queue_id,
        from: range.from,
        to: range.to,
        reason: range.reason.as_str(),
    }
}

/// Lists every damaged range.
pub(crate) async fn list(
    State(shared): State<Arc<HttpShared>>,
) -> Result<Json<DamagedList>, ApiError> {
    let state = shared.broker()?;
    let damaged = state.log.damaged_ranges().into_iter().map(info).collect();
    Ok(Json(DamagedList { damaged }))
}

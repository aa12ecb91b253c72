//! Where retention meets Raft: a replica's retention deletes no segment whose entries its Raft
//! log still holds (the store's retention floor), so every few seconds this task asks how far
//! retention wants to go, and purges the Raft log up to there (after building a snapshot that
//! covers it: openraft purges nothing a snapshot does not cover). The purge raises the floor
//! (`log_store.rs`), and retention deletes the segments on its next run.
//!
//! A replica that then needs a purged entry gets the snapshot instead (`snapshot.rs`). A new
//! snapshot is built at most every `raft_snapshot_min_interval_ms` (30 s): a replica receiving one starts
//! again on it, and while it does the leader may send that same snapshot again, which the
//! replica then already holds; a newer one each time could keep it starting again for ever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use super::Raft;
use super::log_store::LogShared;

/// How often retention's wishes are checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Runs until shutdown, building a snapshot at most every `min_interval`.
pub(crate) async fn run(
    raft: Raft,
    shared: Arc<LogShared>,
    min_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_built: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
        let store = Arc::clone(&shared.store);
        let wanted = match tokio::task::spawn_blocking(move || store.retention_wanted()).await {
            Ok(Ok(Some(wanted))) => wanted,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot tell what retention wants");
                continue;
            }
            Err(_) => continue,
        };
        let (applied, snapshot, purged) = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            (
                m.last_applied.map(|id| id.index),
                m.snapshot.map(|id| id.index),
                m.purged.map(|id| id.index),
            )
        };
        let Some(applied) = applied else { continue };
        let Some(upto) = shared
            .index
            .lock()
            .last_ending_by(wanted)
            .map(|i| i.min(applied))
        else {
            continue;
        };
        if purged.is_some_and(|p| p >= upto) {
            continue;
        }
        if snapshot.is_none_or(|s| s < upto) {
            if last_built.is_some_and(|at| at.elapsed() < min_interval) {
                continue;
            }
            last_built = Some(Instant::now());
            tracing::info!(
                upto,
                applied,
                commit_log = wanted,
                "building a raft snapshot for retention"
            );
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "cannot build a raft snapshot");
            }
            // The purge follows on a later round, once the snapshot is built.
            continue;
        }
        tracing::info!(
            upto,
            commit_log = wanted,
            "purging the raft log for retention"
        );
        if let Err(e) = raft.trigger().purge_log(upto).await {
            tracing::warn!(error = %e, "cannot purge the raft log");
        }
    }
}

//! In a broker group, the leader sends its shared groups' changes through the group's log
//! every [`PROGRESS_INTERVAL`], so that a new leader starts from them (see `shared`'s module
//! doc, "In a broker group").

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::message_log::MessageLog;
use crate::core::state_change::{SharedQueueProgress, StateChange};
use crate::features::groups::shared::SharedGroups;

/// How often the leader sends what changed: a failover loses at most the changes of the last
/// interval (their messages are delivered again), as a crash loses the last second's.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Runs and in-flight runs per log entry at most: a burst of changes is sent as several
/// entries, none of them large.
const RUNS_PER_ENTRY: usize = 16_384;

/// Sends the shared groups' changes while this replica leads; ends when `stop` says so,
/// after one last send.
pub(crate) async fn run(
    shared: Arc<SharedGroups>,
    log: MessageLog,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&shared, &log).await,
            _ = crate::shutdown::requested(&mut stop) => break,
        }
    }
    // Still leading at a clean shutdown: what changed since the last tick goes too.
    send(&shared, &log).await;
}

async fn send(shared: &SharedGroups, log: &MessageLog) {
    let progress = shared.take_progress();
    for entry in entries(progress) {
        if let Err(e) = log
            .propose(StateChange::SharedProgress {
                queues: entry.clone(),
            })
            .await
        {
            tracing::debug!(error = %e, "shared-group progress not sent; trying again");
            shared.retake(&entry);
        }
    }
}

/// Splits progress into log entries of at most [`RUNS_PER_ENTRY`] runs (a queue's progress is
/// never split).
fn entries(progress: Vec<SharedQueueProgress>) -> Vec<Vec<SharedQueueProgress>> {
    let mut out: Vec<Vec<SharedQueueProgress>> = Vec::new();
    let mut runs = 0;
    for p in progress {
        let size = 1 + p.acked.len() + p.in_flight.len();
        match out.last_mut() {
            Some(entry) if runs + size <= RUNS_PER_ENTRY => {
                runs += size;
                entry.push(p);
            }
            _ => {
                runs = size;
                out.push(vec![p]);
            }
        }
    }
    out
}

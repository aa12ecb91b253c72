//! Half messages awaiting a decision, as the dashboard lists them.

use std::time::Instant;

use super::Transactions;

/// A pending transaction's half message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwaitingHalf {
    /// The half message's commit-log offset (in `%HALF%`).
    pub half_offset: u64,
    /// The producer's transaction id.
    pub transaction_id: String,
    /// The producer group asked back.
    pub producer_group: String,
    /// The topic it commits to.
    pub topic: String,
    /// The queue it commits to.
    pub queue_id: u32,
    /// Check-backs sent so far.
    pub checks: u32,
    /// Ms until the next check-back (0: due).
    pub next_check_in_ms: u64,
}

impl Transactions {
    /// How many transactions await a decision.
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }

    /// Up to `max` half messages awaiting a decision, oldest first.
    pub(crate) fn awaiting(&self, max: usize) -> Vec<AwaitingHalf> {
        let now = Instant::now();
        self.pending
            .lock()
            .iter()
            .take(max)
            .map(|(&half_offset, p)| AwaitingHalf {
                half_offset,
                transaction_id: p.info.transaction_id.clone(),
                producer_group: p.info.producer_group.clone(),
                topic: p.info.topic.clone(),
                queue_id: p.info.queue_id,
                checks: p.checks,
                next_check_in_ms: p
                    .next_check
                    .saturating_duration_since(now)
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }
}

//! The broker at a glance: how many topics, groups, delayed messages, pending transactions and
//! dead letters it holds. The dashboard's overview page and `GET /api/v1/overview`.

use crate::state::BrokerState;

/// Counts of what the broker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Topics, internal `%…%` ones left out.
    pub topics: usize,
    /// Queues of those topics.
    pub queues: u64,
    /// Messages readable in those topics' queues.
    pub messages: u64,
    /// Consumer groups (as [`super::group::list`] lists them).
    pub groups: usize,
    /// Delayed messages waiting for their time.
    pub delayed: usize,
    /// Transactions waiting for a decision.
    pub transactions: usize,
    /// Dead letters of every group.
    pub dead_letters: u64,
}

/// Counts everything: walks the topic table and looks up each queue's offsets (a map lookup
/// each).
pub(crate) fn counts(state: &BrokerState) -> Counts {
    let mut topics = 0;
    let mut queues = 0;
    let mut messages = 0;
    for (name, config) in state.topics.list() {
        if weir_proto::names::is_internal(&name) {
            continue;
        }
        topics += 1;
        queues += u64::from(config.queues);
        for queue_id in 0..config.queues {
            let offsets = state.log.queue_offsets(&name, queue_id);
            messages += offsets.max - offsets.min;
        }
    }
    Counts {
        topics,
        queues,
        messages,
        groups: super::group::list(state).len(),
        delayed: state.delays.pending(),
        transactions: state.transactions.pending_count(),
        dead_letters: super::dead_letter::count_all(state),
    }
}

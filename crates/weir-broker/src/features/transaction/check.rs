//! The check-back: a task that finds undecided transactions whose check is due and asks a live
//! member of their producer group about each (a one-way `CheckTransaction` on the member's own
//! connection, answered by a one-way `EndTransaction`), and rolls back a transaction once it
//! has been checked `max` times without a decision. A check counts even when the group has no
//! live member, so a transaction whose producers are all gone is rolled back in the end.
//!
//! Every check is recorded in `%HALF_OP%` (attempt number, time) before it is sent, so after a
//! restart the broker goes on with the next attempt at its time ([`super::recovery`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use weir_proto::batch::with_record;
use weir_proto::transaction::{Decision, HALF_TOPIC, OP_TOPIC};

use crate::core::clock::now_ms;
use crate::core::session::ConnectionId;
use crate::features::transaction::{Transactions, half};

/// A question to a producer: what became of this transaction?
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckBack {
    /// The producer group asked.
    pub producer_group: String,
    /// The transaction.
    pub transaction_id: String,
    /// Its half message's commit-log offset (the answer names it).
    pub half_offset: u64,
    /// Where the message goes when committed.
    pub topic: String,
    /// Its queue there.
    pub queue_id: u32,
}

/// Delivers check-backs to producers' connections; the protocol a connection speaks
/// implements it (the native protocol: a one-way `CheckTransaction` frame).
pub(crate) trait CheckBackSender: Send + Sync {
    /// Sends `check` with the message as it would be committed, without waiting; false when
    /// the connection is gone or cannot take it now (the check is repeated later).
    fn send(&self, connection: ConnectionId, check: &CheckBack, message: Bytes) -> bool;
}

/// Check records appended per batch.
const CHECK_RECORDS_PER_APPEND: usize = 256;

/// A check-back about to be sent.
struct Check {
    half_offset: u64,
    transaction_id: String,
    attempt: u32,
}

/// A transaction checked `checks` times without a decision, to be rolled back.
struct RollBack {
    half_offset: u64,
    transaction_id: String,
    checks: u32,
}

/// Runs until shutdown, waking a few times per check interval.
pub(crate) async fn run(
    transactions: Arc<Transactions>,
    sender: Arc<dyn CheckBackSender>,
    mut shutdown: watch::Receiver<bool>,
) {
    if transactions.log.is_replicated() && !take_over(&transactions, &mut shutdown).await {
        return;
    }
    let timings = transactions.timings;
    let tick = (timings.first.min(timings.interval) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
        let (checks, rollbacks) = collect_due(&transactions);
        record_checks(&transactions, &checks).await;
        for check in &checks {
            send_check(&transactions, sender.as_ref(), check);
        }
        for RollBack {
            half_offset,
            transaction_id,
            checks,
        } in rollbacks
        {
            match transactions
                .end(half_offset, &transaction_id, Decision::Rollback)
                .await
            {
                Ok(_) => tracing::warn!(
                    half_offset,
                    %transaction_id,
                    checks,
                    "transaction rolled back: no producer of its group decided it"
                ),
                Err(e) => tracing::error!(half_offset, %transaction_id, error = %e,
                    "rolling back an undecided transaction failed; will retry"),
            }
        }
        let end = transactions.log.queue_offsets(HALF_TOPIC, 0).max;
        let chores = transactions.clone();
        let persisted = tokio::task::spawn_blocking(move || chores.persist_low_water(end)).await;
        match persisted {
            Ok(Err(e)) => {
                tracing::error!(error = %e, "persisting the transaction low-water mark failed")
            }
            Err(e) => {
                tracing::error!(error = %e, "persisting the transaction low-water mark failed")
            }
            Ok(Ok(())) => {}
        }
    }
}

/// Longest a new leader waits for its log to be applied before it rebuilds the pending set.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// A new leader of a broker group waits until everything its log held when it took over is
/// applied (decisions of the previous leader included), then rebuilds the pending set from
/// the log. Returns false on shutdown.
async fn take_over(transactions: &Arc<Transactions>, shutdown: &mut watch::Receiver<bool>) -> bool {
    let target = transactions.log.stats().written_offset;
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    while transactions.log.stats().dispatched_offset < target
        && tokio::time::Instant::now() < deadline
    {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = crate::shutdown::requested(shutdown) => return false,
        }
    }
    let rebuilt = transactions.clone();
    match tokio::task::spawn_blocking(move || rebuilt.rebuild()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "rebuilding undecided transactions failed"),
        Err(e) => tracing::error!(error = %e, "rebuilding undecided transactions failed"),
    }
    true
}

/// The transactions whose check is due (their schedule advanced and their count raised) and
/// those checked `max` times, to roll back.
fn collect_due(transactions: &Transactions) -> (Vec<Check>, Vec<RollBack>) {
    let timings = transactions.timings;
    let now = Instant::now();
    let mut checks = Vec::new();
    let mut rollbacks = Vec::new();
    let mut pending = transactions.pending.lock();
    for (&half_offset, p) in pending.iter_mut() {
        if p.deciding || p.next_check > now {
            continue;
        }
        p.next_check = now + timings.interval;
        if p.checks >= timings.max {
            rollbacks.push(RollBack {
                half_offset,
                transaction_id: p.info.transaction_id.clone(),
                checks: p.checks,
            });
        } else {
            p.checks += 1;
            checks.push(Check {
                half_offset,
                transaction_id: p.info.transaction_id.clone(),
                attempt: p.checks,
            });
        }
    }
    (checks, rollbacks)
}

/// Appends one `%HALF_OP%` record per check about to be sent, so a restart goes on counting.
/// A failure is logged and the checks are sent anyway: after a restart those attempts are
/// made again.
async fn record_checks(transactions: &Transactions, checks: &[Check]) {
    let now = now_ms();
    for chunk in checks.chunks(CHECK_RECORDS_PER_APPEND) {
        let mut batch = BytesMut::new();
        for check in chunk {
            match half::check_record(check.half_offset, &check.transaction_id, check.attempt, now) {
                Ok(record) => batch.extend_from_slice(&record),
                Err(e) => tracing::error!(half_offset = check.half_offset, error = %e,
                    "cannot encode a transaction check record"),
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = transactions.log.append(OP_TOPIC, 0, batch).await {
            tracing::error!(error = %e, checks = chunk.len(),
                "recording transaction check-backs failed; a restart will repeat them");
        }
    }
}

/// Sends one `CheckTransaction` to a live member of the half's producer group, if there is one.
fn send_check(transactions: &Transactions, sender: &dyn CheckBackSender, check: &Check) {
    let (half_offset, attempt) = (check.half_offset, check.attempt);
    let (bytes, info) = match transactions.read_half(half_offset) {
        Ok(half) => half,
        Err(e) => {
            tracing::error!(half_offset, error = %e, "cannot read a pending half message");
            return;
        }
    };
    let Some((connection, client_id)) = transactions.member(&info.producer_group, attempt) else {
        tracing::info!(half_offset, transaction_id = %info.transaction_id,
            group = %info.producer_group, attempt,
            "no live producer of the group to check the transaction with");
        return;
    };
    let message = match with_record(&bytes, 0, |_, r| half::restore(r, &info))
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(message) => message,
        Err(e) => {
            tracing::error!(half_offset, error = %e, "cannot restore a pending half message");
            return;
        }
    };
    let question = CheckBack {
        producer_group: info.producer_group.clone(),
        transaction_id: info.transaction_id.clone(),
        half_offset,
        topic: info.topic.clone(),
        queue_id: info.queue_id,
    };
    let sent = sender.send(connection, &question, Bytes::from(message));
    tracing::info!(half_offset, transaction_id = %info.transaction_id, %client_id, attempt, sent,
        "transaction checked back");
}

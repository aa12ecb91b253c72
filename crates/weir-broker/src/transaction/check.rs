//! The check-back: a task that finds undecided transactions whose check is due and asks a live
//! member of their producer group about each (a one-way `CheckTransaction` on the member's own
//! connection, answered by a one-way `EndTransaction`), and rolls back a transaction once it
//! has been checked `max` times without a decision. A check counts even when the group has no
//! live member, so a transaction whose producers are all gone is rolled back in the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use weir_proto::frame::flags;
use weir_proto::record::Record;
use weir_proto::transaction::{Decision, HALF_TOPIC};
use weir_proto::{ApiKey, Header, OutFrame, pb};

use crate::broker::BrokerState;
use crate::transaction::{half, read_half};

/// What to do about one due transaction.
enum Due {
    Check {
        half_offset: u64,
        attempt: u32,
    },
    RollBack {
        half_offset: u64,
        transaction_id: String,
        checks: u32,
    },
}

/// Runs until shutdown, waking a few times per check interval.
pub(crate) async fn run(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let timings = state.transactions.timings;
    let tick = (timings.first.min(timings.interval) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let request_ids = AtomicU32::new(1);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
        for due in collect_due(&state) {
            match due {
                Due::Check {
                    half_offset,
                    attempt,
                } => send_check(&state, half_offset, attempt, &request_ids),
                Due::RollBack {
                    half_offset,
                    transaction_id,
                    checks,
                } => {
                    match crate::transaction::end(
                        &state,
                        half_offset,
                        &transaction_id,
                        Decision::Rollback,
                    )
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
            }
        }
        let end = state.store.queue_offsets(HALF_TOPIC, 0).max;
        let chores = state.clone();
        let persisted =
            tokio::task::spawn_blocking(move || chores.transactions.persist_low_water(end)).await;
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

/// The transactions whose check is due, their schedule advanced.
fn collect_due(state: &BrokerState) -> Vec<Due> {
    let timings = state.transactions.timings;
    let now = Instant::now();
    let mut due = Vec::new();
    let mut pending = state.transactions.pending.lock();
    for (&half_offset, p) in pending.iter_mut() {
        if p.deciding || p.next_check > now {
            continue;
        }
        p.next_check = now + timings.interval;
        if p.checks >= timings.max {
            due.push(Due::RollBack {
                half_offset,
                transaction_id: p.info.transaction_id.clone(),
                checks: p.checks,
            });
        } else {
            p.checks += 1;
            due.push(Due::Check {
                half_offset,
                attempt: p.checks,
            });
        }
    }
    due
}

/// Sends one `CheckTransaction` to a live member of the half's producer group, if there is one.
fn send_check(state: &BrokerState, half_offset: u64, attempt: u32, request_ids: &AtomicU32) {
    let (bytes, info) = match read_half(state, half_offset) {
        Ok(half) => half,
        Err(e) => {
            tracing::error!(half_offset, error = %e, "cannot read a pending half message");
            return;
        }
    };
    let Some((connection, client_id)) = state.transactions.member(&info.producer_group, attempt)
    else {
        tracing::info!(half_offset, group = %info.producer_group, attempt,
            "no live producer of the group to check the transaction with");
        return;
    };
    let message = match Record::parse(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|r| half::restore(&r, &info).map_err(|e| e.to_string()))
    {
        Ok(message) => message,
        Err(e) => {
            tracing::error!(half_offset, error = %e, "cannot restore a pending half message");
            return;
        }
    };
    let mut header = Header::request(
        ApiKey::CheckTransaction,
        request_ids.fetch_add(1, Ordering::Relaxed),
    );
    header.flags |= flags::ONEWAY;
    let frame = OutFrame::new(
        header,
        &pb::CheckTransactionRequest {
            producer_group: info.producer_group.clone(),
            transaction_id: info.transaction_id.clone(),
            half_offset,
            topic: info.topic.clone(),
            queue_id: info.queue_id,
        },
        Bytes::from(message),
    );
    let sent = state.outboxes.try_send(connection, frame);
    tracing::info!(half_offset, transaction_id = %info.transaction_id, %client_id, attempt, sent,
        "transaction checked back");
}

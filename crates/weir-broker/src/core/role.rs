//! The role signal: whether this node leads its broker group.
//!
//! Work only a leader may do — delayed delivery, transaction check-backs, retention, group
//! assignment — runs while the signal says "leader" and stops when it changes ([`while_leader`]).
//! A standalone broker is always its group's leader; the cluster work drives the signal from
//! Raft's leadership.

use std::future::Future;

use tokio::sync::watch;

/// Sets the role (kept by whoever decides leadership).
#[derive(Debug, Clone)]
pub(crate) struct RoleSetter(watch::Sender<bool>);

/// Reads the role; clone one for each task that depends on it.
#[derive(Debug, Clone)]
pub(crate) struct Role(watch::Receiver<bool>);

impl Role {
    /// A role that starts as leader (standalone) or follower.
    pub fn new(leader: bool) -> (RoleSetter, Role) {
        let (tx, rx) = watch::channel(leader);
        (RoleSetter(tx), Role(rx))
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }
}

impl RoleSetter {
    /// Changes the role; tasks gated by [`while_leader`] start or stop.
    pub fn set_leader(&self, leader: bool) {
        self.0.send_if_modified(|now| {
            let changed = *now != leader;
            *now = leader;
            changed
        });
    }
}

/// Runs `task` each time this node becomes leader and stops it when leadership is lost;
/// returns once `shutdown` says so and the task has ended. `task` gets a stop signal (a
/// receiver that turns `true`) and must end soon after it does, so it can finish cleanly
/// (persist its progress, join its threads) in both cases.
pub(crate) async fn while_leader<F, Fut>(
    mut role: Role,
    mut shutdown: watch::Receiver<bool>,
    mut task: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            led = role.0.wait_for(|leader| *leader) => if led.is_err() { return },
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut run = std::pin::pin!(task(stop_rx));
        let stopping = tokio::select! {
            () = &mut run => false,
            _ = role.0.wait_for(|leader| !*leader) => {
                tracing::info!("leadership lost: stopping leader-only work");
                true
            }
            _ = crate::shutdown::requested(&mut shutdown) => true,
        };
        if stopping {
            let _ = stop_tx.send(true);
            run.await;
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn leader_only_work_starts_and_stops_with_the_role() {
        let (setter, role) = Role::new(false);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let gate = tokio::spawn(while_leader(role.clone(), shutdown, move |mut stop| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { crate::shutdown::requested(&mut stop).await }
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 0, "a follower runs nothing");
        setter.set_leader(true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        setter.set_leader(false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        setter.set_leader(true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "started again on the next term"
        );
        assert!(role.is_leader());
        setter.set_leader(false);
        let _ = shutdown_tx.send(true);
        tokio::time::timeout(Duration::from_secs(1), gate)
            .await
            .expect("the gate returns at shutdown")
            .unwrap();
    }
}

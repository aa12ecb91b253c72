//! The state machine of a broker group: applying an entry makes its batch readable here.
//!
//! The commit log already holds every entry's bytes (written by the log storage); what
//! applying adds is the dispatch limit: the store dispatches to consume queues only what
//! is committed, on every replica, so long polls, lookups and every feature that reads
//! queues never see a write that may be undone. The proposer of a batch (the leader) gets
//! back where it went. A `State` entry (topics, consumer offsets) is handed to the broker's
//! `StateApplier`; after each applied run the last entry is recorded in `raft/applied`, from
//! which a restarted replica replays.
//!
//! A snapshot (see `snapshot.rs`) is built only when retention wants segments whose entries
//! the Raft log still holds (`compaction.rs`), and sent to a replica that needs purged
//! entries; installing one starts the process again on it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder, StoredMembership};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::TypeConfig;
use super::command::{Applied, Command};
use super::log_store::LogShared;
use super::snapshot::{self, LocalSnapshot};
use crate::core::state_change::{Origin, StateApplier};

pub(crate) use super::snapshot::SnapshotData;

/// How long an accepted snapshot waits before the process starts again on it: long enough for
/// the answer to reach the leader.
const RESTART_DELAY: Duration = Duration::from_millis(300);

/// The snapshot built last here.
type Current = Arc<Mutex<Option<(SnapshotMetaOf<TypeConfig>, Arc<LocalSnapshot>)>>>;

/// The state machine handle openraft drives.
#[derive(Debug)]
pub(crate) struct StateMachine {
    shared: Arc<LogShared>,
    applied: Option<LogIdOf<TypeConfig>>,
    /// Applies broker state changes to this replica's tables.
    applier: Arc<dyn StateApplier>,
    /// The snapshot built last.
    current: Current,
    /// Asks the process to start again (on an accepted snapshot).
    restart: watch::Sender<bool>,
}

impl StateMachine {
    /// A state machine that has applied up to `applied` (the store was opened with its
    /// dispatch limit there).
    pub fn new(
        shared: Arc<LogShared>,
        applied: Option<LogIdOf<TypeConfig>>,
        applier: Arc<dyn StateApplier>,
        restart: watch::Sender<bool>,
    ) -> StateMachine {
        StateMachine {
            shared,
            applied,
            applier,
            current: Current::default(),
            restart,
        }
    }

    fn membership(&self) -> io::Result<StoredMembershipOf<TypeConfig>> {
        let Some(applied) = self.applied else {
            return Ok(StoredMembership::default());
        };
        let log = self.shared.index.lock();
        let (index, term, bytes) = match log.membership_at_or_before(applied.index) {
            Some((index, slot)) => (index, slot.term, slot.extra.clone().unwrap_or_default()),
            // Purged with its entry: the purge kept it.
            None => match log.purged().and_then(|p| p.membership.clone()) {
                Some((index, term, bytes)) => (index, term, bytes.into()),
                None => return Ok(StoredMembership::default()),
            },
        };
        let membership = postcard::from_bytes(&bytes).map_err(io::Error::other)?;
        Ok(StoredMembership::new(
            Some(LogId::new_term_index(term, index)),
            membership,
        ))
    }

    /// What a snapshot at the entry applied now is made of.
    fn made_now(&self) -> io::Result<Option<(SnapshotMetaOf<TypeConfig>, LocalSnapshot)>> {
        let Some(applied) = self.applied else {
            return Ok(None);
        };
        let end = self.shared.end_of(applied.index).ok_or_else(|| {
            io::Error::other(format!("applied entry {} is not held", applied.index))
        })?;
        let data_dir = self
            .shared
            .dir
            .parent()
            .ok_or_else(|| io::Error::other("the raft directory has no parent"))?;
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: Some(applied),
            last_membership: self.membership()?,
        };
        let local = LocalSnapshot {
            store: Arc::clone(&self.shared.store),
            end,
            state: snapshot::read_state(data_dir)?,
        };
        Ok(Some((meta, local)))
    }
}

/// Builds a snapshot at the entry applied when it was made (see `snapshot.rs`).
#[derive(Debug)]
pub(crate) struct Builder {
    /// What it is built from, read between two applies; `None` when nothing is applied.
    made: io::Result<Option<(SnapshotMetaOf<TypeConfig>, LocalSnapshot)>>,
    current: Current,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let made = std::mem::replace(&mut self.made, Ok(None))?;
        let Some((meta, local)) = made else {
            return Err(io::Error::other(
                "nothing is applied yet: no snapshot to build",
            ));
        };
        let local = Arc::new(local);
        tracing::info!(
            at = ?meta.last_log_id,
            commit_log_end = local.end,
            "raft snapshot built"
        );
        *self.current.lock() = Some((meta.clone(), Arc::clone(&local)));
        Ok(openraft::storage::Snapshot {
            meta,
            snapshot: SnapshotData::Local(local),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.applied, self.membership()?))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + Send,
    {
        self.shared.check_writable()?;
        let mut answers = Vec::new();
        let mut last = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            last = Some(entry.log_id);
            if let EntryPayload::Normal(Command::State(change)) = &entry.payload {
                // A responder waits here only for what this replica proposed as leader.
                let origin = if responder.is_some() {
                    Origin::Here
                } else {
                    Origin::Elsewhere
                };
                self.applier.apply(change, origin);
            }
            let outcome = self.shared.outcomes.lock().remove(&index);
            if let Some(responder) = responder {
                let applied = match (&entry.payload, outcome) {
                    (EntryPayload::Normal(_), Some(Ok(written))) => Applied::Written(written),
                    (EntryPayload::Normal(_), Some(Err(e))) => Applied::Refused {
                        code: e.code as u16,
                        message: e.message,
                    },
                    _ => Applied::Nothing,
                };
                answers.push((responder, applied));
            }
        }
        let Some(last) = last else { return Ok(()) };
        let end = self
            .shared
            .index
            .lock()
            .get(last.index)
            .map(|slot| slot.end)
            .ok_or_else(|| io::Error::other(format!("applied entry {} is not held", last.index)))?;
        let store = &self.shared.store;
        store.set_dispatch_limit(end);
        store.wait_dispatched(end).await.map_err(io::Error::other)?;
        self.applied = Some(last);
        self.shared.write_applied(&self.applied)?;
        for (responder, applied) in answers {
            responder.send(applied);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            made: self.made_now(),
            current: Arc::clone(&self.current),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let SnapshotData::Staged(staged) = snapshot else {
            return Err(io::Error::other(
                "only a snapshot received from the leader is installed",
            ));
        };
        self.shared.begin_install();
        snapshot::accept(&self.shared.dir, &staged)?;
        tracing::warn!(
            at = ?meta.last_log_id,
            "snapshot from the leader accepted: starting again on it"
        );
        self.applied = meta.last_log_id;
        let restart = self.restart.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RESTART_DELAY).await;
            restart.send_replace(true);
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        Ok(self
            .current
            .lock()
            .as_ref()
            .map(|(meta, local)| openraft::storage::Snapshot {
                meta: meta.clone(),
                snapshot: SnapshotData::Local(Arc::clone(local)),
            }))
    }
}

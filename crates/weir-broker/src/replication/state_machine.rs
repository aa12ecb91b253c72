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
//! No snapshot is ever built or sent: the state is the commit log and the tables the applier
//! keeps on disk, and Raft never purges the log (see `docs/clusters.md`).

use std::io;
use std::sync::Arc;

use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder, StoredMembership};

use super::TypeConfig;
use super::command::{Applied, Command};
use super::log_store::LogShared;
use crate::core::state_change::StateApplier;

/// Snapshot data: never built (the commit log is the state).
pub(crate) type SnapshotData = std::io::Cursor<Vec<u8>>;

/// The state machine handle openraft drives.
#[derive(Debug)]
pub(crate) struct StateMachine {
    shared: Arc<LogShared>,
    applied: Option<LogIdOf<TypeConfig>>,
    /// Applies broker state changes to this replica's tables.
    applier: Arc<dyn StateApplier>,
}

impl StateMachine {
    /// A state machine that has applied up to `applied` (the store was opened with its
    /// dispatch limit there).
    pub fn new(
        shared: Arc<LogShared>,
        applied: Option<LogIdOf<TypeConfig>>,
        applier: Arc<dyn StateApplier>,
    ) -> StateMachine {
        StateMachine {
            shared,
            applied,
            applier,
        }
    }

    fn membership(&self) -> io::Result<StoredMembershipOf<TypeConfig>> {
        let Some(applied) = self.applied else {
            return Ok(StoredMembership::default());
        };
        let log = self.shared.index.lock();
        match log.membership_at_or_before(applied.index) {
            Some((index, slot)) => {
                let bytes = slot.extra.clone().unwrap_or_default();
                let membership = postcard::from_bytes(&bytes).map_err(io::Error::other)?;
                Ok(StoredMembership::new(
                    Some(LogId::new_term_index(slot.term, index)),
                    membership,
                ))
            }
            None => Ok(StoredMembership::default()),
        }
    }
}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "broker groups replicate the commit log entry by entry; snapshots are not used",
    )
}

/// Never asked to build (snapshots are off).
#[derive(Debug)]
pub(crate) struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        Err(unsupported())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = NoSnapshots;

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
        let mut answers = Vec::new();
        let mut last = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            last = Some(entry.log_id);
            if let EntryPayload::Normal(Command::State(change)) = &entry.payload {
                self.applier.apply(change);
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
        NoSnapshots
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf<TypeConfig>,
        _snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        Err(unsupported())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        Ok(None)
    }
}

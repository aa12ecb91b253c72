//! The Raft log storage of a broker group: the commit log itself, plus the log index
//! (`log_index.rs`), the vote and the commit point in `raft/`.
//!
//! On the leader an `Append` entry is validated, stamped (leader epoch = the entry's term) and
//! written to the commit log here, in Raft's order; a follower writes the leader's stamped
//! bytes as they are ([`Store::append_replicated`]), so every replica holds the same bytes at
//! the same offsets and writes each message once. Entries are read back from the commit log
//! for replication. In `sync` flush mode an append is reported flushed to Raft once the commit
//! log is fsynced up to it (the store's group commit: many appends per fsync) and the index
//! after it; in `async` mode at once (acknowledged = in the page cache of a majority).

use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, LogId, RaftLogReader};
use parking_lot::Mutex;
use weir_store::{FlushMode, Store, StoreError};

use super::TypeConfig;
use super::command::{Command, Written};
use super::log_index::{Kind, LogIndex};
use crate::atomic_file;
use crate::error::RequestError;

/// What the leader's write of a batch gave, kept until the entry is applied.
pub(crate) type Outcome = Result<Written, RequestError>;

/// What the log storage, its readers and the state machine share.
#[derive(Debug)]
pub(crate) struct LogShared {
    pub store: Arc<Store>,
    pub index: Mutex<LogIndex>,
    /// Outcomes of batches written here as leader, by Raft index, until applied.
    pub outcomes: Mutex<HashMap<u64, Outcome>>,
    /// Set once a snapshot from the leader is accepted: the process starts again on it, and
    /// nothing may be written to this log meanwhile.
    installing: AtomicBool,
    /// `data_dir/raft`.
    pub dir: PathBuf,
}

impl LogShared {
    /// From now on this log takes no writes: a snapshot from the leader replaces it.
    pub fn begin_install(&self) {
        self.installing.store(true, Ordering::Release);
    }

    /// Whether a snapshot from the leader is being installed.
    pub fn is_installing(&self) -> bool {
        self.installing.load(Ordering::Acquire)
    }

    /// Fails once a snapshot is being installed (see `snapshot.rs`).
    pub fn check_writable(&self) -> io::Result<()> {
        if self.is_installing() {
            return Err(io::Error::other(
                "a snapshot from the leader is being installed: this replica starts again",
            ));
        }
        Ok(())
    }

    /// Opens the index under `data_dir/raft` and makes it and the commit log agree: the index
    /// drops records the commit log lost, the commit log drops bytes no record covers.
    pub fn open(store: Arc<Store>, data_dir: &Path) -> io::Result<Arc<LogShared>> {
        let dir = data_dir.join("raft");
        let index = LogIndex::open(&dir, store.written())?;
        let end = index.end();
        if store.written() > end {
            tracing::info!(
                from = end,
                to = store.written(),
                "cutting commit-log bytes no raft entry covers"
            );
            store.truncate_from(end).map_err(io::Error::other)?;
        }
        Ok(Arc::new(LogShared {
            store,
            index: Mutex::new(index),
            outcomes: Mutex::new(HashMap::new()),
            installing: AtomicBool::new(false),
            dir,
        }))
    }

    /// The commit point saved last (a lower bound of the real one), if this log still holds
    /// that entry.
    pub fn read_committed_held(&self) -> Option<LogIdOf<TypeConfig>> {
        let committed = read_committed_file(&self.dir)?;
        held(&self.index.lock(), committed)
    }

    fn write_committed(&self, committed: &Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        write_committed_log_id(&self.dir, committed)
    }

    /// Records that everything up to `applied` is applied here (its state changes are on
    /// disk), so a restart replays only what follows.
    pub fn write_applied(&self, applied: &Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
        write_applied_log_id(&self.dir, applied)
    }

    /// The last entry applied before the process stopped, if this log still holds it.
    pub fn read_applied_held(&self) -> Option<LogIdOf<TypeConfig>> {
        let applied = read_applied_file(&self.dir)?;
        held(&self.index.lock(), applied)
    }

    /// The commit-log offset just past entry `index`: held, or the last one purged.
    pub fn end_of(&self, index: u64) -> Option<u64> {
        let log = self.index.lock();
        match log.get(index) {
            Some(slot) => Some(slot.end),
            None => log.purged().filter(|p| p.index == index).map(|p| p.end),
        }
    }
}

/// `id`, if `log` holds that entry (or purged it last).
pub(crate) fn held(log: &LogIndex, id: LogIdOf<TypeConfig>) -> Option<LogIdOf<TypeConfig>> {
    let term = id.leader_id.term;
    let here = log
        .get(id.index)
        .map(|slot| slot.term)
        .or_else(|| log.purged().filter(|p| p.index == id.index).map(|p| p.term));
    (here == Some(term)).then_some(id)
}

/// The commit point in `dir/committed`, if it reads back whole.
pub(crate) fn read_committed_file(dir: &Path) -> Option<LogIdOf<TypeConfig>> {
    read_log_id(&dir.join("committed"))
}

/// The last entry applied, in `dir/applied`, if it reads back whole.
pub(crate) fn read_applied_file(dir: &Path) -> Option<LogIdOf<TypeConfig>> {
    read_log_id(&dir.join("applied"))
}

/// Records `id` as the last entry applied, in `dir/applied`.
pub(crate) fn write_applied_log_id(dir: &Path, id: &Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
    write_log_id(&dir.join("applied"), id)
}

/// Records `id` as the commit point, in `dir/committed`.
pub(crate) fn write_committed_log_id(
    dir: &Path,
    id: &Option<LogIdOf<TypeConfig>>,
) -> io::Result<()> {
    write_log_id(&dir.join("committed"), id)
}

/// Writes a log id as `crc | postcard` (no fsync: an older value read back is still true).
pub(crate) fn write_log_id(path: &Path, id: &Option<LogIdOf<TypeConfig>>) -> io::Result<()> {
    let body = postcard::to_stdvec(id).map_err(io::Error::other)?;
    let mut bytes = crc32c::crc32c(&body).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    std::fs::write(path, bytes)
}

fn read_log_id(path: &Path) -> Option<LogIdOf<TypeConfig>> {
    let bytes = std::fs::read(path).ok()?;
    let (crc, body) = bytes.split_at_checked(4)?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    postcard::from_bytes::<Option<LogIdOf<TypeConfig>>>(body)
        .ok()
        .flatten()
}

/// The log storage handle openraft drives (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    shared: Arc<LogShared>,
}

impl LogStore {
    /// Storage over `shared`.
    pub fn new(shared: Arc<LogShared>) -> LogStore {
        LogStore { shared }
    }

    fn vote_path(&self) -> PathBuf {
        self.shared.dir.join("vote")
    }

    /// Cuts commit-log bytes past the index's end (written as leader, never put in the
    /// Raft log, or left by a leader that lost its term), so a follower's write lands where
    /// its leader's did.
    fn cut_orphans(&self, end: u64) -> io::Result<()> {
        if self.shared.store.written() > end {
            self.shared
                .store
                .truncate_from(end)
                .map_err(io::Error::other)?;
        }
        Ok(())
    }
}

fn io_err(e: StoreError) -> io::Error {
    io::Error::other(e)
}

fn encode<T: serde::Serialize>(value: &T) -> io::Result<Bytes> {
    postcard::to_stdvec(value)
        .map(Bytes::from)
        .map_err(io::Error::other)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let log = self.shared.index.lock();
        let first = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => log.first_index(),
        };
        let last = match range.end_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(i) => i.checked_sub(1),
            Bound::Unbounded => log.last().map(|(i, _)| i),
        };
        let mut out = Vec::new();
        let Some(last) = last else { return Ok(out) };
        for index in first.max(log.first_index())..=last {
            let Some(slot) = log.get(index) else { break };
            let payload = match slot.kind {
                Kind::Batch => {
                    let bytes = self
                        .shared
                        .store
                        .read_entries(slot.start, slot.end)
                        .map_err(io_err)?;
                    EntryPayload::Normal(Command::Entries {
                        bytes: bytes.freeze(),
                    })
                }
                Kind::Blank => EntryPayload::Blank,
                Kind::Membership => {
                    let bytes = slot.extra.clone().unwrap_or_default();
                    EntryPayload::Membership(
                        postcard::from_bytes(&bytes).map_err(io::Error::other)?,
                    )
                }
                Kind::Refused | Kind::State => {
                    let bytes = slot.extra.clone().unwrap_or_default();
                    EntryPayload::Normal(postcard::from_bytes(&bytes).map_err(io::Error::other)?)
                }
            };
            out.push(openraft::Entry {
                log_id: LogId::new_term_index(slot.term, index),
                payload,
            });
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        match atomic_file::read_if_exists(&self.vote_path())? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.shared.index.lock();
        let last_purged = log.purged().map(|p| LogId::new_term_index(p.term, p.index));
        let last = log
            .last()
            .map(|(i, t)| LogId::new_term_index(t, i))
            .or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let bytes = postcard::to_stdvec(vote).map_err(io::Error::other)?;
        atomic_file::write_atomic(&self.vote_path(), &bytes)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        self.shared.write_committed(&committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self.shared.read_committed_held())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.shared.check_writable()?;
        let store = &self.shared.store;
        let (end, file) = {
            let mut log = self.shared.index.lock();
            for entry in entries {
                let index = entry.log_id.index;
                let term = entry.log_id.leader_id.term;
                let tail = log.end();
                let (kind, start, end, extra) = match entry.payload {
                    EntryPayload::Blank => (Kind::Blank, tail, tail, None),
                    EntryPayload::Membership(m) => {
                        (Kind::Membership, tail, tail, Some(encode(&m)?))
                    }
                    EntryPayload::Normal(Command::Append {
                        topic,
                        queue_id,
                        batch,
                    }) => {
                        self.cut_orphans(tail)?;
                        let mut bytes = BytesMut::from(batch);
                        let epoch = i32::try_from(term).unwrap_or(i32::MAX);
                        match store.append_as_leader(&topic, queue_id, &mut bytes, epoch) {
                            Ok(r) => {
                                self.shared.outcomes.lock().insert(index, Ok(r.into()));
                                (Kind::Batch, r.commit_log_offset, r.end_offset, None)
                            }
                            Err(e) if is_io(&e) => return Err(io_err(e)),
                            Err(e) => {
                                let err = RequestError::from(e);
                                let refused = Command::Refused {
                                    code: err.code as u16,
                                    message: err.message.clone(),
                                };
                                self.shared.outcomes.lock().insert(index, Err(err));
                                (Kind::Refused, tail, tail, Some(encode(&refused)?))
                            }
                        }
                    }
                    EntryPayload::Normal(Command::Entries { bytes }) => {
                        self.cut_orphans(tail)?;
                        let mut bytes = BytesMut::from(bytes);
                        let r = store.append_replicated(&mut bytes).map_err(io_err)?;
                        (Kind::Batch, r.commit_log_offset, r.end_offset, None)
                    }
                    EntryPayload::Normal(state @ Command::State(_)) => {
                        (Kind::State, tail, tail, Some(encode(&state)?))
                    }
                    EntryPayload::Normal(refused @ Command::Refused { .. }) => {
                        (Kind::Refused, tail, tail, Some(encode(&refused)?))
                    }
                };
                log.push(index, term, kind, start, end, extra)?;
            }
            log.write_pending()?;
            (log.end(), log.file()?)
        };
        if store.config().flush == FlushMode::Sync {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let result = async {
                    store.wait_durable(end).await.map_err(io_err)?;
                    tokio::task::spawn_blocking(move || file.sync_data())
                        .await
                        .map_err(io::Error::other)?
                }
                .await;
                callback.io_completed(result);
            });
        } else {
            callback.io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        self.shared.check_writable()?;
        let last = last_log_id.map(|id| id.index);
        let end = {
            let mut log = self.shared.index.lock();
            log.truncate_after(last)?;
            log.end()
        };
        self.shared
            .outcomes
            .lock()
            .retain(|i, _| last.is_some_and(|l| *i <= l));
        tracing::info!(after = ?last, commit_log_end = end, "raft log truncated");
        self.cut_orphans(end)
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        if self.shared.is_installing() {
            // The snapshot being installed replaces this log whole.
            return Ok(());
        }
        let end = self
            .shared
            .index
            .lock()
            .purge(log_id.index, log_id.leader_id.term)?;
        // Retention may now delete the segments that held only purged entries.
        self.shared.store.set_retention_floor(end);
        tracing::info!(upto = log_id.index, commit_log = end, "raft log purged");
        Ok(())
    }
}

/// Whether a store error is the disk's (the log cannot go on) rather than the batch's.
fn is_io(e: &StoreError) -> bool {
    matches!(e, StoreError::Io(_) | StoreError::Closed)
}

//! Snapshots of a broker group: how a replica that needs entries its leader has purged (a
//! replica down for longer than the retention, or one added with an empty disk after
//! retention ran) is brought up to date.
//!
//! A broker group's state is its commit log plus the tables the state machine keeps in
//! `config/` (topics, consumer offsets, delay progress, producer ids, ...), all of them on
//! disk once an entry is applied. A snapshot at applied entry `A` is therefore:
//!
//! * its meta: `A` and the membership at `A`;
//! * the files of `config/` as they were when `A` was the last entry applied (read when the
//!   snapshot is built, between two applies);
//! * the commit log from the leader's oldest segment up to `end(A)`, read from the segments
//!   when it is sent (those bytes never change; retention may only delete older segments).
//!
//! ```text
//! sending (one connection of its own, see network.rs):
//!   Request { rpc: Snapshot(Head { vote, meta, end, state, tombstones }) }
//!   Piece { base, capacity, pos, bytes } ...      1 MiB each, every segment oldest first,
//!                                                 up to `end`
//!   Piece { capacity: 0 }                         the end
//!   ← Response::Snapshot(Result<SnapshotResponse, String>)
//!
//! receiving, in the replica's data directory:
//!   raft/snapshot.recv/          staged while it arrives (replaced by each new transfer)
//!     commitlog/<base>            the leader's segments (see weir_store::StagedLog)
//!     deleted_topics              the leader's tombstones
//!     state/<file>                the leader's config/ files
//!     meta                        postcard InstallMeta { meta, end }
//!   raft/install/                 the same, once Raft has accepted it
//! ```
//!
//! Installing replaces the whole store, which every part of a running broker holds: so the
//! replica moves the accepted snapshot to `raft/install`, refuses Raft writes from then on,
//! and asks the process to start again (`Broker::restart_requested`). Starting, before the
//! store is opened, [`finish_install`] puts the snapshot's log and tables in place and
//! records `A` as purged, applied and committed; the store then opens the new log as after a
//! crash (verifying it and rebuilding the consume queues from it), and the leader continues
//! with the entries after `A`. Each step of [`finish_install`] may be redone after a crash;
//! `raft/install` goes last.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::alias::{LogIdOf, SnapshotMetaOf, VoteOf};
use serde::{Deserialize, Serialize};
use weir_store::{StagedLog, Store};

use super::TypeConfig;
use super::log_index::Purged;
use super::log_store::{write_applied_log_id, write_committed_log_id};
use crate::atomic_file;

/// Bytes of commit log per piece sent.
pub(crate) const PIECE_LEN: u64 = 1 << 20;

/// What a snapshot carries, on either side.
#[derive(Debug)]
pub(crate) enum SnapshotData {
    /// Built here, to send: the state at its entry and where its log ends.
    Local(Arc<LocalSnapshot>),
    /// Received from the leader, staged in this directory.
    Staged(PathBuf),
}

/// A snapshot built on this replica.
#[derive(Debug)]
pub(crate) struct LocalSnapshot {
    /// The store its log is read from when sent.
    pub store: Arc<Store>,
    /// The commit-log offset just past its last entry.
    pub end: u64,
    /// The files of `config/` at its entry: (name, contents).
    pub state: Vec<(String, Vec<u8>)>,
}

/// The first frame of a snapshot transfer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Head {
    /// The sender's vote.
    pub vote: VoteOf<TypeConfig>,
    /// The snapshot's entry and membership.
    pub meta: SnapshotMetaOf<TypeConfig>,
    /// The commit-log offset just past its last entry.
    pub end: u64,
    /// The files of `config/`.
    pub state: Vec<(String, Vec<u8>)>,
    /// The leader's tombstones of deleted topics.
    pub tombstones: Vec<u8>,
}

/// A piece of one segment; `capacity == 0` ends the transfer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Piece {
    /// The segment's base offset.
    pub base: u64,
    /// The segment's capacity.
    pub capacity: u64,
    /// Where in the segment the bytes go.
    pub pos: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What a staged snapshot's `meta` file holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InstallMeta {
    /// The snapshot's entry and membership.
    pub meta: SnapshotMetaOf<TypeConfig>,
    /// The commit-log offset just past its last entry.
    pub end: u64,
}

/// The files of `data_dir/config` (not the temporary ones of a write in progress).
pub(crate) fn read_state(data_dir: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let dir = data_dir.join("config");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".tmp") || !entry.file_type()?.is_file() {
            continue;
        }
        out.push((name.clone(), std::fs::read(dir.join(&name))?));
    }
    out.sort();
    Ok(out)
}

/// A snapshot arriving from the leader.
#[derive(Debug)]
pub(crate) struct Receiving {
    dir: PathBuf,
    log: StagedLog,
}

impl Receiving {
    /// Starts staging in `raft_dir/snapshot.recv`.
    pub fn start(raft_dir: &Path) -> io::Result<Receiving> {
        let dir = raft_dir.join("snapshot.recv");
        Ok(Receiving {
            log: StagedLog::create(&dir)?,
            dir,
        })
    }

    /// Writes one piece.
    pub fn piece(&mut self, piece: &Piece) -> io::Result<()> {
        self.log
            .write(piece.base, piece.capacity, piece.pos, &piece.bytes)
    }

    /// Writes the state and the meta, makes it all durable; returns the staged directory.
    pub fn finish(self, head: &Head) -> io::Result<PathBuf> {
        self.log.write_tombstones(&head.tombstones)?;
        let state = self.dir.join("state");
        std::fs::create_dir_all(&state)?;
        for (name, bytes) in &head.state {
            if name.contains('/') || name.starts_with('.') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot state file name {name:?}"),
                ));
            }
            atomic_file::write_atomic(&state.join(name), bytes)?;
        }
        let meta = InstallMeta {
            meta: head.meta.clone(),
            end: head.end,
        };
        let bytes = postcard::to_stdvec(&meta).map_err(io::Error::other)?;
        atomic_file::write_atomic(&self.dir.join("meta"), &bytes)?;
        self.log.finish()?;
        Ok(self.dir)
    }
}

/// Moves an accepted snapshot from `staged` to `raft_dir/install`, where the next start
/// finds it.
pub(crate) fn accept(raft_dir: &Path, staged: &Path) -> io::Result<()> {
    let install = raft_dir.join("install");
    if install.exists() {
        std::fs::remove_dir_all(&install)?;
    }
    std::fs::rename(staged, &install)?;
    std::fs::File::open(raft_dir)?.sync_all()
}

/// Installs the snapshot accepted before the last stop, if there is one (see the module
/// docs); returns whether there was.
pub(crate) fn finish_install(data_dir: &Path) -> io::Result<bool> {
    let raft_dir = data_dir.join("raft");
    let install = raft_dir.join("install");
    let Some(meta) = atomic_file::read_if_exists(&install.join("meta"))? else {
        return Ok(false);
    };
    let meta: InstallMeta = postcard::from_bytes(&meta).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", install.join("meta").display()),
        )
    })?;
    let Some(last) = meta.meta.last_log_id else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a snapshot without a last entry",
        ));
    };
    tracing::info!(
        index = last.index,
        term = last.leader_id.term,
        commit_log_end = meta.end,
        "installing the snapshot received from the leader"
    );
    weir_store::replace_log(data_dir, &install)?;
    let config = data_dir.join("config");
    std::fs::create_dir_all(&config)?;
    let keep: Vec<String> = std::fs::read_dir(install.join("state"))?
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
        .collect();
    for entry in std::fs::read_dir(&config)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_file() && !keep.iter().any(|k| k.as_str() == name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    for name in &keep {
        let bytes = std::fs::read(install.join("state").join(name))?;
        atomic_file::write_atomic(&config.join(name), &bytes)?;
    }
    let membership = meta.meta.last_membership.log_id().as_ref().map(|id| {
        postcard::to_stdvec(meta.meta.last_membership.membership())
            .map(|bytes| (id.index, id.leader_id.term, bytes))
    });
    let membership = membership.transpose().map_err(io::Error::other)?;
    let purged = Purged {
        index: last.index,
        term: last.leader_id.term,
        end: meta.end,
        membership,
    };
    purged.write(&raft_dir)?;
    match std::fs::remove_file(raft_dir.join("log.index")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let id: Option<LogIdOf<TypeConfig>> = Some(last);
    write_applied_log_id(&raft_dir, &id)?;
    write_committed_log_id(&raft_dir, &id)?;
    std::fs::File::open(&raft_dir)?.sync_all()?;
    std::fs::remove_dir_all(&install)?;
    std::fs::File::open(&raft_dir)?.sync_all()?;
    Ok(true)
}

//! Copying a whole log to another replica of a broker group, for a replica that needs entries
//! its leader's retention has deleted (the Raft snapshot of a broker group, see
//! `weir-broker/src/replication/snapshot.rs`).
//!
//! The leader sends its segments as they are on disk, from the oldest to the commit point;
//! the receiver writes them into a staging directory with [`StagedLog`], and
//! [`replace_log`] (before the store is opened) puts them in place of the receiver's own
//! log. The store then opens them as after a crash with no checkpoint: it verifies the log and
//! rebuilds the consume queues and the key index from it.
//!
//! ```text
//! staging dir/
//!   commitlog/<20-digit base>   segment files, same names and capacities as the leader's;
//!                               bytes past the commit point read as zeros
//!   deleted_topics              the leader's tombstones (see `tombstones.rs`), if any
//! ```
//!
//! Retention and Raft meet at the retention floor: a replica's retention deletes no segment
//! ending past it, and the replica raises it once its Raft log has let go of the entries in
//! that segment ([`Store::retention_wanted`] says how far retention wants to go).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::segment::{self, file_name, sync_dir};
use crate::store::Store;
use crate::{StoreError, retention};

/// Where each segment holding `[start, end)` lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpan {
    /// The oldest offset still on disk.
    pub start: u64,
    /// Where the copy ends (the commit point).
    pub end: u64,
    /// (base, capacity) of each segment with bytes below `end`, oldest first.
    pub segments: Vec<(u64, u64)>,
    /// The tombstones of deleted topics (`deleted_topics`), empty when there are none.
    pub tombstones: Vec<u8>,
}

impl Store {
    /// The segments to copy for a replica that continues this log after `end`.
    pub fn log_span(&self, end: u64) -> Result<LogSpan, StoreError> {
        let inner = &self.inner;
        let segments: Vec<(u64, u64)> = inner
            .log
            .segments()
            .iter()
            .filter(|s| s.base < end)
            .map(|s| (s.base, s.capacity))
            .collect();
        let tombstones = match std::fs::read(inner.config.data_dir.join("deleted_topics")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(LogSpan {
            start: segments.first().map_or(end, |s| s.0),
            end,
            segments,
            tombstones,
        })
    }

    /// A copy of `len` bytes at commit-log `offset`, all in one segment. Fails with
    /// [`StoreError::InvalidPosition`] once retention has deleted that segment.
    pub fn read_log_bytes(&self, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        let seg = self
            .inner
            .log
            .segment_for(offset)
            .ok_or(StoreError::InvalidPosition(offset))?;
        seg.bytes(offset - seg.base, len)
            .map(Bytes::copy_from_slice)
            .ok_or(StoreError::InvalidPosition(offset))
    }

    /// Lets retention delete segments ending at or before `offset` (it only rises).
    pub fn set_retention_floor(&self, offset: u64) {
        self.inner
            .retention_floor
            .fetch_max(offset, Ordering::AcqRel);
    }

    /// Where the log would start if retention deleted every segment it wants gone now,
    /// ignoring the floor; `None` when it wants none.
    pub fn retention_wanted(&self) -> Result<Option<u64>, StoreError> {
        retention::wanted_end(&self.inner)
    }
}

/// A log being received into a staging directory.
#[derive(Debug)]
pub struct StagedLog {
    dir: PathBuf,
    /// The segment being written: (base, file).
    current: Option<(u64, File)>,
}

impl StagedLog {
    /// Starts an empty staging directory at `dir` (anything there before is removed).
    pub fn create(dir: &Path) -> io::Result<StagedLog> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir.join("commitlog"))?;
        Ok(StagedLog {
            dir: dir.to_owned(),
            current: None,
        })
    }

    /// Writes `bytes` at position `pos` of the segment at `base` of capacity `capacity`.
    pub fn write(&mut self, base: u64, capacity: u64, pos: u64, bytes: &[u8]) -> io::Result<()> {
        if pos
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > capacity)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "segment {base}: {} bytes at {pos} overflow {capacity}",
                    bytes.len()
                ),
            ));
        }
        let file = match &self.current {
            Some((b, file)) if *b == base => file,
            _ => {
                if let Some((_, done)) = self.current.take() {
                    done.sync_data()?;
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.dir.join("commitlog").join(file_name(base)))?;
                file.set_len(capacity)?;
                &self.current.insert((base, file)).1
            }
        };
        file.write_all_at(bytes, pos)
    }

    /// Writes the leader's tombstones.
    pub fn write_tombstones(&self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        std::fs::write(self.dir.join("deleted_topics"), bytes)
    }

    /// Makes everything written durable.
    pub fn finish(mut self) -> io::Result<()> {
        if let Some((_, file)) = self.current.take() {
            file.sync_data()?;
        }
        if let Ok(f) = File::open(self.dir.join("deleted_topics")) {
            f.sync_all()?;
        }
        sync_dir(&self.dir.join("commitlog"))?;
        sync_dir(&self.dir)
    }
}

/// Replaces the log in `data_dir` with the one staged in `staged` (see [`StagedLog`]), before
/// the store is opened there: the old segments, consume queues, key index, topic sizes,
/// checkpoint, tombstones and damage list go. Safe to run again after a crash midway: each
/// step is done or redone, and `staged` is only removed (by the caller) once it has returned.
pub fn replace_log(data_dir: &Path, staged: &Path) -> io::Result<()> {
    for dir in ["consumequeue", "index", "topicbytes"] {
        remove_dir_if_exists(&data_dir.join(dir))?;
    }
    for file in ["checkpoint", "checkpoint.tmp", "damaged", "deleted_topics"] {
        remove_file_if_exists(&data_dir.join(file))?;
    }
    let log = data_dir.join("commitlog");
    let staged_log = staged.join("commitlog");
    if staged_log.exists() {
        remove_dir_if_exists(&log)?;
        std::fs::rename(&staged_log, &log)?;
    }
    let tombstones = staged.join("deleted_topics");
    if tombstones.exists() {
        std::fs::copy(&tombstones, data_dir.join("deleted_topics"))?;
        File::open(data_dir.join("deleted_topics"))?.sync_all()?;
    }
    segment::sync_dir(data_dir)
}

fn remove_dir_if_exists(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

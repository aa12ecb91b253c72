//! The Raft log's index over the commit log: for every Raft entry its term, its kind and the
//! commit-log range its bytes occupy (empty for entries that are not batches), in
//! `raft/log.index`.
//!
//! The commit log holds the batches themselves (each written once per replica); this file
//! holds what Raft needs besides: terms, and the few entries that are not batches (blank
//! entries of new leaders, membership changes, refused batches).
//!
//! ```text
//! record (appended in index order, one write per append call):
//! 0    4  len      u32 BE   bytes after the crc
//! 4    4  crc      u32 BE   crc32c of those bytes
//! 8    8  index    u64 BE   Raft log index
//! 16   8  term     u64 BE
//! 24   1  kind     u8       0 batch, 1 blank, 2 membership, 3 refused, 4 state
//! 25   8  start    u64 BE   commit-log range of a batch's entries (start = end otherwise)
//! 33   8  end      u64 BE
//! 41   ..  extra            postcard: the membership, the refused or state command
//! ```
//!
//! Recovery reads records until the first that is torn or fails its CRC, and drops every
//! record whose range ends past the recovered commit log (its bytes were lost with the
//! process); the caller then cuts the commit log back to the last record's end, so the two
//! agree again.
//!
//! Purging (once retention wants a segment's bytes gone, see `compaction.rs`) first records
//! the last purged entry in `raft/purged`, then forgets the entries up to it; records at or
//! below it that are still in `log.index` are skipped when it is read, and the file is
//! rewritten without them once they are half of it.
//!
//! ```text
//! raft/purged:  crc u32 BE | postcard Purged { index, term, end, membership }
//!   membership: the last membership entry at or before `index` (its index, term, payload),
//!               which the state machine still needs once the entry itself is gone
//! ```

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

const HEADER_LEN: usize = 8;
const FIXED_LEN: usize = 33;

/// What a Raft entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Stamped entries in the commit log.
    Batch = 0,
    /// A new leader's blank entry.
    Blank = 1,
    /// A membership change (`extra`: the membership, postcard).
    Membership = 2,
    /// A batch the leader refused (`extra`: the refused command, postcard).
    Refused = 3,
    /// A broker state change (`extra`: the command, postcard).
    State = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        [
            Kind::Batch,
            Kind::Blank,
            Kind::Membership,
            Kind::Refused,
            Kind::State,
        ]
        .into_iter()
        .find(|k| *k as u8 == v)
    }
}

/// One Raft entry's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Its term.
    pub term: u64,
    /// What it is.
    pub kind: Kind,
    /// Commit-log offset of its first byte (a batch), or the log's end when it was written.
    pub start: u64,
    /// Commit-log offset just past it.
    pub end: u64,
    /// The membership or the refused command, encoded.
    pub extra: Option<Bytes>,
    /// Where its record starts in the file.
    file_pos: u64,
}

/// The last purged entry: where the log held in `log.index` continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Purged {
    /// Its Raft index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The commit-log offset just past it.
    pub end: u64,
    /// The last membership entry at or before it: (index, term, encoded membership).
    pub membership: Option<(u64, u64, Vec<u8>)>,
}

impl Purged {
    /// Reads `dir/purged`, if it reads back whole.
    pub fn read(dir: &Path) -> Option<Purged> {
        let bytes = std::fs::read(dir.join("purged")).ok()?;
        let (crc, body) = bytes.split_at_checked(4)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        postcard::from_bytes(body).ok()
    }

    /// Writes `dir/purged` atomically and durably.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let body = postcard::to_stdvec(self).map_err(io::Error::other)?;
        let mut bytes = crc32c::crc32c(&body).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        crate::atomic_file::write_atomic(&dir.join("purged"), &bytes)
    }
}

/// The index, in memory and in its file.
#[derive(Debug)]
pub(crate) struct LogIndex {
    dir: std::path::PathBuf,
    file: File,
    /// Index of `slots[0]`.
    first: u64,
    slots: VecDeque<Slot>,
    /// Where the next record goes.
    file_len: u64,
    /// Encoded records not yet written.
    pending: Vec<u8>,
    /// The commit log's end when the index is empty (a log that starts later).
    base_end: u64,
    /// The last purged entry.
    purged: Option<Purged>,
}

impl LogIndex {
    /// Opens (or creates) the index in `dir`, keeping only records whose range ends at or
    /// before `log_end` (the recovered commit log's end).
    pub fn open(dir: &Path, log_end: u64) -> io::Result<LogIndex> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("log.index");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let purged = Purged::read(dir);
        let mut index = LogIndex {
            dir: dir.to_owned(),
            file,
            first: purged.as_ref().map_or(0, |p| p.index + 1),
            slots: VecDeque::new(),
            file_len: 0,
            pending: Vec::new(),
            base_end: purged.as_ref().map_or(0, |p| p.end),
            purged,
        };
        let mut pos = 0usize;
        while let Some((index_no, slot, len)) = decode(&bytes[pos..], pos as u64) {
            if slot.end > log_end {
                break;
            }
            if index.purged.as_ref().is_some_and(|p| index_no <= p.index) {
                pos += len;
                continue;
            }
            if index.slots.is_empty() {
                index.first = index_no;
            } else if index_no != index.first + index.slots.len() as u64 {
                break;
            }
            index.slots.push_back(slot);
            pos += len;
        }
        if pos as u64 != bytes.len() as u64 {
            tracing::warn!(
                kept = pos,
                dropped = bytes.len() - pos,
                "raft log index: dropping a torn or unbacked tail"
            );
            index.file.set_len(pos as u64)?;
            index.file.sync_data()?;
        }
        index.file_len = pos as u64;
        index.file.seek(SeekFrom::Start(index.file_len))?;
        Ok(index)
    }

    /// The file, for syncing outside the lock.
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// The index of the first entry held (after a purge, the one after it).
    pub fn first_index(&self) -> u64 {
        self.first
    }

    /// The last entry's index and term, if any is held.
    pub fn last(&self) -> Option<(u64, u64)> {
        self.slots
            .back()
            .map(|s| (self.first + self.slots.len() as u64 - 1, s.term))
    }

    /// Where the commit log should end: the last entry's end.
    pub fn end(&self) -> u64 {
        self.slots.back().map_or(self.base_end, |s| s.end)
    }

    /// The entry at `index`.
    pub fn get(&self, index: u64) -> Option<&Slot> {
        let at = index.checked_sub(self.first)?;
        self.slots.get(usize::try_from(at).ok()?)
    }

    /// The last membership entry at or before `index`: its index and slot.
    pub fn membership_at_or_before(&self, index: u64) -> Option<(u64, &Slot)> {
        let last = index.checked_sub(self.first)?;
        self.slots
            .iter()
            .enumerate()
            .take(
                usize::try_from(last)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            )
            .rev()
            .find(|(_, s)| s.kind == Kind::Membership)
            .map(|(i, s)| (self.first + i as u64, s))
    }

    /// Adds entry `index` (it must follow the last one; the first one may be anything).
    pub fn push(
        &mut self,
        index: u64,
        term: u64,
        kind: Kind,
        start: u64,
        end: u64,
        extra: Option<Bytes>,
    ) -> io::Result<()> {
        if self.slots.is_empty() {
            self.first = index;
        } else if index != self.first + self.slots.len() as u64 {
            return Err(io::Error::other(format!(
                "raft entry {index} does not follow {}",
                self.first + self.slots.len() as u64 - 1
            )));
        }
        let file_pos = self.file_len + self.pending.len() as u64;
        encode(
            &mut self.pending,
            index,
            term,
            kind,
            start,
            end,
            extra.as_deref(),
        );
        self.slots.push_back(Slot {
            term,
            kind,
            start,
            end,
            extra,
            file_pos,
        });
        Ok(())
    }

    /// Writes the records added since the last call (one write).
    pub fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.pending)?;
        self.file_len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Removes every entry after `last` (`None`: all of them).
    pub fn truncate_after(&mut self, last: Option<u64>) -> io::Result<()> {
        let keep = match last {
            Some(i) if i >= self.first => usize::try_from(i - self.first + 1).unwrap_or(usize::MAX),
            _ => 0,
        };
        if keep >= self.slots.len() {
            return Ok(());
        }
        self.write_pending()?;
        if keep == 0 {
            self.base_end = self.slots.front().map_or(self.base_end, |s| s.start);
        }
        let cut = self.slots[keep].file_pos;
        self.slots.truncate(keep);
        self.file.set_len(cut)?;
        self.file.seek(SeekFrom::Start(cut))?;
        self.file_len = cut;
        Ok(())
    }

    /// The last purged entry, if any.
    pub fn purged(&self) -> Option<&Purged> {
        self.purged.as_ref()
    }

    /// The last entry whose bytes end at or before commit-log offset `offset`.
    pub fn last_ending_by(&self, offset: u64) -> Option<u64> {
        let n = self.slots.partition_point(|s| s.end <= offset);
        (n > 0).then(|| self.first + n as u64 - 1)
    }

    /// Forgets entries up to and including `upto` (of term `term`): records it in
    /// `raft/purged` first, then drops them from memory (their batches stay in the commit log
    /// until retention removes them). Returns how far retention may now delete: up to where
    /// the purged entries end, and never past the first byte an entry still held needs.
    pub fn purge(&mut self, upto: u64, term: u64) -> io::Result<u64> {
        if self.purged.as_ref().is_some_and(|p| p.index >= upto) {
            let needed = self.slots.iter().map(|s| s.start).min();
            return Ok(needed.map_or(self.base_end, |n| n.min(self.base_end)));
        }
        // Past the entries held (a follower told to purge what a snapshot covers): the
        // log's end is not vouched for, so retention is let go no further than before.
        let end = self.get(upto).map_or(self.base_end, |slot| slot.end);
        let membership = match self.membership_at_or_before(upto) {
            Some((i, slot)) => Some((
                i,
                slot.term,
                slot.extra.as_deref().unwrap_or_default().to_vec(),
            )),
            None => self.purged.as_ref().and_then(|p| p.membership.clone()),
        };
        let purged = Purged {
            index: upto,
            term,
            end,
            membership,
        };
        purged.write(&self.dir)?;
        self.purged = Some(purged);
        while upto >= self.first {
            if self.slots.pop_front().is_none() {
                break;
            }
            self.first += 1;
        }
        if self.slots.is_empty() {
            self.first = upto + 1;
        }
        self.base_end = end;
        self.compact()?;
        let needed = self.slots.iter().map(|s| s.start).min().unwrap_or(end);
        Ok(end.min(needed))
    }

    /// Rewrites `log.index` without the purged records once they take half of it.
    fn compact(&mut self) -> io::Result<()> {
        self.write_pending()?;
        let dead = self.slots.front().map_or(self.file_len, |s| s.file_pos);
        if dead == 0 || dead * 2 < self.file_len {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let mut pos = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            pos.push(bytes.len() as u64);
            encode(
                &mut bytes,
                self.first + i as u64,
                slot.term,
                slot.kind,
                slot.start,
                slot.end,
                slot.extra.as_deref(),
            );
        }
        let path = self.dir.join("log.index");
        crate::atomic_file::write_atomic(&path, &bytes)?;
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        file.seek(SeekFrom::Start(bytes.len() as u64))?;
        self.file = file;
        self.file_len = bytes.len() as u64;
        for (slot, at) in self.slots.iter_mut().zip(pos) {
            slot.file_pos = at;
        }
        Ok(())
    }
}

fn encode(
    out: &mut Vec<u8>,
    index: u64,
    term: u64,
    kind: Kind,
    start: u64,
    end: u64,
    extra: Option<&[u8]>,
) {
    let extra = extra.unwrap_or_default();
    let body_len = FIXED_LEN + extra.len();
    let at = out.len();
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&term.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&start.to_be_bytes());
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(extra);
    let crc = crc32c::crc32c(&out[at + HEADER_LEN..]);
    out[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
}

/// One record from the front of `bytes`: (index, slot, record length).
fn decode(bytes: &[u8], file_pos: u64) -> Option<(u64, Slot, usize)> {
    let len = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    if len < FIXED_LEN {
        return None;
    }
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(HEADER_LEN..HEADER_LEN + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    let kind = Kind::from_u8(body[16])?;
    let extra = &body[FIXED_LEN..];
    let slot = Slot {
        term: u64_at(8)?,
        kind,
        start: u64_at(17)?,
        end: u64_at(25)?,
        extra: (!extra.is_empty()).then(|| Bytes::copy_from_slice(extra)),
        file_pos,
    };
    Some((u64_at(0)?, slot, HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_batch(index: &mut LogIndex, i: u64, start: u64, end: u64) {
        index.push(i, 1, Kind::Batch, start, end, None).unwrap();
    }

    #[test]
    fn records_survive_reopen_and_unbacked_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LogIndex::open(dir.path(), 0).unwrap();
        index
            .push(0, 0, Kind::Membership, 0, 0, Some(Bytes::from_static(b"m")))
            .unwrap();
        push_batch(&mut index, 1, 0, 100);
        push_batch(&mut index, 2, 100, 250);
        index.write_pending().unwrap();
        drop(index);
        let index = LogIndex::open(dir.path(), 250).unwrap();
        assert_eq!(index.last(), Some((2, 1)));
        assert_eq!(index.get(0).unwrap().extra.as_deref(), Some(&b"m"[..]));
        assert_eq!(index.membership_at_or_before(2).map(|(i, _)| i), Some(0));
        drop(index);
        // The commit log came back shorter: the last batch's bytes are gone.
        let index = LogIndex::open(dir.path(), 200).unwrap();
        assert_eq!(index.last(), Some((1, 1)));
        assert_eq!(index.end(), 100);
    }

    #[test]
    fn truncation_and_purge_keep_indices_dense() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LogIndex::open(dir.path(), 0).unwrap();
        for i in 0..5 {
            push_batch(&mut index, i, i * 10, i * 10 + 10);
        }
        index.truncate_after(Some(2)).unwrap();
        assert_eq!(index.end(), 30);
        assert!(index.push(4, 2, Kind::Blank, 30, 30, None).is_err());
        index.push(3, 2, Kind::Blank, 30, 30, None).unwrap();
        index.write_pending().unwrap();
        assert_eq!(index.purge(1, 1).unwrap(), 20);
        assert_eq!(index.first_index(), 2);
        assert!(index.get(1).is_none());
        drop(index);
        let index = LogIndex::open(dir.path(), 30).unwrap();
        assert_eq!(index.last(), Some((3, 2)));
        assert_eq!(index.first_index(), 2);
        assert_eq!(
            index.purged().map(|p| (p.index, p.term, p.end)),
            Some((1, 1, 20))
        );
    }

    #[test]
    fn a_purge_keeps_the_membership_and_compacts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LogIndex::open(dir.path(), 0).unwrap();
        index
            .push(0, 1, Kind::Membership, 0, 0, Some(Bytes::from_static(b"m")))
            .unwrap();
        for i in 1..10 {
            push_batch(&mut index, i, i * 10, i * 10 + 10);
        }
        index.write_pending().unwrap();
        let len = std::fs::metadata(dir.path().join("log.index"))
            .unwrap()
            .len();
        assert_eq!(index.last_ending_by(55), Some(4));
        assert_eq!(index.purge(7, 1).unwrap(), 80);
        // Purged records were most of the file: it was rewritten with the two left.
        assert!(
            std::fs::metadata(dir.path().join("log.index"))
                .unwrap()
                .len()
                < len / 2
        );
        push_batch(&mut index, 10, 100, 110);
        index.write_pending().unwrap();
        drop(index);
        let index = LogIndex::open(dir.path(), 110).unwrap();
        assert_eq!(index.first_index(), 8);
        assert_eq!(index.last(), Some((10, 1)));
        let purged = index.purged().unwrap();
        assert_eq!(purged.membership, Some((0, 1, b"m".to_vec())));
        // Everything purged: the log continues at the purge point.
        let dir = tempfile::tempdir().unwrap();
        Purged {
            index: 41,
            term: 3,
            end: 4096,
            membership: None,
        }
        .write(dir.path())
        .unwrap();
        let index = LogIndex::open(dir.path(), 4096).unwrap();
        assert_eq!(
            (index.first_index(), index.end(), index.last()),
            (42, 4096, None)
        );
    }

    #[test]
    fn a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LogIndex::open(dir.path(), 0).unwrap();
        push_batch(&mut index, 0, 0, 10);
        push_batch(&mut index, 1, 10, 20);
        index.write_pending().unwrap();
        let path = dir.path().join("log.index");
        drop(index);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let index = LogIndex::open(dir.path(), 20).unwrap();
        assert_eq!(index.last(), Some((0, 1)));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (len / 2));
    }
}

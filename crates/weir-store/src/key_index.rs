//! The key index: every position of a message key in a topic, as on-disk hash tables.
//!
//! Like RocketMQ's IndexFile: fixed-size files of hash slots and chained entries in
//! `index/`, each named by the commit-log offset of the first record it indexes (20 digits).
//! A key's hash is XXH3-64 of `"topic\u{1}key"`; its slot is `hash % slot_count`. A slot holds
//! the newest entry of its chain; each entry points to the previous one in the same slot.
//!
//! ```text
//! index file (64 + 4 * slot_count + 20 * entry_capacity bytes, little-endian)
//! +--------+---------------------------+------------------------------------+
//! | header | slots: slot_count x u32   | entries: entry_capacity x 20 bytes |
//! +--------+---------------------------+------------------------------------+
//!
//! header (64 bytes)                     entry (20 bytes)
//!  0  4  magic "WKIX"                    0  8  key_hash u64
//!  4  4  version u32 = 1                 8  8  commit_log_offset u64
//!  8  4  slot_count u32                 16  4  prev u32: 1 + index of the previous entry
//! 12  4  entry_capacity u32                       in this slot's chain, 0 = none
//! 16  4  entry_count u32
//! 20 44  reserved                       slot: u32, 1 + index of the newest entry, 0 = empty
//! ```
//!
//! Entries are appended in commit-log order. Hashes collide and entries can outlive their
//! records (retention, a cut), so a lookup is only a list of candidates: the store reads each
//! record and keeps those whose topic and key really match. The header's `entry_count` is not
//! trusted after a crash: the checkpoint records the count that was synced, recovery cuts the
//! file back to it (rebuilding the slots), and the dispatcher re-indexes from there.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;
use parking_lot::RwLock;

use crate::mmap;
use crate::segment::{self, file_name, list_numbered, preallocate};

const MAGIC: &[u8; 4] = b"WKIX";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 64;
const ENTRY_LEN: usize = 20;
const OFF_SLOTS: usize = 8;
const OFF_CAPACITY: usize = 12;
const OFF_COUNT: usize = 16;

/// The hash of a (topic, key) pair.
pub(crate) fn key_hash(topic: &str, key: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(topic.as_bytes());
    h.update(b"\x01");
    h.update(key);
    h.digest()
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// One index file, mapped read-write.
#[derive(Debug)]
struct IndexFile {
    base: u64,
    slots: u32,
    capacity: u32,
    count: u32,
    map: MmapMut,
    path: PathBuf,
    dirty: bool,
}

impl IndexFile {
    fn len(slots: u32, capacity: u32) -> u64 {
        HEADER_LEN as u64 + 4 * slots as u64 + ENTRY_LEN as u64 * capacity as u64
    }

    fn create(dir: &Path, base: u64, slots: u32, capacity: u32) -> io::Result<IndexFile> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        if let Err(e) = preallocate(&file, 0, Self::len(slots, capacity)) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let mut map = mmap::map_write(&file)?;
        map[0..4].copy_from_slice(MAGIC);
        put_u32(&mut map, 4, VERSION);
        put_u32(&mut map, OFF_SLOTS, slots);
        put_u32(&mut map, OFF_CAPACITY, capacity);
        segment::sync_dir(dir)?;
        Ok(IndexFile {
            base,
            slots,
            capacity,
            count: 0,
            map,
            path,
            dirty: true,
        })
    }

    fn open(path: PathBuf, base: u64) -> io::Result<IndexFile> {
        let file: File = OpenOptions::new().read(true).write(true).open(&path)?;
        let map = mmap::map_write(&file)?;
        let bad = || io::Error::other(format!("bad index file {}", path.display()));
        if map.len() < HEADER_LEN || &map[0..4] != MAGIC || get_u32(&map, 4) != VERSION {
            return Err(bad());
        }
        let slots = get_u32(&map, OFF_SLOTS);
        let capacity = get_u32(&map, OFF_CAPACITY);
        if slots == 0 || (map.len() as u64) < Self::len(slots, capacity) {
            return Err(bad());
        }
        let count = get_u32(&map, OFF_COUNT).min(capacity);
        Ok(IndexFile {
            base,
            slots,
            capacity,
            count,
            map,
            path,
            dirty: false,
        })
    }

    fn slot_at(&self, hash: u64) -> usize {
        HEADER_LEN + 4 * (hash % self.slots as u64) as usize
    }

    fn entry_at(&self, i: u32) -> usize {
        HEADER_LEN + 4 * self.slots as usize + ENTRY_LEN * i as usize
    }

    fn entry(&self, i: u32) -> (u64, u64, u32) {
        let at = self.entry_at(i);
        (
            get_u64(&self.map, at),
            get_u64(&self.map, at + 8),
            get_u32(&self.map, at + 16),
        )
    }

    fn insert(&mut self, hash: u64, offset: u64) {
        let i = self.count;
        let slot = self.slot_at(hash);
        let prev = get_u32(&self.map, slot);
        let at = self.entry_at(i);
        self.map[at..at + 8].copy_from_slice(&hash.to_le_bytes());
        self.map[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        put_u32(&mut self.map, at + 16, prev);
        put_u32(&mut self.map, slot, i + 1);
        self.count = i + 1;
        put_u32(&mut self.map, OFF_COUNT, self.count);
        self.dirty = true;
    }

    /// Keeps the first `count` entries and rebuilds the slots from them.
    fn cut(&mut self, count: u32) {
        self.count = count.min(self.capacity);
        let slots_start = HEADER_LEN;
        let slots_end = slots_start + 4 * self.slots as usize;
        self.map[slots_start..slots_end].fill(0);
        for i in 0..self.count {
            let (hash, _, _) = self.entry(i);
            let slot = self.slot_at(hash);
            let prev = get_u32(&self.map, slot);
            let at = self.entry_at(i) + 16;
            put_u32(&mut self.map, at, prev);
            put_u32(&mut self.map, slot, i + 1);
        }
        put_u32(&mut self.map, OFF_COUNT, self.count);
        self.dirty = true;
    }

    /// Offsets of the entries with `hash`, newest first.
    fn candidates(&self, hash: u64, out: &mut Vec<u64>, limit: usize) {
        let mut next = get_u32(&self.map, self.slot_at(hash));
        let mut steps = 0u32;
        while next != 0 && out.len() < limit && steps <= self.count {
            let i = next - 1;
            if i >= self.count {
                break;
            }
            let (h, offset, prev) = self.entry(i);
            if h == hash {
                out.push(offset);
            }
            if prev >= next {
                break;
            }
            next = prev;
            steps += 1;
        }
    }
}

/// The state the checkpoint records about the index: its newest file and that file's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IndexMark {
    /// Base of the newest index file, `u64::MAX` for none.
    pub base: u64,
    /// Entries in it.
    pub count: u32,
}

/// All index files, oldest first.
#[derive(Debug)]
pub(crate) struct KeyIndex {
    dir: PathBuf,
    slots: u32,
    capacity: u32,
    files: RwLock<Vec<IndexFile>>,
}

impl KeyIndex {
    /// Opens the index, cut back to `mark` (files after it are deleted). With no mark every
    /// file is deleted: the index is rebuilt from the log.
    pub fn open(
        dir: PathBuf,
        slots: u32,
        capacity: u32,
        mark: Option<IndexMark>,
    ) -> io::Result<KeyIndex> {
        std::fs::create_dir_all(&dir)?;
        let mut files = Vec::new();
        for (base, path) in list_numbered(&dir)? {
            let keep = mark.is_some_and(|m| m.base != u64::MAX && base <= m.base);
            if !keep {
                std::fs::remove_file(&path)?;
                continue;
            }
            match IndexFile::open(path.clone(), base) {
                Ok(f) => files.push(f),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an unreadable index file");
                    std::fs::remove_file(&path)?;
                }
            }
        }
        if let (Some(mark), Some(last)) = (mark, files.last_mut())
            && last.base == mark.base
        {
            last.cut(mark.count);
        }
        Ok(KeyIndex {
            dir,
            slots,
            capacity,
            files: RwLock::new(files),
        })
    }

    /// Records that the record at `offset` has key `key` in `topic`.
    pub fn insert(&self, topic: &str, key: &[u8], offset: u64) -> io::Result<()> {
        let hash = key_hash(topic, key);
        let mut files = self.files.write();
        if files.last().is_none_or(|f| f.count >= f.capacity) {
            files.push(IndexFile::create(
                &self.dir,
                offset,
                self.slots,
                self.capacity,
            )?);
        }
        if let Some(f) = files.last_mut() {
            f.insert(hash, offset);
        }
        Ok(())
    }

    /// Candidate offsets for (topic, key), newest first, at or after `min_offset`.
    pub fn candidates(&self, topic: &str, key: &[u8], min_offset: u64, limit: usize) -> Vec<u64> {
        let hash = key_hash(topic, key);
        let files = self.files.read();
        let mut out = Vec::new();
        for f in files.iter().rev() {
            f.candidates(hash, &mut out, limit);
            if out.len() >= limit {
                break;
            }
        }
        out.retain(|o| *o >= min_offset);
        out
    }

    /// Drops every entry at or after commit-log `offset`.
    pub fn truncate(&self, offset: u64) -> io::Result<()> {
        let mut files = self.files.write();
        while files.last().is_some_and(|f| f.base >= offset) {
            if let Some(f) = files.pop() {
                std::fs::remove_file(&f.path)?;
            }
        }
        if let Some(f) = files.last_mut() {
            let (mut lo, mut hi) = (0u32, f.count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if f.entry(mid).1 < offset {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo < f.count {
                f.cut(lo);
            }
        }
        Ok(())
    }

    /// Deletes files whose entries all point before `log_min` (never the newest).
    pub fn retain_from(&self, log_min: u64) -> io::Result<()> {
        let mut files = self.files.write();
        while files.len() > 1 && files[1].base <= log_min {
            let f = files.remove(0);
            std::fs::remove_file(&f.path)?;
        }
        Ok(())
    }

    /// Syncs the files changed since the last call; returns the mark to checkpoint.
    pub fn sync(&self) -> io::Result<IndexMark> {
        let mut files = self.files.write();
        for f in files.iter_mut().filter(|f| f.dirty) {
            f.map.flush()?;
            f.dirty = false;
        }
        Ok(files.last().map_or(
            IndexMark {
                base: u64::MAX,
                count: 0,
            },
            |f| IndexMark {
                base: f.base,
                count: f.count,
            },
        ))
    }

    /// The mark of the current state, without syncing.
    pub fn mark(&self) -> IndexMark {
        self.files.read().last().map_or(
            IndexMark {
                base: u64::MAX,
                count: 0,
            },
            |f| IndexMark {
                base: f.base,
                count: f.count,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_roll_truncate_reopen() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let index = KeyIndex::open(dir.path().to_path_buf(), 7, 10, None)?;
        for i in 0..25u64 {
            index.insert("t", format!("k{}", i % 3).as_bytes(), i * 10)?;
        }
        assert_eq!(list_numbered(dir.path())?.len(), 3);
        let got = index.candidates("t", b"k1", 0, 100);
        assert_eq!(got, vec![220, 190, 160, 130, 100, 70, 40, 10]);
        assert!(index.candidates("u", b"k1", 0, 100).is_empty());
        index.truncate(105)?;
        assert_eq!(index.candidates("t", b"k1", 0, 100), vec![100, 70, 40, 10]);
        index.insert("t", b"k1", 500)?;
        let mark = index.sync()?;
        assert_eq!(index.candidates("t", b"k1", 50, 100), vec![500, 100, 70]);
        index.insert("t", b"k1", 600)?;
        drop(index);
        let index = KeyIndex::open(dir.path().to_path_buf(), 7, 10, Some(mark))?;
        assert_eq!(
            index.candidates("t", b"k1", 0, 100),
            vec![500, 100, 70, 40, 10]
        );
        Ok(())
    }
}

//! Consume queues: per (topic, queue), the commit-log position of each message, by queue offset.
//!
//! Files live in `consumequeue/<topic>/<queue_id>/`, each named by the queue offset of its first
//! entry (20 digits) and holding `entries_per_file` fixed-size entries, so queue offset `n` is at
//! byte `(n - file_base) * 20` of the file whose base is `n - n % entries_per_file`:
//!
//! ```text
//! entry (20 bytes, little-endian)
//! offset size field
//!  0     8    commit_log_offset u64   where the message's entry (its batch) starts in the log
//!  8     4    size u32                the entry's total length; 0 = no entry (never written)
//! 12     8    tag_hash u64            weir_proto::batch::tag_hash of the message's tag, 0 = none
//! ```
//!
//! Every message of a batch has its own entry, all pointing at the batch: a message's index in
//! its batch is its queue offset minus the batch's base offset. Tag filters skip by entries
//! alone.
//!
//! A *lost* entry (`size` 0, `tag_hash` u64::MAX, `commit_log_offset` where the log went on
//! after the damage) stands for a message whose batch was in a damaged stretch of the commit
//! log: recovery kept the batches after it, so the queue has a gap there that reads skip and
//! report (see `damage.rs`).
//!
//! Invariants: entries are written by the dispatcher only, at their queue offset (a positional
//! write, so re-dispatching after recovery is idempotent); within a queue, commit-log offsets
//! increase with the queue offset; readers see entries below the published `max` only.
//! Files are sparse: sized to their full length with `set_len`, so entries past `max` read as
//! zeros, but disk blocks are claimed only as the queue grows — 10,000 queues cost 80 KiB
//! each, not `entries_per_file * 20` bytes each. Appenders claim them ([`ConsumeQueue::reserve`],
//! `fallocate` in runs of [`RESERVE_ENTRIES`]) before their records enter the commit log, so the
//! dispatcher never meets a full disk after a record was stored.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::checkpoint::QueueTotals;
use crate::segment::{self, file_name, list_numbered, preallocate, punch_range};

/// Length of one entry.
pub(crate) const ENTRY_LEN: u64 = 20;

/// Entries whose disk blocks one [`ConsumeQueue::reserve`] claims at a time (80 KiB): one
/// `fallocate` per this many messages of a queue.
pub(crate) const RESERVE_ENTRIES: u64 = 4096;

/// One consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Entry {
    /// Where the record starts in the commit log.
    pub offset: u64,
    /// The record's length; 0 for an empty slot.
    pub size: u32,
    /// Hash of the record's tag, 0 for none.
    pub tag_hash: u64,
}

/// `tag_hash` of a lost entry (see the module doc).
const LOST_TAG_HASH: u64 = u64::MAX;

impl Entry {
    /// The entry standing for a message lost in a damaged stretch of the log that ended at
    /// commit-log `resumed_at`.
    pub fn lost(resumed_at: u64) -> Entry {
        Entry {
            offset: resumed_at,
            size: 0,
            tag_hash: LOST_TAG_HASH,
        }
    }

    /// Whether this is a lost entry.
    pub fn is_lost(&self) -> bool {
        self.size == 0 && self.tag_hash == LOST_TAG_HASH
    }

    /// Whether this entry was written (a record's, or a lost one).
    pub fn is_written(&self) -> bool {
        self.size != 0 || self.is_lost()
    }

    /// The entry's 20 bytes.
    pub fn encode(&self) -> [u8; ENTRY_LEN as usize] {
        let mut b = [0u8; ENTRY_LEN as usize];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..20].copy_from_slice(&self.tag_hash.to_le_bytes());
        b
    }

    /// Reads an entry from the first 20 bytes of `b` (zeros if `b` is shorter).
    pub fn decode(b: &[u8]) -> Entry {
        if b.len() < ENTRY_LEN as usize {
            return Entry::default();
        }
        let mut o = [0u8; 8];
        let mut s = [0u8; 4];
        let mut t = [0u8; 8];
        o.copy_from_slice(&b[0..8]);
        s.copy_from_slice(&b[8..12]);
        t.copy_from_slice(&b[12..20]);
        Entry {
            offset: u64::from_le_bytes(o),
            size: u32::from_le_bytes(s),
            tag_hash: u64::from_le_bytes(t),
        }
    }
}

/// One (topic, queue)'s files and its readable range.
#[derive(Debug)]
pub(crate) struct ConsumeQueue {
    dir: PathBuf,
    entries_per_file: u64,
    files: RwLock<Vec<(u64, Arc<File>)>>,
    min: AtomicU64,
    max: AtomicU64,
    dirty: AtomicBool,
    new_files: AtomicBool,
    /// Entries below this have disk blocks claimed.
    reserved: AtomicU64,
}

impl ConsumeQueue {
    fn empty(dir: PathBuf, entries_per_file: u64) -> ConsumeQueue {
        ConsumeQueue {
            dir,
            entries_per_file,
            files: RwLock::new(Vec::new()),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            new_files: AtomicBool::new(false),
            reserved: AtomicU64::new(0),
        }
    }

    /// Opens the queue in `dir`, keeping only the entries that point below `bound` (everything
    /// at or past it is zeroed, to be re-dispatched) and whose record is at or after `log_min`.
    pub fn open(
        dir: PathBuf,
        entries_per_file: u64,
        bound: u64,
        log_min: u64,
    ) -> io::Result<ConsumeQueue> {
        let cq = ConsumeQueue::empty(dir, entries_per_file);
        let mut files = Vec::new();
        for (base, path) in list_numbered(&cq.dir)? {
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            files.push((base, Arc::new(file)));
        }
        let first = files.first().map_or(0, |(b, _)| *b);
        let last_end = files.last().map_or(0, |(b, _)| *b + entries_per_file);
        *cq.files.write() = files;
        cq.min.store(first, Ordering::Release);
        let max = cq.partition(first, last_end, |e| e.is_written() && e.offset < bound)?;
        cq.zero_entries(max, last_end)?;
        cq.max.store(max, Ordering::Release);
        cq.reserved.store(max, Ordering::Release);
        cq.drop_files_from(max)?;
        cq.advance_min(log_min)?;
        Ok(cq)
    }

    /// The smallest readable queue offset.
    pub fn min(&self) -> u64 {
        self.min.load(Ordering::Acquire)
    }

    /// One past the largest readable queue offset.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Acquire)
    }

    /// Makes entries below `max` readable.
    pub fn publish_max(&self, max: u64) {
        self.max.store(max, Ordering::Release);
    }

    fn file_base(&self, offset: u64) -> u64 {
        offset - offset % self.entries_per_file
    }

    fn file_for(&self, base: u64) -> Option<Arc<File>> {
        let files = self.files.read();
        files
            .binary_search_by_key(&base, |(b, _)| *b)
            .ok()
            .map(|i| Arc::clone(&files[i].1))
    }

    /// Reads the entries `[from, to)` into `buf` (cleared first); missing files read as zeros.
    pub fn read_entries(&self, from: u64, to: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(((to - from) * ENTRY_LEN) as usize, 0);
        let mut at = from;
        while at < to {
            let base = self.file_base(at);
            let end = to.min(base + self.entries_per_file);
            let dst =
                &mut buf[((at - from) * ENTRY_LEN) as usize..((end - from) * ENTRY_LEN) as usize];
            if let Some(file) = self.file_for(base) {
                read_at_most(&file, dst, (at - base) * ENTRY_LEN)?;
            }
            at = end;
        }
        Ok(())
    }

    /// The entry at queue offset `offset` (zeros if none).
    pub fn entry(&self, offset: u64) -> io::Result<Entry> {
        let mut buf = Vec::with_capacity(ENTRY_LEN as usize);
        self.read_entries(offset, offset + 1, &mut buf)?;
        Ok(Entry::decode(&buf))
    }

    /// Claims disk blocks for every entry below `to` (in runs of [`RESERVE_ENTRIES`]), creating
    /// files as needed. Called by the one appender holding the writer lock.
    pub fn reserve(&self, to: u64) -> io::Result<()> {
        let mut at = self.reserved.load(Ordering::Acquire);
        if to <= at {
            return Ok(());
        }
        // Whole runs, but never past the file that holds entry `to - 1`: no file is created
        // before the queue reaches it.
        let last_file_end = self.file_base(to - 1) + self.entries_per_file;
        let target = (to.div_ceil(RESERVE_ENTRIES) * RESERVE_ENTRIES).min(last_file_end);
        while at < target {
            let base = self.file_base(at);
            let end = target.min(base + self.entries_per_file);
            let file = match self.file_for(base) {
                Some(f) => f,
                None => self.create_file(base)?,
            };
            preallocate(&file, (at - base) * ENTRY_LEN, (end - at) * ENTRY_LEN)?;
            at = end;
        }
        self.reserved.store(target, Ordering::Release);
        Ok(())
    }

    /// Writes encoded entries starting at queue offset `from`, creating files as needed.
    pub fn write_entries(&self, from: u64, bytes: &[u8]) -> io::Result<()> {
        let to = from + bytes.len() as u64 / ENTRY_LEN;
        let mut at = from;
        while at < to {
            let base = self.file_base(at);
            let end = to.min(base + self.entries_per_file);
            let file = match self.file_for(base) {
                Some(f) => f,
                None => self.create_file(base)?,
            };
            let src =
                &bytes[((at - from) * ENTRY_LEN) as usize..((end - from) * ENTRY_LEN) as usize];
            file.write_all_at(src, (at - base) * ENTRY_LEN)?;
            at = end;
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn create_file(&self, base: u64) -> io::Result<Arc<File>> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if let Err(e) = file.set_len(self.entries_per_file * ENTRY_LEN) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let file = Arc::new(file);
        let mut files = self.files.write();
        let i = files.partition_point(|(b, _)| *b < base);
        if files.get(i).is_some_and(|(b, _)| *b == base) {
            // Created meanwhile by the other of appender and dispatcher: same file on disk.
            return Ok(Arc::clone(&files[i].1));
        }
        files.insert(i, (base, Arc::clone(&file)));
        self.new_files.store(true, Ordering::Release);
        Ok(file)
    }

    /// First offset in `[lo, hi)` where `keep` turns false (`keep` must be true then false).
    fn partition(&self, lo: u64, hi: u64, keep: impl Fn(&Entry) -> bool) -> io::Result<u64> {
        let (mut lo, mut hi) = (lo, hi);
        let mut buf = Vec::with_capacity(ENTRY_LEN as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.read_entries(mid, mid + 1, &mut buf)?;
            if keep(&Entry::decode(&buf)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// First queue offset in `[min, max)` whose record is at or after commit-log `offset`.
    pub fn offset_of_log_position(&self, offset: u64) -> io::Result<u64> {
        self.partition(self.min(), self.max(), |e| e.offset < offset)
    }

    fn zero_entries(&self, from: u64, to: u64) -> io::Result<()> {
        let mut at = from;
        while at < to {
            let base = self.file_base(at);
            let end = to.min(base + self.entries_per_file);
            if let Some(file) = self.file_for(base) {
                let len = file.metadata()?.len();
                let start = (at - base) * ENTRY_LEN;
                if start < len {
                    punch_range(&file, start, ((end - base) * ENTRY_LEN).min(len) - start)?;
                }
            }
            at = end;
        }
        self.reserved.fetch_min(from, Ordering::AcqRel);
        Ok(())
    }

    /// Deletes the files that start at or after `offset`, keeping at least one.
    fn drop_files_from(&self, offset: u64) -> io::Result<()> {
        let mut files = self.files.write();
        while files.len() > 1 && files.last().is_some_and(|(b, _)| *b >= offset) {
            if let Some((base, _)) = files.pop() {
                std::fs::remove_file(self.dir.join(file_name(base)))?;
            }
        }
        Ok(())
    }

    /// Removes every entry whose record starts at or after commit-log `offset`.
    pub fn truncate_log_offset(&self, offset: u64) -> io::Result<()> {
        let old_max = self.max();
        let new_max = self.partition(self.min(), old_max, |e| e.offset < offset)?;
        if new_max < old_max {
            self.max.store(new_max, Ordering::Release);
            self.zero_entries(new_max, old_max)?;
            self.drop_files_from(new_max)?;
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Moves the minimum up past entries whose record is gone (before commit-log `log_min`)
    /// and deletes the files wholly below it (never the newest one).
    pub fn advance_min(&self, log_min: u64) -> io::Result<()> {
        let new_min = self.partition(self.min(), self.max(), |e| e.offset < log_min)?;
        self.min.store(new_min, Ordering::Release);
        let mut files = self.files.write();
        while files.len() > 1 && files[0].0 + self.entries_per_file <= new_min {
            let (base, _) = files.remove(0);
            std::fs::remove_file(self.dir.join(file_name(base)))?;
        }
        Ok(())
    }

    /// Whether entries or files were written since the last [`ConsumeQueue::sync`] or
    /// [`ConsumeQueue::take_dirty`].
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire) || self.new_files.load(Ordering::Acquire)
    }

    /// Marks the queue clean, for a caller that makes the whole file system durable itself
    /// (`syncfs`) right after: whatever is written after this call stays dirty.
    pub fn take_dirty(&self) {
        self.dirty.store(false, Ordering::Release);
        self.new_files.store(false, Ordering::Release);
    }

    /// Fsyncs the files written since the last call, and the directory if files were created.
    pub fn sync(&self) -> io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let files: Vec<Arc<File>> = self
                .files
                .read()
                .iter()
                .map(|(_, f)| Arc::clone(f))
                .collect();
            for file in files {
                file.sync_data()?;
            }
        }
        if self.new_files.swap(false, Ordering::AcqRel) {
            segment::sync_dir(&self.dir)?;
            if let Some(parent) = self.dir.parent() {
                segment::sync_dir(parent)?;
            }
        }
        Ok(())
    }
}

/// Reads into `dst` from `offset`, leaving zeros where the file ends early.
fn read_at_most(file: &File, dst: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < dst.len() {
        match file.read_at(&mut dst[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every consume queue, by topic and queue id.
#[derive(Debug)]
pub(crate) struct ConsumeQueues {
    root: PathBuf,
    entries_per_file: u64,
    queues: RwLock<HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>>,
}

impl ConsumeQueues {
    /// Opens every queue under `root`, trimming each as [`ConsumeQueue::open`] does.
    pub fn open(
        root: PathBuf,
        entries_per_file: u64,
        bound: u64,
        log_min: u64,
    ) -> io::Result<ConsumeQueues> {
        std::fs::create_dir_all(&root)?;
        let mut queues: HashMap<String, HashMap<u32, Arc<ConsumeQueue>>> = HashMap::new();
        for topic_dir in std::fs::read_dir(&root)? {
            let topic_dir = topic_dir?;
            let Some(topic) = topic_dir.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !topic_dir.file_type()?.is_dir() {
                continue;
            }
            for queue_dir in std::fs::read_dir(topic_dir.path())? {
                let queue_dir = queue_dir?;
                let Some(queue_id) = queue_dir.file_name().to_str().and_then(|s| s.parse().ok())
                else {
                    continue;
                };
                let cq = ConsumeQueue::open(queue_dir.path(), entries_per_file, bound, log_min)?;
                queues
                    .entry(topic.clone())
                    .or_default()
                    .insert(queue_id, Arc::new(cq));
            }
        }
        Ok(ConsumeQueues {
            root,
            entries_per_file,
            queues: RwLock::new(queues),
        })
    }

    /// The queue, if it exists.
    pub fn get(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        self.queues.read().get(topic)?.get(&queue_id).cloned()
    }

    /// The queue, created empty if it does not exist.
    pub fn get_or_create(&self, topic: &str, queue_id: u32) -> Arc<ConsumeQueue> {
        if let Some(cq) = self.get(topic, queue_id) {
            return cq;
        }
        let mut queues = self.queues.write();
        let dir = self.root.join(topic).join(queue_id.to_string());
        Arc::clone(
            queues
                .entry(topic.to_owned())
                .or_default()
                .entry(queue_id)
                .or_insert_with(|| Arc::new(ConsumeQueue::empty(dir, self.entries_per_file))),
        )
    }

    /// Every queue.
    pub fn all(&self) -> Vec<(String, u32, Arc<ConsumeQueue>)> {
        let queues = self.queues.read();
        let mut out = Vec::new();
        for (topic, qs) in queues.iter() {
            for (id, cq) in qs {
                out.push((topic.clone(), *id, Arc::clone(cq)));
            }
        }
        out
    }

    /// How many queues hold entries, and the sum of their ends (see the checkpoint).
    pub fn totals(&self) -> QueueTotals {
        let queues = self.queues.read();
        let mut totals = QueueTotals::default();
        for cq in queues.values().flat_map(|qs| qs.values()) {
            let max = cq.max();
            if max > 0 {
                totals.count += 1;
                totals.entries += max;
            }
        }
        totals
    }

    /// Forgets a topic's queues and deletes their files.
    pub fn remove_topic(&self, topic: &str) -> io::Result<()> {
        self.queues.write().remove(topic);
        let dir = self.root.join(topic);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => segment::sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip() {
        let e = Entry {
            offset: 1 << 40,
            size: 1234,
            tag_hash: u64::MAX - 3,
        };
        assert_eq!(Entry::decode(&e.encode()), e);
        assert_eq!(Entry::decode(&[1, 2, 3]), Entry::default());
    }

    #[test]
    fn write_read_truncate_reopen() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let qs = ConsumeQueues::open(dir.path().to_path_buf(), 4, 0, 0)?;
        let cq = qs.get_or_create("t", 3);
        let mut bytes = Vec::new();
        for i in 0..10u64 {
            bytes.extend_from_slice(
                &Entry {
                    offset: i * 100,
                    size: 100,
                    tag_hash: i,
                }
                .encode(),
            );
        }
        cq.write_entries(0, &bytes)?;
        cq.publish_max(10);
        assert_eq!(cq.entry(9)?.offset, 900);
        assert_eq!(cq.offset_of_log_position(450)?, 5);
        cq.truncate_log_offset(700)?;
        assert_eq!(cq.max(), 7);
        assert_eq!(cq.entry(7)?, Entry::default());
        cq.advance_min(500)?;
        assert_eq!(cq.min(), 5);
        drop(qs);
        let qs = ConsumeQueues::open(dir.path().to_path_buf(), 4, 600, 0)?;
        let cq = qs
            .get("t", 3)
            .ok_or_else(|| io::Error::other("missing queue"))?;
        assert_eq!((cq.min(), cq.max()), (4, 6));
        Ok(())
    }
}

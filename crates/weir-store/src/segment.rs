//! One commit-log segment file.
//!
//! A segment is named by the commit-log offset of its first byte, zero-padded to 20 digits
//! (`00000000001073741824`), and is preallocated to its full capacity with `fallocate`, so a
//! full disk shows up as a clean error when a segment is created instead of a `SIGBUS` or a
//! short write later. Records are laid end to end from byte 0; a record never straddles two
//! segments. When the rest of a segment is too small for the next record, the writer puts an
//! end marker there (if at least [`END_MARKER_LEN`] bytes remain) and the log continues at the
//! next segment, whose base is this segment's base plus its capacity:
//!
//! ```text
//! segment file (capacity bytes)
//! +----------+----------+-----+----------+------------+------------------+
//! | record 0 | record 1 | ... | record n | end marker | (unused, zeros)  |
//! +----------+----------+-----+----------+------------+------------------+
//!
//! end marker (8 bytes, little-endian)
//! offset size field
//!  0     4    remaining u32   bytes from the marker to the end of the segment
//!  4     1    magic u8 = 0xE0 (entries have 0xB2 here)
//!  5     3    "WEM"
//! ```
//!
//! Anything else at a position (zeros, a bad magic, a bad checksum, a short record) ends the
//! log: recovery cuts it there.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use memmap2::Mmap;
use rustix::fs::FallocateFlags;

use crate::mmap;

/// Length of the end-of-segment marker.
pub(crate) const END_MARKER_LEN: u64 = 8;
/// Magic byte of the end-of-segment marker, at the same place as a record's magic.
pub(crate) const END_MARKER_MAGIC: u8 = 0xE0;

/// The end-of-segment marker for a segment with `remaining` bytes left at its position.
pub(crate) fn end_marker(remaining: u64) -> [u8; END_MARKER_LEN as usize] {
    let r = (remaining.min(u32::MAX as u64) as u32).to_le_bytes();
    [r[0], r[1], r[2], r[3], END_MARKER_MAGIC, b'W', b'E', b'M']
}

/// Whether `bytes` start with an end-of-segment marker.
pub(crate) fn is_end_marker(bytes: &[u8]) -> bool {
    bytes.len() >= END_MARKER_LEN as usize && bytes[4] == END_MARKER_MAGIC && &bytes[5..8] == b"WEM"
}

/// File name of the file whose first offset is `offset`.
pub(crate) fn file_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// The offset a 20-digit file name stands for.
pub(crate) fn parse_file_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Lists the files in `dir` named by a 20-digit offset, sorted by it.
pub(crate) fn list_numbered(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if let Some(offset) = parse_file_name(&path) {
            out.push((offset, path));
        }
    }
    out.sort_unstable_by_key(|(offset, _)| *offset);
    Ok(out)
}

/// Reserves `[offset, offset + len)` of `file` on disk, extending it if needed.
pub(crate) fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
            // No fallocate on this filesystem: fall back to a sparse file of the right size.
            if file.metadata()?.len() < offset + len {
                file.set_len(offset + len)?;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Makes `[offset, offset + len)` of `file` read as zeros and frees its blocks, keeping the
/// file's size (a hole); writes zeros where holes are not supported.
pub(crate) fn punch_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    if rustix::fs::fallocate(file, punch, offset, len).is_ok() {
        return Ok(());
    }
    write_zeros(file, offset, len)
}

fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Makes `[offset, offset + len)` of `file` read as zeros, keeping the file's size.
///
/// Punches a hole (cheap, whatever the length) and reserves the blocks again; falls back to
/// writing zeros where holes are not supported.
pub(crate) fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    match rustix::fs::fallocate(file, punch, offset, len) {
        Ok(()) => {
            if let Err(e) = rustix::fs::fallocate(file, FallocateFlags::KEEP_SIZE, offset, len) {
                // The range reads as zeros already; a later write there may hit ENOSPC, which
                // the writer reports as a full disk.
                tracing::warn!(error = %e, "could not re-reserve a zeroed range");
            }
            Ok(())
        }
        Err(_) => write_zeros(file, offset, len),
    }
}

/// Fsyncs the directory `dir`, so entries created or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One segment file, mapped for reading.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Commit-log offset of the segment's first byte.
    pub base: u64,
    /// Bytes the segment holds; the next segment starts at `base + capacity`.
    pub capacity: u64,
    file: File,
    map: Mmap,
    path: PathBuf,
}

impl Segment {
    /// Creates a new segment in `dir`, preallocated to `capacity`.
    pub fn create(dir: &Path, base: u64, capacity: u64) -> io::Result<Segment> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if let Err(e) = preallocate(&file, 0, capacity) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        sync_dir(dir)?;
        Self::with_file(file, path, base, capacity)
    }

    /// Opens an existing segment, growing it back to `capacity` if it is shorter.
    pub fn open(path: PathBuf, base: u64, capacity: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = file.metadata()?.len();
        if len < capacity {
            preallocate(&file, len, capacity - len)?;
        }
        Self::with_file(file, path, base, capacity)
    }

    fn with_file(file: File, path: PathBuf, base: u64, capacity: u64) -> io::Result<Segment> {
        let map = mmap::map_read(&file)?;
        if (map.len() as u64) < capacity {
            return Err(io::Error::other(format!(
                "segment {} is shorter than its capacity",
                path.display()
            )));
        }
        Ok(Segment {
            base,
            capacity,
            file,
            map,
            path,
        })
    }

    /// Commit-log offset just past the segment.
    pub fn end(&self) -> u64 {
        self.base + self.capacity
    }

    /// The bytes from segment position `pos` to the end of the segment.
    pub fn bytes_from(&self, pos: u64) -> &[u8] {
        let cap = self.capacity as usize;
        &self.map[(pos as usize).min(cap)..cap]
    }

    /// `len` bytes at segment position `pos`, if the segment holds them.
    pub fn bytes(&self, pos: u64, len: usize) -> Option<&[u8]> {
        let start = pos as usize;
        let end = start.checked_add(len)?;
        (end as u64 <= self.capacity).then(|| &self.map[start..end])
    }

    /// Writes `buf` at segment position `pos`, in one positional write.
    pub fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }

    /// Makes everything from segment position `pos` to the end read as zeros.
    pub fn zero_from(&self, pos: u64) -> io::Result<()> {
        zero_range(&self.file, pos, self.capacity.saturating_sub(pos))
    }

    /// The first stretch `[start, end)` at or after segment position `pos` that may hold
    /// data, or `None` when only holes (never-written or punched ranges, which read as zeros)
    /// remain. A file system that does not report holes gives the whole rest.
    pub fn next_data(&self, pos: u64) -> Option<(u64, u64)> {
        use rustix::fs::{SeekFrom, seek};
        if pos >= self.capacity {
            return None;
        }
        let start = match seek(&self.file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => return None,
            Err(_) => pos,
        };
        if start >= self.capacity {
            return None;
        }
        let end = seek(&self.file, SeekFrom::Hole(start)).unwrap_or(self.capacity);
        Some((start, end.min(self.capacity)))
    }

    /// Lets the page cache go of segment positions `[from, to)`: unmaps them from this
    /// process and asks the kernel to drop them (clean pages only; see `page_cache.rs`).
    pub fn release_cache(&self, from: u64, to: u64) -> io::Result<()> {
        let to = to.min(self.capacity);
        let Some(len) = to.checked_sub(from).and_then(NonZeroU64::new) else {
            return Ok(());
        };
        mmap::release(&self.map, from as usize, len.get() as usize)?;
        rustix::fs::fadvise(&self.file, from, Some(len), rustix::fs::Advice::DontNeed)?;
        Ok(())
    }

    /// fdatasync: the data written so far is on disk once this returns.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// When the segment was last written.
    pub fn modified(&self) -> io::Result<SystemTime> {
        self.file.metadata()?.modified()
    }

    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let name = file_name(1 << 30);
        assert_eq!(name, "00000000001073741824");
        assert_eq!(parse_file_name(Path::new(&name)), Some(1 << 30));
        assert_eq!(parse_file_name(Path::new("0001")), None);
        assert_eq!(parse_file_name(Path::new("0000000000000000000x")), None);
    }

    #[test]
    fn end_marker_is_not_a_record() {
        let marker = end_marker(100);
        assert!(is_end_marker(&marker));
        assert_ne!(marker[4], weir_proto::batch::MAGIC);
        assert!(!is_end_marker(&[0u8; 8]));
    }

    #[test]
    fn segment_is_preallocated_and_zeroable() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let seg = Segment::create(dir.path(), 4096, 8192)?;
        assert_eq!(std::fs::metadata(seg.path())?.len(), 8192);
        seg.write_at(10, b"hello")?;
        assert_eq!(seg.bytes(10, 5), Some(&b"hello"[..]));
        seg.zero_from(12)?;
        assert_eq!(seg.bytes(10, 5), Some(&b"he\0\0\0"[..]));
        assert_eq!(seg.end(), 4096 + 8192);
        assert!(seg.bytes(8190, 5).is_none());
        Ok(())
    }

    #[test]
    fn bytes_let_go_of_read_back_the_same() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let capacity = 1 << 20;
        let seg = Segment::create(dir.path(), 0, capacity)?;
        let data: Vec<u8> = (0..capacity).map(|i| (i % 251) as u8).collect();
        seg.write_at(0, &data)?;
        // Read through the map first, so the released pages are mapped and cached.
        assert_eq!(seg.bytes(0, data.len()), Some(&data[..]));
        seg.sync()?;
        seg.release_cache(4096 + 17, capacity - 100)?;
        seg.release_cache(0, 0)?;
        seg.release_cache(capacity, capacity + 4096)?;
        assert_eq!(seg.bytes(0, data.len()), Some(&data[..]));
        Ok(())
    }
}

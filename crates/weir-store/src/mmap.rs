//! The crate's only `unsafe`: memory maps of its own files.
//!
//! Commit-log segments are mapped read-only and read only below the written position; key-index
//! files are mapped read-write. Both kinds of file are created by the store at their full size
//! with `fallocate` (so a write to the mapping never needs a block the disk does not have),
//! they are never shrunk while mapped (a cut zeroes bytes or punches holes, keeping the size),
//! and the data directory is held under an exclusive lock so no other Weir process writes them.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut};

/// Maps the whole of `file` read-only.
pub(crate) fn map_read(file: &File) -> io::Result<Mmap> {
    // SAFETY: the file is a store-owned segment, preallocated to its full length and never
    // truncated below it while mapped (see the module doc); other processes are kept out by the
    // data-directory lock. Bytes that the writer changes concurrently are only read after the
    // written position has been published past them.
    unsafe { Mmap::map(file) }
}

/// Unmaps `[offset, offset + len)` of a read-only file map from this process (the start is
/// rounded down to a page); the next read there faults the file's bytes in again.
pub(crate) fn release(map: &Mmap, offset: usize, len: usize) -> io::Result<()> {
    // SAFETY: `map` is a shared, read-only map of a store-owned file (see `map_read`).
    // MADV_DONTNEED only drops this process's page-table entries for the range; a later read
    // (by a thread holding a slice into it meanwhile, too) faults in the same file bytes, as
    // the released range lies below the flushed position and is never written again.
    unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) }
}

/// Maps the whole of `file` read-write.
pub(crate) fn map_write(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the file is a store-owned key-index file, preallocated to its full length and
    // never truncated while mapped; all writes go through the one `&mut` owner under the
    // index's lock, and other processes are kept out by the data-directory lock.
    unsafe { MmapMut::map_mut(file) }
}

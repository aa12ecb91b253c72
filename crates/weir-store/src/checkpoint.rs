//! The checkpoint: how far the commit log is known to be durable and fully indexed.
//!
//! Written by the checkpointer after it has made sure that the commit log up to `dispatched`,
//! the consume queues and the key index are all on disk. Recovery trusts everything before
//! `dispatched` and re-verifies and re-indexes from there, so its time grows with the data
//! written since the last checkpoint, not with the size of the log.
//!
//! ```text
//! data_dir/checkpoint (52 bytes, little-endian)
//! offset size field
//!  0     4    magic "WCKP"
//!  4     4    version u32 = 3
//!  8     8    dispatched u64     commit-log offset indexed (and durable) up to
//! 16     8    index_base u64     newest key-index file, u64::MAX for none
//! 24     4    index_count u32    entries in that file
//! 28     8    log_end u64        the log ends here: a cut in progress; u64::MAX for none
//! 36     4    queue_count u32    consume queues holding entries below `dispatched`
//! 40     8    queue_entries u64  the sum of their end offsets
//! 48     4    crc u32            CRC32C of bytes 0..48
//! ```
//!
//! `queue_count` and `queue_entries` let an open notice consume queues that were deleted or
//! cut behind the store's back: the queues it finds must add up to them, or they are rebuilt
//! from the log.
//!
//! Versions 1 (32 bytes: no `log_end`, the CRC at 28) and 2 (40 bytes: no queue totals, the
//! CRC at 36) are still read. `log_end` is set only
//! while `Store::truncate_from` cuts the log: recovery then drops every byte from there even
//! if the cut did not finish, and the checkpoint is written again without it once the cut is
//! on disk, before anything new is appended.
//!
//! Written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`, and the directory fsynced,
//! so a crash leaves either the old or the new checkpoint, never a torn one.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::key_index::IndexMark;
use crate::segment::sync_dir;

const MAGIC: &[u8; 4] = b"WCKP";
const VERSION: u32 = 3;
const LEN: usize = 52;
const LEN_V1: usize = 32;
const LEN_V2: usize = 40;
/// `log_end` when no cut is in progress.
const NO_END: u64 = u64::MAX;

/// The checkpoint's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Commit-log offset up to which everything is durable and indexed.
    pub dispatched: u64,
    /// The key index at that point.
    pub index: IndexMark,
    /// Set while the log is being cut here: nothing at or after it is part of the log.
    pub log_end: Option<u64>,
    /// The consume queues at that point, if the file records them (version 3).
    pub queues: Option<QueueTotals>,
}

/// What the consume queues added up to when a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct QueueTotals {
    /// Queues holding at least one entry.
    pub count: u32,
    /// The sum of their end offsets.
    pub entries: u64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.dispatched.to_le_bytes());
        b[16..24].copy_from_slice(&self.index.base.to_le_bytes());
        b[24..28].copy_from_slice(&self.index.count.to_le_bytes());
        b[28..36].copy_from_slice(&self.log_end.unwrap_or(NO_END).to_le_bytes());
        let totals = self.queues.unwrap_or_default();
        b[36..40].copy_from_slice(&totals.count.to_le_bytes());
        b[40..48].copy_from_slice(&totals.entries.to_le_bytes());
        let crc = crc32c::crc32c(&b[..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        if b.get(0..4)? != MAGIC {
            return None;
        }
        let (crc_at, log_end, queues) = match (u32_at(4)?, b.len()) {
            (1, LEN_V1) => (28, NO_END, None),
            (2, LEN_V2) => (36, u64_at(28)?, None),
            (VERSION, LEN) => (
                48,
                u64_at(28)?,
                Some(QueueTotals {
                    count: u32_at(36)?,
                    entries: u64_at(40)?,
                }),
            ),
            _ => return None,
        };
        if u32_at(crc_at)? != crc32c::crc32c(&b[..crc_at]) {
            return None;
        }
        Some(Checkpoint {
            dispatched: u64_at(8)?,
            index: IndexMark {
                base: u64_at(16)?,
                count: u32_at(24)?,
            },
            log_end: (log_end != NO_END).then_some(log_end),
            queues,
        })
    }

    /// Reads `data_dir/checkpoint`; `None` if it is missing or corrupt.
    pub fn load(data_dir: &Path) -> Option<Checkpoint> {
        let bytes = std::fs::read(data_dir.join("checkpoint")).ok()?;
        let cp = Checkpoint::decode(&bytes);
        if cp.is_none() {
            tracing::warn!("checkpoint is corrupt; recovering from the first segment");
        }
        cp
    }

    /// Atomically replaces `data_dir/checkpoint`.
    pub fn store(&self, data_dir: &Path) -> io::Result<()> {
        let tmp = data_dir.join("checkpoint.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&self.encode())?;
        file.sync_all()?;
        std::fs::rename(&tmp, data_dir.join("checkpoint"))?;
        sync_dir(data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(Checkpoint::load(dir.path()), None);
        for log_end in [None, Some(12345)] {
            let cp = Checkpoint {
                dispatched: 12345,
                index: IndexMark {
                    base: 100,
                    count: 7,
                },
                log_end,
                queues: Some(QueueTotals {
                    count: 3,
                    entries: 99,
                }),
            };
            cp.store(dir.path())?;
            assert_eq!(Checkpoint::load(dir.path()), Some(cp));
        }
        let mut bytes = std::fs::read(dir.path().join("checkpoint"))?;
        bytes[9] ^= 1;
        std::fs::write(dir.path().join("checkpoint"), bytes)?;
        assert_eq!(Checkpoint::load(dir.path()), None);
        Ok(())
    }

    #[test]
    fn version_1_files_are_read() {
        let mut b = [0u8; LEN_V1];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&77u64.to_le_bytes());
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        let cp = Checkpoint::decode(&b);
        assert_eq!(cp.map(|c| (c.dispatched, c.log_end)), Some((77, None)));
    }
}

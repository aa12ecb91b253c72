//! The checkpoint: how far the commit log is known to be durable and fully indexed.
//!
//! Written by the checkpointer after it has made sure that the commit log up to `dispatched`,
//! the consume queues and the key index are all on disk. Recovery trusts everything before
//! `dispatched` and re-verifies and re-indexes from there, so its time grows with the data
//! written since the last checkpoint, not with the size of the log.
//!
//! ```text
//! data_dir/checkpoint (32 bytes, little-endian)
//! offset size field
//!  0     4    magic "WCKP"
//!  4     4    version u32 = 1
//!  8     8    dispatched u64     commit-log offset indexed (and durable) up to
//! 16     8    index_base u64     newest key-index file, u64::MAX for none
//! 24     4    index_count u32    entries in that file
//! 28     4    crc u32            CRC32C of bytes 0..28
//! ```
//!
//! Written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`, and the directory fsynced,
//! so a crash leaves either the old or the new checkpoint, never a torn one.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::key_index::IndexMark;
use crate::segment::sync_dir;

const MAGIC: &[u8; 4] = b"WCKP";
const VERSION: u32 = 1;
const LEN: usize = 32;

/// The checkpoint's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Commit-log offset up to which everything is durable and indexed.
    pub dispatched: u64,
    /// The key index at that point.
    pub index: IndexMark,
}

impl Checkpoint {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.dispatched.to_le_bytes());
        b[16..24].copy_from_slice(&self.index.base.to_le_bytes());
        b[24..28].copy_from_slice(&self.index.count.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != LEN || &b[0..4] != MAGIC {
            return None;
        }
        let mut u4 = [0u8; 4];
        let mut u8b = [0u8; 8];
        u4.copy_from_slice(&b[28..32]);
        if u32::from_le_bytes(u4) != crc32c::crc32c(&b[..28]) {
            return None;
        }
        u4.copy_from_slice(&b[4..8]);
        if u32::from_le_bytes(u4) != VERSION {
            return None;
        }
        u8b.copy_from_slice(&b[8..16]);
        let dispatched = u64::from_le_bytes(u8b);
        u8b.copy_from_slice(&b[16..24]);
        let base = u64::from_le_bytes(u8b);
        u4.copy_from_slice(&b[24..28]);
        Some(Checkpoint {
            dispatched,
            index: IndexMark {
                base,
                count: u32::from_le_bytes(u4),
            },
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
        let cp = Checkpoint {
            dispatched: 12345,
            index: IndexMark {
                base: 100,
                count: 7,
            },
        };
        cp.store(dir.path())?;
        assert_eq!(Checkpoint::load(dir.path()), Some(cp));
        let mut bytes = std::fs::read(dir.path().join("checkpoint"))?;
        bytes[9] ^= 1;
        std::fs::write(dir.path().join("checkpoint"), bytes)?;
        assert_eq!(Checkpoint::load(dir.path()), None);
        Ok(())
    }
}

//! Producer ids for idempotent producers, never handed out twice, also across restarts.
//!
//! Ids are reserved in blocks: `config/producer_ids.json` holds `{"next_block": N}`, the first
//! id not yet reserved. Taking the first id of a block writes the file (atomically, fsynced)
//! with the block's end before the id is handed out, so after a crash the broker starts at the
//! next block; ids of a block in use at the crash are skipped, never reused.
//!
//! In a broker group only the leader hands out ids, one term at a time: an id is the term in
//! its high 32 bits and a counter of that term in the low ones, so two leaders (of two terms,
//! or one that lost its data directory) never hand out the same id, with nothing to
//! replicate.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::error::BrokerError;

/// Ids reserved per file write.
const BLOCK: u64 = 1000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    next_block: u64,
}

/// Hands out producer ids.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block).
    state: Mutex<(u64, u64)>,
    /// In a broker group: (the term ids are handed out in, ids handed out in it).
    term: Mutex<(u64, u64)>,
}

impl ProducerIds {
    /// Loads the reservation file under `data_dir` (ids start at 1 when it is absent).
    pub fn load(data_dir: &Path) -> Result<ProducerIds, BrokerError> {
        let path = data_dir.join("config").join("producer_ids.json");
        let file: File = match atomic_file::read_if_exists(&path)
            .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?,
            None => File::default(),
        };
        let next = file.next_block.max(1);
        Ok(ProducerIds {
            path,
            state: Mutex::new((next, next)),
            term: Mutex::new((0, 0)),
        })
    }

    /// A producer id never handed out before in a broker group, by its leader of `term`.
    pub fn allocate_in_term(&self, term: u64) -> Result<u64, BrokerError> {
        let mut now = self.term.lock();
        if now.0 != term {
            *now = (term, 0);
        }
        now.1 += 1;
        if term >= 1 << 31 || now.1 >= 1 << 32 {
            return Err(BrokerError::Config(format!(
                "producer ids of term {term} are used up"
            )));
        }
        Ok(term << 32 | now.1)
    }

    /// A producer id never handed out before.
    pub fn allocate(&self) -> Result<u64, BrokerError> {
        let mut state = self.state.lock();
        if state.0 >= state.1 {
            let end = state.0 + BLOCK;
            let json = serde_json::to_vec(&File { next_block: end })
                .map_err(|e| BrokerError::Config(format!("encoding producer ids: {e}")))?;
            // Durable before any id of the block leaves the broker. Rare (once per BLOCK ids),
            // so it runs inline.
            atomic_file::write_atomic(&self.path, &json)
                .map_err(|e| BrokerError::io(self.path.display(), e))?;
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ids = ProducerIds::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let a = ids.allocate().unwrap_or_else(|e| panic!("{e}"));
        let b = ids.allocate().unwrap_or_else(|e| panic!("{e}"));
        assert!(a >= 1 && b > a);
        drop(ids);
        let ids = ProducerIds::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let c = ids.allocate().unwrap_or_else(|e| panic!("{e}"));
        assert!(c > b);
    }

    #[test]
    fn leaders_of_different_terms_never_share_an_id() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ids = ProducerIds::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let a = ids.allocate_in_term(3).unwrap_or_else(|e| panic!("{e}"));
        let b = ids.allocate_in_term(3).unwrap_or_else(|e| panic!("{e}"));
        // Another replica (or this one with an empty data directory) leading term 4.
        let other = ProducerIds::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let c = other.allocate_in_term(4).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a, b), (3 << 32 | 1, 3 << 32 | 2));
        assert_eq!(c, 4 << 32 | 1);
        assert!(i64::try_from(c).is_ok(), "a Kafka producer id is an i64");
    }
}

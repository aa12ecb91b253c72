//! Which `%DELAY%` records are delivered: all queue offsets below `low`, plus listed ranges.
//!
//! ```text
//! config/delay_progress.json: {"low": 1200, "done": [[1205, 1210], [1300, 1301]]}
//!                             (ranges are [start, end) queue offsets of %DELAY% queue 0)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::error::BrokerError;

/// Delivered `%DELAY%` queue offsets: all below `low`, and the `[start, end)` ranges in `done`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Progress {
    low: u64,
    done: BTreeMap<u64, u64>,
}

#[derive(Serialize, Deserialize)]
struct ProgressFile {
    low: u64,
    done: Vec<(u64, u64)>,
}

impl Progress {
    /// Whether `offset` is delivered.
    pub(super) fn is_done(&self, offset: u64) -> bool {
        offset < self.low
            || self
                .done
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, end)| offset < *end)
    }

    /// Records `offset` as delivered.
    pub(super) fn mark(&mut self, offset: u64) {
        if self.is_done(offset) {
            return;
        }
        let (mut start, mut end) = (offset, offset + 1);
        if let Some((&s, &e)) = self.done.range(..offset).next_back()
            && e == offset
        {
            self.done.remove(&s);
            start = s;
        }
        if let Some(e) = self.done.remove(&end) {
            end = e;
        }
        if start == self.low {
            self.low = end;
        } else {
            self.done.insert(start, end);
        }
    }

    /// Reads the file at `path` (nothing delivered when it is absent).
    pub(super) fn load(path: &Path) -> Result<Progress, BrokerError> {
        let Some(bytes) = atomic_file::read_if_exists(path)
            .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
        else {
            return Ok(Progress::default());
        };
        let file: ProgressFile = serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?;
        let mut progress = Progress {
            low: file.low,
            done: BTreeMap::new(),
        };
        progress.done.extend(
            file.done
                .into_iter()
                .filter(|(s, e)| s < e && *s > file.low),
        );
        Ok(progress)
    }

    /// The file's contents.
    pub(super) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&ProgressFile {
            low: self.low,
            done: self.done.iter().map(|(s, e)| (*s, *e)).collect(),
        })
    }

    /// The lowest offset not known to be delivered.
    pub(super) fn low(&self) -> u64 {
        self.low
    }
}

/// The delivery progress and its file, shared by the delayed-message service and (in a broker
/// group) the state changes that carry the leader's deliveries to every replica.
#[derive(Debug)]
pub(crate) struct DelayProgress {
    progress: Mutex<Progress>,
    dirty: AtomicBool,
    path: PathBuf,
}

impl DelayProgress {
    /// Reads `config/delay_progress.json` under `data_dir` (nothing delivered when absent).
    pub(crate) fn load(data_dir: &Path) -> Result<DelayProgress, BrokerError> {
        let path = data_dir.join("config").join("delay_progress.json");
        Ok(DelayProgress {
            progress: Mutex::new(Progress::load(&path)?),
            dirty: AtomicBool::new(false),
            path,
        })
    }

    /// The progress, locked.
    pub(super) fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock()
    }

    /// Records the `%DELAY%` queue offsets as delivered.
    pub(crate) fn mark_all(&self, offsets: impl IntoIterator<Item = u64>) {
        let mut progress = self.progress.lock();
        for offset in offsets {
            progress.mark(offset);
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Writes the file if the progress changed.
    pub(crate) fn persist(&self) -> Result<(), BrokerError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let json = self.progress.lock().to_json();
        let json = json.map_err(|e| BrokerError::Config(format!("delay progress: {e}")))?;
        atomic_file::write_atomic(&self.path, &json).map_err(|e| {
            self.dirty.store(true, Ordering::Release);
            BrokerError::io(format!("writing {}", self.path.display()), e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_merges_ranges_and_moves_low() {
        let mut p = Progress::default();
        for offset in [3, 1, 2, 7, 5] {
            p.mark(offset);
        }
        assert_eq!(p.low, 0);
        assert_eq!(
            p.done.iter().map(|(s, e)| (*s, *e)).collect::<Vec<_>>(),
            vec![(1, 4), (5, 6), (7, 8)]
        );
        p.mark(0);
        assert_eq!(p.low, 4);
        p.mark(4);
        p.mark(6);
        assert_eq!(p.low, 8);
        assert!(p.done.is_empty());
        assert!(p.is_done(7) && !p.is_done(8));
    }

    #[test]
    fn progress_round_trips_through_its_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.json");
        let mut p = Progress::default();
        for offset in [0, 1, 5, 6, 9] {
            p.mark(offset);
        }
        atomic_file::write_atomic(&path, &p.to_json()?)?;
        assert_eq!(Progress::load(&path)?, p);
        Ok(())
    }
}

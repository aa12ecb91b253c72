//! Consumer groups' committed offsets, per (group, topic, queue), persisted as JSON in
//! `config/offsets.json`.
//!
//! Commits only touch memory and mark the table dirty; a background task writes the file
//! atomically every second when dirty, and [`OffsetTable::persist`] runs once more at shutdown.
//! A crash can so lose up to a second of commits: consumers then see those messages again
//! (at-least-once), never skip any.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::atomic_file;
use crate::error::BrokerError;

/// group → topic → queue id → offset.
type Offsets = BTreeMap<String, BTreeMap<String, BTreeMap<u32, u64>>>;

/// The committed offsets of every group.
#[derive(Debug)]
pub struct OffsetTable {
    path: PathBuf,
    offsets: Mutex<Offsets>,
    dirty: AtomicBool,
    /// Serialises file writes so an older snapshot never overwrites a newer one.
    write_lock: Mutex<()>,
}

impl OffsetTable {
    /// Loads `config/offsets.json` under `data_dir`; when absent, writes it empty, so that a
    /// missing file later means a lost one (see `offsets_check.rs`).
    pub fn load(data_dir: &Path) -> Result<OffsetTable, BrokerError> {
        let path = data_dir.join("config").join("offsets.json");
        let offsets = match atomic_file::read_if_exists(&path)
            .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?,
            None => {
                atomic_file::write_atomic(&path, b"{}")
                    .map_err(|e| BrokerError::io(format!("writing {}", path.display()), e))?;
                Offsets::new()
            }
        };
        Ok(OffsetTable {
            path,
            offsets: Mutex::new(offsets),
            dirty: AtomicBool::new(false),
            write_lock: Mutex::new(()),
        })
    }

    /// The group's committed offset for a queue.
    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.offsets
            .lock()
            .get(group)
            .and_then(|t| t.get(topic))
            .and_then(|q| q.get(&queue_id))
            .copied()
    }

    /// Sets the group's offset for a queue.
    pub fn set(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut offsets = self.offsets.lock();
        offsets
            .entry(group.to_owned())
            .or_default()
            .entry(topic.to_owned())
            .or_default()
            .insert(queue_id, offset);
        self.dirty.store(true, Ordering::Release);
    }

    /// Every committed offset of a group: (topic, queue id, offset).
    pub fn group_offsets(&self, group: &str) -> Vec<(String, u32, u64)> {
        let offsets = self.offsets.lock();
        let Some(topics) = offsets.get(group) else {
            return Vec::new();
        };
        topics
            .iter()
            .flat_map(|(topic, queues)| queues.iter().map(move |(q, o)| (topic.clone(), *q, *o)))
            .collect()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.offsets.lock().keys().cloned().collect()
    }

    /// Forgets every group's offsets on a topic (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        let mut offsets = self.offsets.lock();
        for topics in offsets.values_mut() {
            if topics.remove(topic).is_some() {
                self.dirty.store(true, Ordering::Release);
            }
        }
        offsets.retain(|_, topics| !topics.is_empty());
    }

    /// Writes the table to disk if it changed since the last write.
    pub fn persist(&self) -> Result<(), BrokerError> {
        let _serial = self.write_lock.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&*self.offsets.lock())
            .map_err(|e| BrokerError::Config(format!("encoding offsets: {e}")))?;
        atomic_file::write_atomic(&self.path, &json).map_err(|e| {
            // Try again on the next tick.
            self.dirty.store(true, Ordering::Release);
            BrokerError::io(format!("writing {}", self.path.display()), e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_only_what_was_set() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let table = OffsetTable::load(dir.path())?;
        table.set("g", "t", 3, 42);
        table.set("g", "u", 0, 7);
        table.remove_topic("u");
        table.persist()?;
        let again = OffsetTable::load(dir.path())?;
        assert_eq!(again.get("g", "t", 3), Some(42));
        assert_eq!(again.get("g", "u", 0), None);
        assert_eq!(again.groups(), vec!["g".to_owned()]);
        Ok(())
    }
}

//! Consumer groups' committed offsets, per (group, topic, queue), persisted as JSON in
//! `config/offsets.json`. Native and Kafka groups share this table, so a committed offset is
//! the same number for both protocols.
//!
//! ```text
//! { "<group>": { "<topic>": { "<queue id>": 42,                                  <- plain
//!                             "<queue id>": { "offset": 7, "metadata": "..." } } } } <- Kafka
//! ```
//!
//! An offset committed with a metadata string (Kafka's OffsetCommit carries one) is stored as
//! an object, every other one as a plain number; a later commit without metadata (native, or
//! Kafka with an empty string) drops the string.
//!
//! A consumer's commit (native or Kafka, on a standalone broker) is written before it is
//! answered, and before anyone can read it ([`OffsetTable::set_durably`]): a crash never
//! takes back a commit that was answered or shown. Commits that arrive while a write is under
//! way wait for the next one and share it, so a burst of commits costs a few writes, not one
//! each. Other changes (a reset, a deleted topic, a broker group's replicated commits, which
//! its log already keeps) touch memory and mark the table dirty; a background task writes the
//! file atomically every second when dirty, and [`OffsetTable::persist`] runs once more at
//! shutdown.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::error::BrokerError;

/// group → topic → queue id → offset.
type Offsets = BTreeMap<String, BTreeMap<String, BTreeMap<u32, Committed>>>;

/// One committed offset, as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Committed {
    /// An offset alone (what every commit without metadata stores).
    Plain(u64),
    /// An offset with the committer's metadata string (Kafka's commit metadata).
    WithMetadata {
        /// The offset.
        offset: u64,
        /// The committer's string, returned by OffsetFetch.
        metadata: String,
    },
}

impl Committed {
    fn offset(&self) -> u64 {
        match self {
            Committed::Plain(offset) | Committed::WithMetadata { offset, .. } => *offset,
        }
    }

    fn metadata(&self) -> &str {
        match self {
            Committed::Plain(_) => "",
            Committed::WithMetadata { metadata, .. } => metadata,
        }
    }
}

/// One commit of a queue: (topic, queue id, offset, metadata; empty when none).
pub type QueueCommit = (String, u32, u64, String);

/// What became of a waiting commit's write: `Ok`, or why the write failed.
type Outcome = Arc<OnceLock<Result<(), (io::ErrorKind, String)>>>;

/// A group's commits waiting for the next write, and where their outcome goes.
type Waiting = (String, Vec<QueueCommit>, Outcome);

/// The committed offsets of every group.
#[derive(Debug)]
pub struct OffsetTable {
    path: PathBuf,
    offsets: Mutex<Offsets>,
    dirty: AtomicBool,
    /// Serialises file writes so an older snapshot never overwrites a newer one.
    write_lock: Mutex<()>,
    /// Durable commits not yet written; the next writer takes them all.
    waiting: Mutex<Vec<Waiting>>,
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
            waiting: Mutex::new(Vec::new()),
        })
    }

    /// The group's committed offset for a queue.
    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.offsets
            .lock()
            .get(group)
            .and_then(|t| t.get(topic))
            .and_then(|q| q.get(&queue_id))
            .map(Committed::offset)
    }

    /// The group's committed offset for a queue with its metadata string (empty when the
    /// commit carried none).
    pub fn get_with_metadata(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
    ) -> Option<(u64, String)> {
        self.offsets
            .lock()
            .get(group)
            .and_then(|t| t.get(topic))
            .and_then(|q| q.get(&queue_id))
            .map(|c| (c.offset(), c.metadata().to_owned()))
    }

    /// Sets the group's offset for a queue (dropping any metadata string).
    pub fn set(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        self.set_with_metadata(group, topic, queue_id, offset, "");
    }

    /// Sets the group's offset for a queue with a metadata string (stored only when not empty).
    pub fn set_with_metadata(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        metadata: &str,
    ) {
        let mut offsets = self.offsets.lock();
        insert(
            &mut offsets,
            group,
            topic,
            queue_id,
            committed(offset, metadata),
        );
        self.dirty.store(true, Ordering::Release);
    }

    /// Sets a group's offsets for queues (with their metadata strings), on disk before in the
    /// table: nobody reads an offset that a crash could take back (what `set` leaves to the
    /// next write, up to a second). Blocks until written; call it off the async threads.
    ///
    /// Callers that arrive while a write is under way queue their commits; the first of them
    /// to get the file writes them all in one go, and each learns its outcome. A failed write
    /// changes nothing in the table, and every commit it carried is refused.
    pub fn set_durably(&self, group: &str, commits: &[QueueCommit]) -> Result<(), BrokerError> {
        let outcome = Outcome::default();
        self.waiting
            .lock()
            .push((group.to_owned(), commits.to_vec(), outcome.clone()));
        let _serial = self.write_lock.lock();
        // Answered by an earlier writer, or still waiting: then we write all that waits (ours
        // among it) and answer each.
        let written = outcome.get().cloned().unwrap_or_else(|| {
            let batch = std::mem::take(&mut *self.waiting.lock());
            let written = self.write_with(&batch);
            for (_, _, waiter) in &batch {
                let _ = waiter.set(written.clone());
            }
            written
        });
        written.map_err(|(kind, why)| {
            BrokerError::io(
                format!("writing {}", self.path.display()),
                io::Error::new(kind, why),
            )
        })
    }

    /// Writes the table with `batch` applied, then applies it to the table.
    fn write_with(&self, batch: &[Waiting]) -> Result<(), (io::ErrorKind, String)> {
        let json = {
            let mut next = self.offsets.lock().clone();
            for (group, commits, _) in batch {
                insert_all(&mut next, group, commits);
            }
            serde_json::to_vec_pretty(&next)
                .map_err(|e| (io::ErrorKind::InvalidData, format!("encoding offsets: {e}")))?
        };
        atomic_file::write_atomic(&self.path, &json).map_err(|e| (e.kind(), e.to_string()))?;
        let mut offsets = self.offsets.lock();
        for (group, commits, _) in batch {
            insert_all(&mut offsets, group, commits);
        }
        Ok(())
    }

    /// Every committed offset of a group: (topic, queue id, offset).
    pub fn group_offsets(&self, group: &str) -> Vec<(String, u32, u64)> {
        self.group_offsets_with_metadata(group)
            .into_iter()
            .map(|(topic, queue, offset, _)| (topic, queue, offset))
            .collect()
    }

    /// Every committed offset of a group with its metadata string: (topic, queue id, offset,
    /// metadata).
    pub fn group_offsets_with_metadata(&self, group: &str) -> Vec<(String, u32, u64, String)> {
        let offsets = self.offsets.lock();
        let Some(topics) = offsets.get(group) else {
            return Vec::new();
        };
        topics
            .iter()
            .flat_map(|(topic, queues)| {
                queues
                    .iter()
                    .map(move |(q, c)| (topic.clone(), *q, c.offset(), c.metadata().to_owned()))
            })
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

/// Puts one committed offset into `offsets`.
fn insert(offsets: &mut Offsets, group: &str, topic: &str, queue_id: u32, committed: Committed) {
    offsets
        .entry(group.to_owned())
        .or_default()
        .entry(topic.to_owned())
        .or_default()
        .insert(queue_id, committed);
}

/// Puts a group's commits into `offsets`.
fn insert_all(offsets: &mut Offsets, group: &str, commits: &[QueueCommit]) {
    for (topic, queue_id, offset, metadata) in commits {
        insert(
            offsets,
            group,
            topic,
            *queue_id,
            committed(*offset, metadata),
        );
    }
}

/// An offset as stored: plain, or with its metadata string when there is one.
fn committed(offset: u64, metadata: &str) -> Committed {
    if metadata.is_empty() {
        Committed::Plain(offset)
    } else {
        Committed::WithMetadata {
            offset,
            metadata: metadata.to_owned(),
        }
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

    #[test]
    fn a_durable_commit_is_read_only_once_it_is_on_disk() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let table = OffsetTable::load(dir.path())?;
        table.set_durably(
            "g",
            &[
                ("t".to_owned(), 0, 10, String::new()),
                ("t".to_owned(), 1, 11, "m".to_owned()),
            ],
        )?;
        assert_eq!(table.get("g", "t", 1), Some(11));
        let again = OffsetTable::load(dir.path())?;
        assert_eq!(again.get("g", "t", 0), Some(10));
        assert_eq!(
            again.get_with_metadata("g", "t", 1),
            Some((11, "m".to_owned()))
        );

        // A write that fails leaves the table as it was: the commit is refused, not shown.
        std::fs::remove_dir_all(dir.path().join("config"))?;
        std::fs::write(dir.path().join("config"), b"not a directory")?;
        assert!(
            table
                .set_durably("g", &[("t".to_owned(), 0, 20, String::new())])
                .is_err()
        );
        assert_eq!(table.get("g", "t", 0), Some(10));
        Ok(())
    }

    /// Commits from many threads at once share writes; each one is answered only once it is
    /// in the file, and every one is there after a reload.
    #[test]
    fn concurrent_durable_commits_all_reach_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let table = Arc::new(OffsetTable::load(dir.path())?);
        let threads: Vec<_> = (0..8u32)
            .map(|queue| {
                let table = table.clone();
                std::thread::spawn(move || -> Result<(), BrokerError> {
                    for offset in 1..=20u64 {
                        let group = format!("g{}", queue % 3);
                        let commit = ("t".to_owned(), queue, offset, format!("m{offset}"));
                        table.set_durably(&group, &[commit])?;
                        // Answered: on disk (a reload sees it) and in the table.
                        assert_eq!(table.get(&group, "t", queue), Some(offset));
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread.join().map_err(|_| "a committer panicked")??;
        }
        let again = OffsetTable::load(dir.path())?;
        for queue in 0..8u32 {
            let group = format!("g{}", queue % 3);
            assert_eq!(
                again.get_with_metadata(&group, "t", queue),
                Some((20, "m20".to_owned()))
            );
        }
        assert!(table.waiting.lock().is_empty());
        Ok(())
    }

    #[test]
    fn metadata_survives_a_reload_and_a_plain_commit_drops_it()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let table = OffsetTable::load(dir.path())?;
        table.set("g", "t", 0, 5);
        table.set_with_metadata("g", "t", 1, 9, "{\"owner\":\"a\"}");
        table.set_with_metadata("g", "t", 2, 3, "dropped later");
        table.set("g", "t", 2, 4);
        table.persist()?;
        let text = std::fs::read_to_string(dir.path().join("config/offsets.json"))?;
        // Offsets without metadata keep the plain-number layout older brokers wrote.
        assert!(text.contains("\"0\": 5"), "{text}");
        let again = OffsetTable::load(dir.path())?;
        assert_eq!(
            again.get_with_metadata("g", "t", 0),
            Some((5, String::new()))
        );
        assert_eq!(
            again.get_with_metadata("g", "t", 1),
            Some((9, "{\"owner\":\"a\"}".to_owned()))
        );
        assert_eq!(
            again.get_with_metadata("g", "t", 2),
            Some((4, String::new()))
        );
        assert_eq!(again.get("g", "t", 1), Some(9));
        assert_eq!(
            again.group_offsets_with_metadata("g"),
            vec![
                ("t".to_owned(), 0, 5, String::new()),
                ("t".to_owned(), 1, 9, "{\"owner\":\"a\"}".to_owned()),
                ("t".to_owned(), 2, 4, String::new()),
            ]
        );
        Ok(())
    }
}

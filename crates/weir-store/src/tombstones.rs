//! Deleted topics, so that recovery never brings their queues back.
//!
//! Deleting a topic drops its consume queues, but its records stay in the commit log until
//! retention takes their segments. A recovery that re-dispatches those records (a full scan
//! without a checkpoint, or from a checkpoint older than the deletion) would build the queues
//! again — and if the topic was created anew meanwhile, mix the old records into its queues.
//! So each deletion leaves a tombstone: the commit-log offset where the log ended when the
//! topic was deleted. Dispatch skips a record of that topic stored before its tombstone.
//!
//! ```text
//! data_dir/deleted_topics (text, one line per deleted topic)
//!   <commit-log offset, decimal> <topic>\n
//! ```
//!
//! Replaced atomically (`deleted_topics.tmp`, fsync, rename, fsync of the directory). A
//! tombstone is dropped once retention has removed every segment below its offset.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::segment::sync_dir;

/// The tombstones of deleted topics: topic → commit-log offset of the deletion.
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    dir: PathBuf,
    by_topic: HashMap<String, u64>,
    /// The highest tombstone offset: records at or past it are never skipped (one comparison
    /// per record on the dispatch path).
    max: u64,
}

impl Tombstones {
    /// Reads `data_dir/deleted_topics` (none when it is absent). A line that does not parse
    /// is an error: skipping it could bring a deleted topic back.
    pub fn load(data_dir: &Path) -> io::Result<Tombstones> {
        let mut tombstones = Tombstones {
            dir: data_dir.to_owned(),
            ..Tombstones::default()
        };
        let text = match std::fs::read_to_string(data_dir.join("deleted_topics")) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(tombstones),
            Err(e) => return Err(e),
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let parsed = line
                .split_once(' ')
                .and_then(|(offset, topic)| Some((offset.parse::<u64>().ok()?, topic)));
            let Some((offset, topic)) = parsed else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("deleted_topics: bad line {line:?}"),
                ));
            };
            tombstones.insert(topic, offset);
        }
        Ok(tombstones)
    }

    fn insert(&mut self, topic: &str, offset: u64) {
        self.by_topic.insert(topic.to_owned(), offset);
        self.max = self.max.max(offset);
    }

    /// Whether a record of `topic` at commit-log offset `offset` belongs to a deleted topic.
    pub fn covers(&self, topic: &str, offset: u64) -> bool {
        offset < self.max && self.by_topic.get(topic).is_some_and(|end| offset < *end)
    }

    /// The deleted topics and their offsets.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.by_topic.iter().map(|(t, o)| (t.as_str(), *o))
    }

    /// Records that `topic` was deleted with the log ending at `offset`, on disk before it
    /// returns.
    pub fn add(&mut self, topic: &str, offset: u64) -> io::Result<()> {
        self.insert(topic, offset);
        self.store()
    }

    /// Drops tombstones that no record is left below (the log now starts at `log_min`).
    pub fn prune(&mut self, log_min: u64) -> io::Result<()> {
        let before = self.by_topic.len();
        self.by_topic.retain(|_, offset| *offset > log_min);
        if self.by_topic.len() == before {
            return Ok(());
        }
        self.max = self.by_topic.values().copied().max().unwrap_or(0);
        self.store()
    }

    fn store(&self) -> io::Result<()> {
        let mut text = String::new();
        for (topic, offset) in &self.by_topic {
            text.push_str(&format!("{offset} {topic}\n"));
        }
        let tmp = self.dir.join("deleted_topics.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("deleted_topics"))?;
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_cover_older_records_and_survive_a_reload() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut t = Tombstones::load(dir.path())?;
        assert!(!t.covers("a", 0));
        t.add("a", 100)?;
        t.add("b c", 50)?;
        assert!(t.covers("a", 99) && !t.covers("a", 100) && !t.covers("x", 10));
        let mut again = Tombstones::load(dir.path())?;
        assert!(again.covers("b c", 49) && !again.covers("b c", 50));
        again.prune(60)?;
        let pruned = Tombstones::load(dir.path())?;
        assert_eq!(pruned.iter().collect::<Vec<_>>(), vec![("a", 100)]);
        std::fs::write(dir.path().join("deleted_topics"), "x y\n")?;
        assert!(Tombstones::load(dir.path()).is_err());
        Ok(())
    }
}

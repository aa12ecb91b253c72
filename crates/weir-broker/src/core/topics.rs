//! The topic table: each topic's queue count, persisted as JSON in `config/topics.json`.
//!
//! The table is small and changes rarely, so every change rewrites the whole file atomically
//! before it is acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use weir_proto::ErrorCode;

use crate::atomic_file;
use crate::error::{BrokerError, RequestError};

/// Most queues a topic may have.
pub const MAX_QUEUES: u32 = 1024;
/// One topic's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of queues, ids `0..queues`.
    pub queues: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TopicsFile {
    topics: BTreeMap<String, TopicConfig>,
}

/// Checks a topic name a client asked for (the rule of [`weir_proto::names::validate`]):
/// 1 to 127 characters from `A-Z a-z 0-9 . _ -`, not starting with `%` (internal topics).
pub fn validate_name(name: &str) -> Result<(), RequestError> {
    weir_proto::names::validate(name).map_err(|why| {
        RequestError::new(
            ErrorCode::InvalidTopicName,
            format!("invalid topic name '{name}': {why}"),
        )
    })
}

/// Called after every change of the table (the registrar re-registers the topics).
type ChangeListener = Box<dyn Fn() + Send + Sync>;

/// Topics and their queue counts, kept in memory and mirrored to disk.
pub struct TopicTable {
    path: PathBuf,
    topics: RwLock<BTreeMap<String, TopicConfig>>,
    /// Serialises changes so the file is written in the order the table changed.
    write_lock: Mutex<()>,
    /// Told of every change, so routes follow the table whoever changed it.
    listener: OnceLock<ChangeListener>,
}

impl std::fmt::Debug for TopicTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicTable")
            .field("path", &self.path)
            .field("topics", &self.topics.read().len())
            .finish_non_exhaustive()
    }
}

impl TopicTable {
    /// Loads `config/topics.json` under `data_dir` (empty when absent).
    pub fn load(data_dir: &Path) -> Result<TopicTable, BrokerError> {
        let path = data_dir.join("config").join("topics.json");
        let topics = match atomic_file::read_if_exists(&path)
            .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
        {
            Some(bytes) => {
                serde_json::from_slice::<TopicsFile>(&bytes)
                    .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?
                    .topics
            }
            None => BTreeMap::new(),
        };
        Ok(TopicTable {
            path,
            topics: RwLock::new(topics),
            write_lock: Mutex::new(()),
            listener: OnceLock::new(),
        })
    }

    /// Sets what is called after every change (once; later calls are ignored).
    pub fn on_change(&self, listener: impl Fn() + Send + Sync + 'static) {
        let _ = self.listener.set(Box::new(listener));
    }

    /// The queue count of an internal topic (`%RETRY%<group>`, `%DLQ%<group>`, …), creating
    /// it with one queue on first use.
    pub fn ensure_internal(&self, name: &str) -> Result<u32, RequestError> {
        if let Some(config) = self.get(name) {
            return Ok(config.queues);
        }
        let config = self.get_or_create(name, 1)?;
        tracing::info!(topic = name, "internal topic created");
        Ok(config.queues)
    }

    /// The topic's settings, if it exists.
    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics.read().get(name).copied()
    }

    /// The topic's queue count, or `topic_not_found`.
    pub fn queues(&self, name: &str) -> Result<u32, RequestError> {
        self.get(name).map(|t| t.queues).ok_or_else(|| {
            RequestError::new(
                ErrorCode::TopicNotFound,
                format!("topic '{name}' does not exist"),
            )
        })
    }

    /// Checks that `queue_id` is one of the topic's queues.
    pub fn check_queue(&self, name: &str, queue_id: u32) -> Result<(), RequestError> {
        let queues = self.queues(name)?;
        if queue_id >= queues {
            return Err(RequestError::new(
                ErrorCode::QueueNotFound,
                format!("topic '{name}' has queues 0..{queues}, not {queue_id}"),
            ));
        }
        Ok(())
    }

    /// Every topic, by name.
    pub fn list(&self) -> Vec<(String, TopicConfig)> {
        self.topics
            .read()
            .iter()
            .map(|(name, config)| (name.clone(), *config))
            .collect()
    }

    /// Creates a topic with `queues` queues (the name is not checked here: internal topics are
    /// created through this too).
    pub fn create(&self, name: &str, queues: u32) -> Result<TopicConfig, RequestError> {
        check_queue_count(queues)?;
        self.change(|topics| {
            if topics.contains_key(name) {
                return Err(RequestError::new(
                    ErrorCode::TopicAlreadyExists,
                    format!("topic '{name}' already exists"),
                ));
            }
            let config = TopicConfig { queues };
            topics.insert(name.to_owned(), config);
            Ok(config)
        })
    }

    /// Returns the topic, creating it with `queues` queues if it does not exist.
    pub fn get_or_create(&self, name: &str, queues: u32) -> Result<TopicConfig, RequestError> {
        if let Some(config) = self.get(name) {
            return Ok(config);
        }
        match self.create(name, queues) {
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => {
                self.queues(name).map(|queues| TopicConfig { queues })
            }
            other => other,
        }
    }

    /// Removes a topic.
    pub fn delete(&self, name: &str) -> Result<(), RequestError> {
        self.change(|topics| {
            topics.remove(name).map(|_| ()).ok_or_else(|| {
                RequestError::new(
                    ErrorCode::TopicNotFound,
                    format!("topic '{name}' does not exist"),
                )
            })
        })
    }

    /// Grows a topic to `queues` queues in total.
    pub fn add_queues(&self, name: &str, queues: u32) -> Result<TopicConfig, RequestError> {
        check_queue_count(queues)?;
        self.change(|topics| {
            let config = topics.get_mut(name).ok_or_else(|| {
                RequestError::new(
                    ErrorCode::TopicNotFound,
                    format!("topic '{name}' does not exist"),
                )
            })?;
            if queues <= config.queues {
                return Err(RequestError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "topic '{name}' has {} queues; the new count must be larger, not {queues}",
                        config.queues
                    ),
                ));
            }
            config.queues = queues;
            Ok(*config)
        })
    }

    /// Applies `edit` to a copy of the table, persists the copy, then publishes it.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut BTreeMap<String, TopicConfig>) -> Result<T, RequestError>,
    ) -> Result<T, RequestError> {
        let serial = self.write_lock.lock();
        let mut topics = self.topics.read().clone();
        let out = edit(&mut topics)?;
        let file = TopicsFile { topics };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| RequestError::new(ErrorCode::Internal, e.to_string()))?;
        atomic_file::write_atomic(&self.path, &json).map_err(|e| {
            RequestError::new(
                ErrorCode::StorageError,
                format!("writing {}: {e}", self.path.display()),
            )
        })?;
        *self.topics.write() = file.topics;
        drop(serial);
        if let Some(listener) = self.listener.get() {
            listener();
        }
        Ok(out)
    }
}

/// Refuses a queue count of 0 or above the limit.
pub(crate) fn check_queue_count(queues: u32) -> Result<(), RequestError> {
    if queues == 0 || queues > MAX_QUEUES {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            format!("a topic has 1 to {MAX_QUEUES} queues, not {queues}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("orders.v1_eu-west").is_ok());
        assert!(validate_name(&"a".repeat(127)).is_ok());
        for bad in ["", "a b", "ü", "%RETRY%g", "a/b", &"a".repeat(128)] {
            let err = validate_name(bad).err().map(|e| e.code);
            assert_eq!(err, Some(ErrorCode::InvalidTopicName), "{bad:?}");
        }
    }

    #[test]
    fn table_persists() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let table = TopicTable::load(dir.path())?;
        table.create("a", 4)?;
        assert_eq!(
            table.create("a", 4).err().map(|e| e.code),
            Some(ErrorCode::TopicAlreadyExists)
        );
        table.add_queues("a", 8)?;
        assert_eq!(
            table.add_queues("a", 8).err().map(|e| e.code),
            Some(ErrorCode::InvalidArgument)
        );
        table.create("b", 1)?;
        table.delete("b")?;
        let again = TopicTable::load(dir.path())?;
        assert_eq!(
            again.list(),
            vec![("a".to_owned(), TopicConfig { queues: 8 })]
        );
        Ok(())
    }
}

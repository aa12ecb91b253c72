//! Offsets: which offset of a queue is safe to commit ([`QueueProgress`]), and where committed
//! offsets live ([`OffsetStore`]: the broker for clustering groups, the client for broadcast).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::warn;
use weir_proto::{ApiKey, pb};

use crate::consumer::QueueKey;
use crate::error::Result;
use crate::pool::Pool;

/// The progress of one queue: what was fetched, what was processed.
///
/// The offset to commit is the smallest offset fetched but not yet processed, or, when all
/// fetched messages are processed, the next offset to fetch (which may lie past messages the
/// tag filter skipped). So a commit never moves past an unprocessed message, even when
/// messages finish out of order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProgress {
    in_flight: BTreeSet<u64>,
    next_fetch: u64,
}

impl QueueProgress {
    /// Progress starting at `offset`.
    pub fn new(offset: u64) -> QueueProgress {
        QueueProgress {
            in_flight: BTreeSet::new(),
            next_fetch: offset,
        }
    }

    /// Where the next fetch starts.
    pub fn next_fetch(&self) -> u64 {
        self.next_fetch
    }

    /// Records a fetch: messages at `offsets` are now in flight, and the next fetch starts
    /// at `next_offset`.
    pub fn fetched(&mut self, offsets: impl IntoIterator<Item = u64>, next_offset: u64) {
        self.in_flight.extend(offsets);
        self.next_fetch = self.next_fetch.max(next_offset);
    }

    /// Records that the message at `offset` is processed.
    pub fn processed(&mut self, offset: u64) {
        self.in_flight.remove(&offset);
    }

    /// Forgets everything in flight and fetches from `offset` next (after an out-of-range
    /// answer).
    pub fn reset(&mut self, offset: u64) {
        self.in_flight.clear();
        self.next_fetch = offset;
    }

    /// The offset safe to commit: every message before it is processed.
    pub fn committable(&self) -> u64 {
        self.in_flight.first().copied().unwrap_or(self.next_fetch)
    }
}

/// Where a group's committed offsets are kept.
#[derive(Debug)]
pub enum OffsetStore {
    /// On the broker hosting each queue (clustering mode).
    Broker,
    /// In this client (broadcast mode), optionally saved to a JSON file.
    Local {
        /// The file, if offsets survive restarts.
        path: Option<PathBuf>,
        /// The offsets.
        offsets: Mutex<BTreeMap<String, BTreeMap<u32, u64>>>,
    },
}

impl OffsetStore {
    /// A client-side store; loads `path` if it exists.
    pub fn local(path: Option<PathBuf>) -> OffsetStore {
        let offsets = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(offsets) => Some(offsets),
                Err(e) => {
                    warn!(error = %e, "ignoring unreadable offsets file");
                    None
                }
            })
            .unwrap_or_default();
        OffsetStore::Local {
            path,
            offsets: Mutex::new(offsets),
        }
    }

    /// The locally stored offset of `queue`, if this is a local store and has one.
    pub fn local_offset(&self, queue: &QueueKey) -> Option<u64> {
        match self {
            OffsetStore::Broker => None,
            OffsetStore::Local { offsets, .. } => offsets
                .lock()
                .get(&queue.topic)
                .and_then(|q| q.get(&queue.queue_id))
                .copied(),
        }
    }

    /// Commits `offsets` (per broker address) for `group` as `member_id`.
    pub async fn commit(
        &self,
        pool: &Pool,
        group: &str,
        member_id: &str,
        offsets: &[(String, QueueKey, u64)],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        match self {
            OffsetStore::Broker => {
                let mut by_broker: HashMap<&str, Vec<pb::OffsetEntry>> = HashMap::new();
                for (broker, queue, offset) in offsets {
                    by_broker.entry(broker).or_default().push(pb::OffsetEntry {
                        topic: queue.topic.clone(),
                        queue_id: queue.queue_id,
                        offset: *offset,
                    });
                }
                for (broker, entries) in by_broker {
                    let request = pb::CommitOffsetsRequest {
                        group: group.to_owned(),
                        member_id: member_id.to_owned(),
                        offsets: entries,
                    };
                    let conn = pool.get(broker).await?;
                    conn.call::<_, pb::Empty>(ApiKey::CommitOffsets, &request, Bytes::new(), None)
                        .await?;
                }
                Ok(())
            }
            OffsetStore::Local {
                path,
                offsets: stored,
            } => {
                let snapshot = {
                    let mut stored = stored.lock();
                    for (_, queue, offset) in offsets {
                        stored
                            .entry(queue.topic.clone())
                            .or_default()
                            .insert(queue.queue_id, *offset);
                    }
                    path.as_ref().map(|_| stored.clone())
                };
                if let (Some(path), Some(snapshot)) = (path, snapshot) {
                    save(path, &snapshot);
                }
                Ok(())
            }
        }
    }
}

/// Writes the offsets file atomically (a temporary file renamed over the old one).
fn save(path: &std::path::Path, offsets: &BTreeMap<String, BTreeMap<u32, u64>>) {
    let written = serde_json::to_vec_pretty(offsets)
        .map_err(std::io::Error::other)
        .and_then(|json| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "cannot save offsets");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_first_unprocessed_message() {
        let mut p = QueueProgress::new(10);
        assert_eq!(p.committable(), 10);
        p.fetched(10..15, 15);
        assert_eq!(p.committable(), 10);
        p.processed(11);
        p.processed(12);
        assert_eq!(p.committable(), 10, "10 is not processed yet");
        p.processed(10);
        assert_eq!(p.committable(), 13);
        p.processed(14);
        assert_eq!(p.committable(), 13);
        p.processed(13);
        assert_eq!(p.committable(), 15);
    }

    #[test]
    fn filtered_messages_advance_the_commit() {
        let mut p = QueueProgress::new(0);
        // A pull that skipped offsets 0..7 by tag and returned 7 and 8.
        p.fetched([7, 8], 20);
        p.processed(7);
        assert_eq!(p.committable(), 8);
        p.processed(8);
        assert_eq!(p.committable(), 20);
        p.reset(5);
        assert_eq!((p.committable(), p.next_fetch()), (5, 5));
    }

    #[tokio::test]
    async fn local_offsets_survive_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let q = QueueKey {
            topic: "t".into(),
            queue_id: 3,
        };
        let pool = Pool::default();
        let store = OffsetStore::local(Some(path.clone()));
        assert_eq!(store.local_offset(&q), None);
        store
            .commit(&pool, "g", "m", &[("b".into(), q.clone(), 42)])
            .await
            .unwrap();
        let reopened = OffsetStore::local(Some(path));
        assert_eq!(reopened.local_offset(&q), Some(42));
    }
}

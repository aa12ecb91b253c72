//! Damaged data: what was found, where, and the operator's list of it.
//!
//! Damage is isolated, never fatal: recovery keeps the valid records after a damaged stretch
//! of the commit log, and a read steps over a queue offset whose record cannot be served
//! (telling its caller which offsets it skipped and why). Every newly found range is logged
//! at ERROR, counted in [`crate::metric_names::DAMAGED_MESSAGES_TOTAL`], and appended to
//! `data_dir/damaged` so the list survives restarts:
//!
//! ```text
//! data_dir/damaged (text, one range per line, appended and fsynced when damage is found)
//! log <from> <to> <reason>                          commit-log bytes [from, to)
//! queue <from> <to> <reason> <queue_id> <topic>     queue offsets [from, to) (topic last:
//!                                                   it may hold spaces)
//! ```
//!
//! Lines that do not parse are ignored (the file is a report, nothing depends on it).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;

use parking_lot::Mutex;

use crate::metric_names::DAMAGED_MESSAGES_TOTAL;

/// Why data was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DamageReason {
    /// The record fails its layout or checksum checks.
    CorruptRecord,
    /// The consume-queue entry points at no record of this queue and offset, and the right
    /// record could not be found in the log.
    IndexMismatch,
    /// The consume-queue entry is empty below the queue's end.
    MissingEntry,
    /// The message's record was in a damaged stretch of the commit log (found by recovery).
    LostInLog,
    /// Unreadable commit-log bytes between valid records (found by recovery).
    DamagedLog,
}

impl DamageReason {
    /// The stable name used on the wire, in the `damaged` file and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DamageReason::CorruptRecord => "corrupt_record",
            DamageReason::IndexMismatch => "index_mismatch",
            DamageReason::MissingEntry => "missing_entry",
            DamageReason::LostInLog => "lost_in_log",
            DamageReason::DamagedLog => "damaged_log",
        }
    }

    /// The reason named `name` (see [`DamageReason::as_str`]).
    pub fn parse(name: &str) -> Option<DamageReason> {
        [
            DamageReason::CorruptRecord,
            DamageReason::IndexMismatch,
            DamageReason::MissingEntry,
            DamageReason::LostInLog,
            DamageReason::DamagedLog,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for DamageReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Queue offsets `[from, to)` a read stepped over, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedRange {
    /// First skipped queue offset.
    pub from: u64,
    /// One past the last skipped queue offset.
    pub to: u64,
    /// Why they could not be served.
    pub reason: DamageReason,
}

/// Where a damaged range is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DamageLocation {
    /// Commit-log bytes `[from, to)`.
    Log,
    /// Queue offsets `[from, to)` of one queue.
    Queue {
        /// The topic.
        topic: String,
        /// The queue.
        queue_id: u32,
    },
}

/// One damaged range, as listed to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// Commit log or queue.
    pub location: DamageLocation,
    /// Start (a commit-log offset for [`DamageLocation::Log`], else a queue offset).
    pub from: u64,
    /// End, exclusive.
    pub to: u64,
    /// Why it is damaged.
    pub reason: DamageReason,
}

impl DamagedRange {
    fn encode(&self) -> String {
        match &self.location {
            DamageLocation::Log => format!("log {} {} {}\n", self.from, self.to, self.reason),
            DamageLocation::Queue { topic, queue_id } => format!(
                "queue {} {} {} {queue_id} {topic}\n",
                self.from, self.to, self.reason
            ),
        }
    }

    fn decode(line: &str) -> Option<DamagedRange> {
        let mut parts = line.splitn(6, ' ');
        let kind = parts.next()?;
        let from = parts.next()?.parse().ok()?;
        let to = parts.next()?.parse().ok()?;
        let reason = DamageReason::parse(parts.next()?)?;
        let location = match kind {
            "log" => DamageLocation::Log,
            "queue" => DamageLocation::Queue {
                queue_id: parts.next()?.parse().ok()?,
                topic: parts.next()?.to_owned(),
            },
            _ => return None,
        };
        Some(DamagedRange {
            location,
            from,
            to,
            reason,
        })
    }

    /// Whether `self` already covers `other`.
    fn covers(&self, other: &DamagedRange) -> bool {
        self.location == other.location
            && self.reason == other.reason
            && self.from <= other.from
            && other.to <= self.to
    }
}

/// Every damaged range found so far, mirrored to `data_dir/damaged`.
#[derive(Debug)]
pub(crate) struct DamageLog {
    path: PathBuf,
    ranges: Mutex<Vec<DamagedRange>>,
}

impl DamageLog {
    /// Loads `path` (empty when absent).
    pub fn load(path: PathBuf) -> io::Result<DamageLog> {
        let ranges = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().filter_map(DamagedRange::decode).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(DamageLog {
            path,
            ranges: Mutex::new(ranges),
        })
    }

    /// Every range found, oldest first.
    pub fn list(&self) -> Vec<DamagedRange> {
        self.ranges.lock().clone()
    }

    /// Whether queue offset `offset` of `topic`/`queue_id` is already listed as damaged (a
    /// read then does not search the log for it again).
    pub fn is_listed(&self, topic: &str, queue_id: u32, offset: u64) -> bool {
        self.ranges.lock().iter().any(|r| {
            matches!(&r.location, DamageLocation::Queue { topic: t, queue_id: q }
                if t == topic && *q == queue_id)
                && (r.from..r.to).contains(&offset)
        })
    }

    /// Records `range` unless it is already known: logs it at ERROR, counts it and appends it
    /// to the file. A failure to write the file is logged, not returned: the read that found
    /// the damage still answers.
    pub fn report(&self, range: DamagedRange, detail: &str) {
        let mut ranges = self.ranges.lock();
        if ranges.iter().any(|r| r.covers(&range)) {
            return;
        }
        match &range.location {
            DamageLocation::Log => tracing::error!(
                from = range.from,
                to = range.to,
                reason = %range.reason,
                detail,
                "damaged commit-log range isolated; the valid records around it are kept"
            ),
            DamageLocation::Queue { topic, queue_id } => tracing::error!(
                topic = %topic,
                queue = queue_id,
                from = range.from,
                to = range.to,
                reason = %range.reason,
                detail,
                "damaged messages skipped; the queue moves past them"
            ),
        }
        if matches!(range.location, DamageLocation::Queue { .. }) {
            metrics::counter!(DAMAGED_MESSAGES_TOTAL, "reason" => range.reason.as_str())
                .increment(range.to - range.from);
        }
        let line = range.encode();
        ranges.push(range);
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "could not record damage");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_and_dedup() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("damaged");
        let log = DamageLog::load(path.clone())?;
        let queue = DamagedRange {
            location: DamageLocation::Queue {
                topic: "a topic".into(),
                queue_id: 3,
            },
            from: 5,
            to: 9,
            reason: DamageReason::CorruptRecord,
        };
        let log_range = DamagedRange {
            location: DamageLocation::Log,
            from: 100,
            to: 200,
            reason: DamageReason::DamagedLog,
        };
        log.report(queue.clone(), "test");
        log.report(
            DamagedRange {
                from: 6,
                to: 7,
                ..queue.clone()
            },
            "test",
        );
        log.report(log_range.clone(), "test");
        let again = DamageLog::load(path)?;
        assert_eq!(again.list(), vec![queue, log_range]);
        Ok(())
    }
}

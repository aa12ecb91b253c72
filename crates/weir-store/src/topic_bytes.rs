//! Topic sizes: how many commit-log bytes each topic's stored batches take.
//!
//! Kept per commit-log segment, because retention deletes whole segments: dropping a
//! segment's counts is exact, with nothing to read. The dispatcher adds each batch's length
//! to its topic in its segment (one addition per batch, summed per queue per round, so one
//! lock per round); a topic's deletion drops its counts; a cut (`truncate_from`) subtracts
//! what it removes. Only dispatched (readable, in a cluster committed) batches count.
//!
//! The counts are a cache of the log, kept on disk so that an open does not read the log:
//! the checkpointer writes each segment's counts that changed, with the dispatched position
//! they hold up to, before it writes the checkpoint. An open uses a segment's file when it
//! covers exactly what the checkpoint vouches for in that segment; otherwise (no file, an
//! older or newer one, a bad CRC) it walks that segment's batch headers up to the
//! checkpoint. Everything after the checkpoint is re-dispatched and counted again.
//!
//! ```text
//! data_dir/topicbytes/<segment base, 20 digits> (text)
//!   upto <dispatched commit-log offset the counts hold up to>\n
//!   <bytes> <topic>\n                 one line per topic with batches in the segment
//!   crc <CRC32C of every byte before this line, decimal>\n
//! ```
//!
//! Written to `<name>.tmp` and renamed, without fsync: a file lost or torn by a crash is
//! caught by its `upto` or its CRC and rebuilt from the log.
//!
//! A file written before a topic's deletion still counts the deleted topic's records; at
//! open, a topic is dropped from a file whose `upto` is at or below the topic's tombstone
//! (the log's end when it was deleted): such a file was either written before the deletion,
//! or holds none of the topic's newer records anyway.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_proto::batch;

use crate::segment::{Segment, file_name, is_end_marker, list_numbered};
use crate::tombstones::Tombstones;

/// One segment's counts.
#[derive(Debug, Default)]
struct SegmentBytes {
    by_topic: HashMap<Arc<str>, u64>,
    /// Changed since its file was last written.
    dirty: bool,
}

/// Every segment's counts, and their sums per topic.
#[derive(Debug, Default)]
pub(crate) struct TopicBytes {
    dir: PathBuf,
    segments: BTreeMap<u64, SegmentBytes>,
    totals: HashMap<Arc<str>, u64>,
}

/// A segment's counts to write: (segment base, topic → bytes).
pub(crate) type SegmentSnapshot = (u64, Vec<(Arc<str>, u64)>);

impl TopicBytes {
    /// The bytes `topic`'s readable batches take; 0 for an unknown topic.
    pub fn topic(&self, topic: &str) -> u64 {
        self.totals.get(topic).copied().unwrap_or(0)
    }

    /// Counts `bytes` more of `topic` in the segment starting at `segment`.
    pub fn add(&mut self, segment: u64, topic: &Arc<str>, bytes: u64) {
        let seg = self.segments.entry(segment).or_default();
        seg.dirty = true;
        *seg.by_topic.entry(Arc::clone(topic)).or_default() += bytes;
        *self.totals.entry(Arc::clone(topic)).or_default() += bytes;
    }

    /// Counts `bytes` fewer of `topic` in the segment starting at `segment` (a cut).
    pub fn subtract(&mut self, segment: u64, topic: &str, bytes: u64) {
        if let Some(seg) = self.segments.get_mut(&segment)
            && let Some(n) = seg.by_topic.get_mut(topic)
        {
            seg.dirty = true;
            *n = n.saturating_sub(bytes);
        }
        if let Some(n) = self.totals.get_mut(topic) {
            *n = n.saturating_sub(bytes);
        }
    }

    /// Forgets the segment starting at `segment` (deleted by retention or a cut) and deletes
    /// its file.
    pub fn remove_segment(&mut self, segment: u64) {
        if let Some(seg) = self.segments.remove(&segment) {
            for (topic, bytes) in seg.by_topic {
                if let Some(n) = self.totals.get_mut(&topic) {
                    *n = n.saturating_sub(bytes);
                }
            }
        }
        match std::fs::remove_file(self.dir.join(file_name(segment))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, segment, "cannot delete a topic-size file"),
        }
    }

    /// Forgets a deleted topic.
    pub fn remove_topic(&mut self, topic: &str) {
        self.totals.remove(topic);
        for seg in self.segments.values_mut() {
            if seg.by_topic.remove(topic).is_some() {
                seg.dirty = true;
            }
        }
    }

    /// The counts of the segments changed since the last call, marked clean.
    pub fn take_dirty(&mut self) -> Vec<SegmentSnapshot> {
        self.segments
            .iter_mut()
            .filter(|(_, seg)| seg.dirty)
            .map(|(base, seg)| {
                seg.dirty = false;
                let counts = seg
                    .by_topic
                    .iter()
                    .map(|(t, n)| (Arc::clone(t), *n))
                    .collect();
                (*base, counts)
            })
            .collect()
    }

    /// Where the files are.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The counts of the log's `segments` up to `start` (the checkpoint: what follows is
    /// re-dispatched), from their files where they match and by walking the batch headers
    /// otherwise. `holes` are damaged stretches `from → to` to step over; records of deleted
    /// topics do not count. Files of segments that are gone are deleted.
    pub fn load(
        data_dir: &Path,
        segments: &[Arc<Segment>],
        start: u64,
        tombstones: &Tombstones,
        holes: &BTreeMap<u64, u64>,
    ) -> io::Result<TopicBytes> {
        let dir = data_dir.join("topicbytes");
        std::fs::create_dir_all(&dir)?;
        let mut bytes = TopicBytes {
            dir,
            ..TopicBytes::default()
        };
        for (base, path) in list_numbered(&bytes.dir)? {
            if !segments.iter().any(|s| s.base == base && s.base < start) {
                let _ = std::fs::remove_file(path);
            }
        }
        let mut walked = 0u64;
        for seg in segments.iter().filter(|s| s.base < start) {
            let until = seg.end().min(start);
            let (counts, from_file) = match read_file(&bytes.dir, seg.base) {
                Some((upto, counts)) if upto.min(seg.end()) == until => {
                    let counts: Vec<_> = counts
                        .into_iter()
                        .filter(|(topic, _)| !tombstones.covers(topic, upto.saturating_sub(1)))
                        .collect();
                    (counts, true)
                }
                _ => {
                    walked += 1;
                    (
                        walk(seg, seg.base, until, tombstones, holes)
                            .into_iter()
                            .collect(),
                        false,
                    )
                }
            };
            for (topic, n) in counts {
                let topic: Arc<str> = Arc::from(topic);
                bytes.add(seg.base, &topic, n);
            }
            // A walked segment's file is written at the next checkpoint.
            bytes.segments.entry(seg.base).or_default().dirty = !from_file;
        }
        if walked > 0 {
            tracing::info!(
                segments = walked,
                "topic sizes rebuilt from the commit log's batch headers"
            );
        }
        Ok(bytes)
    }
}

/// The bytes per topic of the batches in `seg` from commit-log offset `from` (a batch
/// boundary) to `until`, stepping over `holes` and leaving out deleted topics' records.
pub(crate) fn walk(
    seg: &Segment,
    from: u64,
    until: u64,
    tombstones: &Tombstones,
    holes: &BTreeMap<u64, u64>,
) -> HashMap<String, u64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut pos = from;
    while pos < until {
        if let Some(&to) = holes.get(&pos) {
            pos = to;
            continue;
        }
        let rest = seg
            .bytes(pos - seg.base, (until - pos) as usize)
            .unwrap_or_default();
        if is_end_marker(rest) {
            break;
        }
        let Ok(entry) = batch::Entry::parse(rest) else {
            tracing::warn!(
                offset = pos,
                "unreadable batch while counting topic sizes; the rest of its segment is not counted"
            );
            break;
        };
        let len = entry.len() as u64;
        if !tombstones.covers(entry.topic(), pos) {
            *counts.entry(entry.topic().to_owned()).or_default() += len;
        }
        pos += len;
    }
    counts
}

/// Writes the snapshots taken with the log dispatched up to `upto` into `dir`. A failure is
/// logged: the next open rebuilds what a missing file held.
pub(crate) fn store(dir: &Path, snapshots: &[SegmentSnapshot], upto: u64) {
    for (base, counts) in snapshots {
        if let Err(e) = write_file(dir, *base, upto, counts) {
            tracing::warn!(error = %e, segment = base, "cannot write a topic-size file");
        }
    }
}

fn file_body(upto: u64, counts: &[(Arc<str>, u64)]) -> String {
    let mut text = format!("upto {upto}\n");
    for (topic, n) in counts {
        text.push_str(&format!("{n} {topic}\n"));
    }
    text
}

fn write_file(dir: &Path, base: u64, upto: u64, counts: &[(Arc<str>, u64)]) -> io::Result<()> {
    let mut text = file_body(upto, counts);
    let crc = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("crc {crc}\n"));
    let path = dir.join(file_name(base));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// A segment's file: (upto, topic → bytes), or `None` when it is missing or does not check.
fn read_file(dir: &Path, base: u64) -> Option<(u64, Vec<(String, u64)>)> {
    let text = std::fs::read_to_string(dir.join(file_name(base))).ok()?;
    let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
    let (body, crc_line) = text.split_at(body_end);
    let crc: u32 = crc_line.trim_end().strip_prefix("crc ")?.parse().ok()?;
    if crc != crc32c::crc32c(body.as_bytes()) {
        return None;
    }
    let mut lines = body.lines();
    let upto = lines.next()?.strip_prefix("upto ")?.parse().ok()?;
    let counts = lines
        .map(|line| {
            let (n, topic) = line.split_once(' ')?;
            Some((topic.to_owned(), n.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((upto, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_a_bad_crc_is_refused() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let counts: Vec<(Arc<str>, u64)> = vec![(Arc::from("a b"), 120), (Arc::from("c"), 7)];
        write_file(dir.path(), 4096, 9000, &counts)?;
        let (upto, read) = read_file(dir.path(), 4096).ok_or(io::Error::other("unread"))?;
        assert_eq!(upto, 9000);
        assert_eq!(read, vec![("a b".to_owned(), 120), ("c".to_owned(), 7)]);
        let path = dir.path().join(file_name(4096));
        let text = std::fs::read_to_string(&path)?.replace("120 a b", "121 a b");
        std::fs::write(&path, text)?;
        assert_eq!(read_file(dir.path(), 4096), None);
        Ok(())
    }

    #[test]
    fn counts_follow_adds_cuts_deletions_and_segments() {
        let mut bytes = TopicBytes::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        bytes.add(0, &a, 100);
        bytes.add(0, &b, 50);
        bytes.add(1000, &a, 30);
        assert_eq!((bytes.topic("a"), bytes.topic("b")), (130, 50));
        bytes.subtract(1000, "a", 10);
        assert_eq!(bytes.topic("a"), 120);
        bytes.remove_segment(0);
        assert_eq!((bytes.topic("a"), bytes.topic("b")), (20, 0));
        bytes.remove_topic("a");
        assert_eq!(bytes.topic("a"), 0);
        assert_eq!(bytes.take_dirty().len(), 1);
        assert!(bytes.take_dirty().is_empty());
    }
}

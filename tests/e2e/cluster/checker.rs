//! Checks a run's [`History`]: nothing acknowledged lost, nothing invented, nothing twice,
//! order kept, committed offsets never back, consumers shown only what the log kept; and how
//! long each fault stopped the acknowledgements.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use super::history::{History, MessageKey};

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged message is not at its acknowledged queue and offset.
    Lost {
        /// The message.
        key: MessageKey,
        /// Where it was acknowledged.
        queue: u32,
        /// Where it was acknowledged.
        offset: u64,
        /// What is there instead (`None`: nothing readable).
        found: Option<Option<MessageKey>>,
    },
    /// An acknowledged message is at its place, but under another message id than its
    /// acknowledgement named.
    IdMismatch {
        /// The message.
        key: MessageKey,
        /// Where.
        queue: u32,
        /// Where.
        offset: u64,
        /// The id the acknowledgement named.
        acked: String,
        /// The id it is read back with.
        stored: String,
    },
    /// A stored message no producer of the run sent.
    NeverSent {
        /// Where it is.
        queue: u32,
        /// Where it is.
        offset: u64,
        /// What its body says (`None`: not a body of this run).
        key: Option<MessageKey>,
    },
    /// A message stored more than once in a queue.
    Duplicate {
        /// The queue.
        queue: u32,
        /// The message.
        key: MessageKey,
        /// Its offsets.
        offsets: Vec<u64>,
    },
    /// A producer's messages are out of order in a queue.
    OutOfOrder {
        /// The queue.
        queue: u32,
        /// The producer.
        producer: u32,
        /// The earlier offset and the sequence stored there.
        earlier: (u64, u64),
        /// The later offset and its (smaller) sequence.
        later: (u64, u64),
    },
    /// A group's committed offset of a queue moved back.
    CommitBackwards {
        /// The queue.
        queue: u32,
        /// The offset before.
        from: u64,
        /// The offset after.
        to: u64,
        /// When the smaller one was read.
        at: Duration,
    },
    /// A committed offset past the queue's end as read back: something committed was lost.
    CommitPastEnd {
        /// The queue.
        queue: u32,
        /// The committed offset.
        committed: u64,
        /// The queue's end.
        end: u64,
    },
    /// The consumer group was handed a message that is not what the log holds at that place
    /// (it read data that was later undone, or made up).
    DeliveryMismatch {
        /// Where.
        queue: u32,
        /// Where.
        offset: u64,
        /// What the consumer got.
        delivered: Option<MessageKey>,
        /// What the log holds (`None`: nothing readable).
        stored: Option<Option<MessageKey>>,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost {
                key,
                queue,
                offset,
                found,
            } => write!(
                f,
                "lost: {} acknowledged at {queue}:{offset}, found {found:?}",
                key.body()
            ),
            Violation::IdMismatch {
                key,
                queue,
                offset,
                acked,
                stored,
            } => write!(
                f,
                "{} at {queue}:{offset} was acknowledged as {acked} but reads as {stored}",
                key.body()
            ),
            Violation::NeverSent { queue, offset, key } => {
                write!(f, "never sent: {key:?} stored at {queue}:{offset}")
            }
            Violation::Duplicate {
                queue,
                key,
                offsets,
            } => write!(
                f,
                "duplicate: {} in queue {queue} at {offsets:?}",
                key.body()
            ),
            Violation::OutOfOrder {
                queue,
                producer,
                earlier,
                later,
            } => write!(
                f,
                "out of order: producer {producer} in queue {queue}: seq {} at {} before seq {} at {}",
                earlier.1, earlier.0, later.1, later.0
            ),
            Violation::CommitBackwards {
                queue,
                from,
                to,
                at,
            } => write!(
                f,
                "committed offset of queue {queue} moved back from {from} to {to} at {at:?}"
            ),
            Violation::CommitPastEnd {
                queue,
                committed,
                end,
            } => write!(
                f,
                "committed offset {committed} of queue {queue} is past its end {end}"
            ),
            Violation::DeliveryMismatch {
                queue,
                offset,
                delivered,
                stored,
            } => write!(
                f,
                "delivered {delivered:?} at {queue}:{offset} but the log holds {stored:?}"
            ),
        }
    }
}

/// How long one fault kept the cluster from acknowledging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The fault.
    pub what: String,
    /// Its replica.
    pub node: u64,
    /// When it was injected.
    pub at: Duration,
    /// From the fault to the first produce acknowledged after it (`None`: none was).
    pub to_next_ack: Option<Duration>,
    /// The longest acknowledged produce begun from [`NEAR_BEFORE`] before the fault to
    /// [`NEAR_AFTER`] after it: how long a client stalled on it.
    pub longest_send: Option<Duration>,
}

/// How long before a fault a produce may have begun to count in [`Recovery::longest_send`].
const NEAR_BEFORE: Duration = Duration::from_secs(1);
/// How long after a fault a produce may have begun to count in [`Recovery::longest_send`].
const NEAR_AFTER: Duration = Duration::from_secs(5);

/// What a run shows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Produces acknowledged.
    pub acked: usize,
    /// Produces failed.
    pub failed: usize,
    /// Messages the consumer group received (with redeliveries).
    pub delivered: usize,
    /// Acknowledged messages the group was never handed (not a violation: the run stops
    /// the group after a bounded wait).
    pub undelivered: usize,
    /// Messages read back at the end.
    pub stored: usize,
    /// One per fault, in order.
    pub recoveries: Vec<Recovery>,
    /// Everything broken; empty when the run kept every promise.
    pub violations: Vec<Violation>,
}

/// Quantiles of the fault-to-next-acknowledgement times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryQuantiles {
    /// Faults measured (those followed by an acknowledgement).
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
}

impl Report {
    /// p50, p99 and max of the recoveries that ended, `None` when none did.
    pub fn recovery_quantiles(&self) -> Option<RecoveryQuantiles> {
        let mut times: Vec<Duration> = self
            .recoveries
            .iter()
            .filter_map(|r| r.to_next_ack)
            .collect();
        if times.is_empty() {
            return None;
        }
        times.sort();
        let rank = |q: f64| {
            let i = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
            times[i - 1]
        };
        Some(RecoveryQuantiles {
            count: times.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: times[times.len() - 1],
        })
    }

    /// Panics, printing the report, unless no promise was broken, something was acknowledged
    /// and every fault was followed by an acknowledgement within `recovery_limit`.
    pub fn assert_clean(&self, recovery_limit: Duration) {
        assert!(self.violations.is_empty(), "broken promises:\n{self}");
        assert!(self.acked > 0, "nothing was acknowledged:\n{self}");
        for r in &self.recoveries {
            match r.to_next_ack {
                Some(t) if t <= recovery_limit => {}
                _ => panic!(
                    "no acknowledgement within {recovery_limit:?} of {} on node {}:\n{self}",
                    r.what, r.node
                ),
            }
        }
    }
}

/// Violations printed in full; the rest are counted.
const VIOLATIONS_SHOWN: usize = 30;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "acked {}, failed {}, delivered {} ({} acked never delivered), stored {}, faults {}",
            self.acked,
            self.failed,
            self.delivered,
            self.undelivered,
            self.stored,
            self.recoveries.len()
        )?;
        for r in &self.recoveries {
            let took = r
                .to_next_ack
                .map_or_else(|| "never".to_owned(), |t| format!("{t:?}"));
            let stall = r
                .longest_send
                .map_or_else(|| "none".to_owned(), |t| format!("{t:?}"));
            writeln!(
                f,
                "  {:>8.3?} {} on node {}: next ack after {took}, longest send around it {stall}",
                r.at, r.what, r.node
            )?;
        }
        if let Some(q) = self.recovery_quantiles() {
            writeln!(
                f,
                "fault to next ack over {}: p50 {:?}, p99 {:?}, max {:?}",
                q.count, q.p50, q.p99, q.max
            )?;
        }
        writeln!(f, "violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(VIOLATIONS_SHOWN) {
            writeln!(f, "  {v}")?;
        }
        if self.violations.len() > VIOLATIONS_SHOWN {
            writeln!(
                f,
                "  ... and {} more",
                self.violations.len() - VIOLATIONS_SHOWN
            )?;
        }
        Ok(())
    }
}

/// Checks `history` (pure: it only reads what the run recorded).
pub fn check(history: &History) -> Report {
    let mut violations = Vec::new();
    let stored_at = |queue: u32, offset: u64| {
        history
            .read_back
            .get(&queue)
            .and_then(|q| q.get(&offset))
            .map(|s| s.key)
    };

    // Every acknowledged message is where its acknowledgement said, under the id it named.
    for ack in &history.acks {
        let stored = history
            .read_back
            .get(&ack.queue)
            .and_then(|q| q.get(&ack.offset));
        match stored {
            Some(s) if s.key == Some(ack.key) => {
                if s.message_id != ack.message_id {
                    violations.push(Violation::IdMismatch {
                        key: ack.key,
                        queue: ack.queue,
                        offset: ack.offset,
                        acked: ack.message_id.clone(),
                        stored: s.message_id.clone(),
                    });
                }
            }
            _ => violations.push(Violation::Lost {
                key: ack.key,
                queue: ack.queue,
                offset: ack.offset,
                found: stored.map(|s| s.key),
            }),
        }
    }

    let was_sent = |key: MessageKey| {
        history
            .attempted
            .get(&key.producer)
            .is_some_and(|&n| key.seq < n)
    };
    for (&queue, messages) in &history.read_back {
        let mut offsets_of: BTreeMap<MessageKey, Vec<u64>> = BTreeMap::new();
        // The last (offset, seq) seen per producer, in offset order.
        let mut last: HashMap<u32, (u64, u64)> = HashMap::new();
        for (&offset, stored) in messages {
            let Some(key) = stored.key.filter(|&k| was_sent(k)) else {
                violations.push(Violation::NeverSent {
                    queue,
                    offset,
                    key: stored.key,
                });
                continue;
            };
            offsets_of.entry(key).or_default().push(offset);
            if let Some(&(prev_offset, prev_seq)) = last.get(&key.producer)
                && prev_seq > key.seq
            {
                violations.push(Violation::OutOfOrder {
                    queue,
                    producer: key.producer,
                    earlier: (prev_offset, prev_seq),
                    later: (offset, key.seq),
                });
            }
            last.insert(key.producer, (offset, key.seq));
        }
        for (key, offsets) in offsets_of {
            if offsets.len() > 1 {
                violations.push(Violation::Duplicate {
                    queue,
                    key,
                    offsets,
                });
            }
        }
    }

    let mut committed: BTreeMap<u32, u64> = BTreeMap::new();
    for sample in &history.commits {
        if let Some(&prev) = committed.get(&sample.queue)
            && sample.offset < prev
        {
            violations.push(Violation::CommitBackwards {
                queue: sample.queue,
                from: prev,
                to: sample.offset,
                at: sample.at,
            });
        }
        let high = committed.entry(sample.queue).or_insert(sample.offset);
        *high = (*high).max(sample.offset);
    }
    for (&queue, &high) in &committed {
        let end = history.queue_ends.get(&queue).copied().unwrap_or(0);
        if high > end {
            violations.push(Violation::CommitPastEnd {
                queue,
                committed: high,
                end,
            });
        }
    }

    for d in &history.deliveries {
        let stored = stored_at(d.queue, d.offset);
        if stored != Some(d.key) {
            violations.push(Violation::DeliveryMismatch {
                queue: d.queue,
                offset: d.offset,
                delivered: d.key,
                stored,
            });
        }
    }

    let mut ack_times: Vec<Duration> = history.acks.iter().map(|a| a.at).collect();
    ack_times.sort();
    let recoveries = history
        .faults
        .iter()
        .map(|fault| {
            let next = ack_times.partition_point(|&t| t <= fault.at);
            let longest_send = history
                .acks
                .iter()
                .filter(|a| a.sent + NEAR_BEFORE >= fault.at && a.sent <= fault.at + NEAR_AFTER)
                .map(|a| a.at.saturating_sub(a.sent))
                .max();
            Recovery {
                what: fault.what.clone(),
                node: fault.node,
                at: fault.at,
                to_next_ack: ack_times.get(next).map(|&t| t - fault.at),
                longest_send,
            }
        })
        .collect();

    Report {
        acked: history.acks.len(),
        failed: history.failures.len(),
        delivered: history.deliveries.len(),
        undelivered: history.undelivered(),
        stored: history.read_back.values().map(BTreeMap::len).sum(),
        recoveries,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::{Ack, CommitSample, Delivery, Fault, Stored};
    use super::*;

    fn key(producer: u32, seq: u64) -> MessageKey {
        MessageKey { producer, seq }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Two producers, 3 messages each, all acknowledged and stored: queue 0 holds producer 0's,
    /// queue 1 producer 1's; the group read all and committed 3 on each queue.
    fn clean() -> History {
        let mut h = History::default();
        h.attempted.insert(0, 3);
        h.attempted.insert(1, 3);
        for producer in 0..2u32 {
            let queue = producer;
            let mut stored = BTreeMap::new();
            for seq in 0..3u64 {
                let k = key(producer, seq);
                h.acks.push(Ack {
                    key: k,
                    queue,
                    offset: seq,
                    message_id: format!("id-{producer}-{seq}"),
                    sent: ms(100 * seq + 10 * u64::from(producer)),
                    at: ms(100 * seq + 10 * u64::from(producer)),
                });
                stored.insert(
                    seq,
                    Stored {
                        key: Some(k),
                        message_id: format!("id-{producer}-{seq}"),
                    },
                );
                h.deliveries.push(Delivery {
                    key: Some(k),
                    queue,
                    offset: seq,
                    at: ms(100 * seq + 50),
                });
            }
            h.read_back.insert(queue, stored);
            h.queue_ends.insert(queue, 3);
            for (i, offset) in [0, 1, 3].into_iter().enumerate() {
                h.commits.push(CommitSample {
                    queue,
                    offset,
                    at: ms(100 * i as u64),
                });
            }
        }
        h
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let report = check(&clean());
        assert_eq!(report.violations, Vec::new(), "{report}");
        assert_eq!(
            (
                report.acked,
                report.stored,
                report.delivered,
                report.undelivered
            ),
            (6, 6, 6, 0)
        );
        report.assert_clean(Duration::from_secs(1));
    }

    #[test]
    fn message_key_bodies_round_trip() {
        let k = key(7, 123_456);
        assert_eq!(MessageKey::parse(k.body().as_bytes()), Some(k));
        assert_eq!(MessageKey::parse(b"p7-x1"), None);
        assert_eq!(MessageKey::parse(b"hello"), None);
    }

    #[test]
    fn a_lost_acknowledged_message_is_found() {
        let mut h = clean();
        h.read_back.get_mut(&1).unwrap().remove(&2);
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![
                Violation::Lost {
                    key: key(1, 2),
                    queue: 1,
                    offset: 2,
                    found: None,
                },
                Violation::DeliveryMismatch {
                    queue: 1,
                    offset: 2,
                    delivered: Some(key(1, 2)),
                    stored: None,
                },
            ]
        );
    }

    #[test]
    fn an_acknowledged_message_overwritten_by_another_is_lost() {
        let mut h = clean();
        // The slot now holds a message whose send failed (so it may be stored, once).
        h.attempted.insert(0, 4);
        h.read_back.get_mut(&0).unwrap().insert(
            1,
            Stored {
                key: Some(key(0, 3)),
                message_id: "other".into(),
            },
        );
        h.deliveries.retain(|d| (d.queue, d.offset) != (0, 1));
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![
                Violation::Lost {
                    key: key(0, 1),
                    queue: 0,
                    offset: 1,
                    found: Some(Some(key(0, 3))),
                },
                Violation::OutOfOrder {
                    queue: 0,
                    producer: 0,
                    earlier: (1, 3),
                    later: (2, 2),
                },
            ]
        );
    }

    #[test]
    fn an_acknowledged_message_under_another_id_is_found() {
        let mut h = clean();
        h.read_back
            .get_mut(&1)
            .unwrap()
            .get_mut(&0)
            .unwrap()
            .message_id = "moved".into();
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![Violation::IdMismatch {
                key: key(1, 0),
                queue: 1,
                offset: 0,
                acked: "id-1-0".into(),
                stored: "moved".into(),
            }]
        );
    }

    #[test]
    fn a_message_never_sent_is_found() {
        let mut h = clean();
        let queue = h.read_back.get_mut(&0).unwrap();
        queue.insert(
            3,
            Stored {
                key: Some(key(0, 3)),
                message_id: "x".into(),
            },
        );
        queue.insert(
            4,
            Stored {
                key: None,
                message_id: "y".into(),
            },
        );
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![
                Violation::NeverSent {
                    queue: 0,
                    offset: 3,
                    key: Some(key(0, 3)),
                },
                Violation::NeverSent {
                    queue: 0,
                    offset: 4,
                    key: None,
                },
            ]
        );
    }

    #[test]
    fn a_duplicate_in_a_queue_is_found_but_not_across_queues() {
        let mut h = clean();
        h.read_back.get_mut(&0).unwrap().insert(
            3,
            Stored {
                key: Some(key(0, 2)),
                message_id: "again".into(),
            },
        );
        // The same message in another queue is no duplicate of the queue's own.
        h.read_back.get_mut(&1).unwrap().insert(
            3,
            Stored {
                key: Some(key(0, 0)),
                message_id: "elsewhere".into(),
            },
        );
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![Violation::Duplicate {
                queue: 0,
                key: key(0, 2),
                offsets: vec![2, 3],
            }]
        );
    }

    #[test]
    fn producer_order_is_checked_per_queue_and_producer() {
        let mut h = clean();
        // Producer 1's messages interleaved with producer 0's in queue 0 are fine while each
        // producer's own sequence grows.
        let q = h.read_back.get_mut(&0).unwrap();
        q.insert(
            3,
            Stored {
                key: Some(key(1, 0)),
                message_id: "a".into(),
            },
        );
        let report = check(&h);
        assert!(
            report
                .violations
                .iter()
                .all(|v| !matches!(v, Violation::OutOfOrder { .. })),
            "{report}"
        );
        // Swap two of producer 0's messages.
        let q = h.read_back.get_mut(&0).unwrap();
        let first = q.remove(&0).unwrap();
        let second = q.remove(&1).unwrap();
        q.insert(0, second);
        q.insert(1, first);
        let report = check(&h);
        assert!(
            report.violations.contains(&Violation::OutOfOrder {
                queue: 0,
                producer: 0,
                earlier: (0, 1),
                later: (1, 0),
            }),
            "{report}"
        );
    }

    #[test]
    fn committed_offsets_moving_back_or_past_the_end_are_found() {
        let mut h = clean();
        h.commits.push(CommitSample {
            queue: 1,
            offset: 2,
            at: ms(900),
        });
        h.commits.push(CommitSample {
            queue: 0,
            offset: 5,
            at: ms(950),
        });
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![
                Violation::CommitBackwards {
                    queue: 1,
                    from: 3,
                    to: 2,
                    at: ms(900),
                },
                Violation::CommitPastEnd {
                    queue: 0,
                    committed: 5,
                    end: 3,
                },
            ]
        );
    }

    #[test]
    fn a_delivery_of_undone_data_is_found() {
        let mut h = clean();
        h.attempted.insert(1, 5);
        // The consumer saw producer 1's seq 4 at 1:3, which the log no longer holds.
        h.deliveries.push(Delivery {
            key: Some(key(1, 4)),
            queue: 1,
            offset: 3,
            at: ms(700),
        });
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![Violation::DeliveryMismatch {
                queue: 1,
                offset: 3,
                delivered: Some(key(1, 4)),
                stored: None,
            }]
        );
    }

    #[test]
    fn recovery_is_the_time_from_a_fault_to_the_next_ack() {
        let mut h = clean();
        // Acks at 0, 10, 100, 110, 200, 210 ms.
        for (at, node) in [(5, 1), (100, 2), (150, 3), (500, 1)] {
            h.faults.push(Fault {
                what: "SIGKILL leader".into(),
                node,
                at: ms(at),
            });
        }
        let report = check(&h);
        let times: Vec<_> = report.recoveries.iter().map(|r| r.to_next_ack).collect();
        assert_eq!(times, vec![Some(ms(5)), Some(ms(10)), Some(ms(50)), None]);
        let q = report.recovery_quantiles().unwrap();
        assert_eq!((q.count, q.p50, q.p99, q.max), (3, ms(10), ms(50), ms(50)));
        let unrecovered = std::panic::catch_unwind(|| report.assert_clean(Duration::from_secs(1)));
        assert!(
            unrecovered.is_err(),
            "a fault never followed by an ack fails"
        );
    }
}

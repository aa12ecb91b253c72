//! Consumers: [`PushConsumer`] (a handler closure) and [`PullConsumer`] (poll yourself), both
//! members of a consumer group, and [`SharedConsumer`], a member of a shared group.
//!
//! The machinery under them is internal and depends one way, each module only on those
//! below it:
//!
//! ```text
//! push, pull      the consumers: a Group plus the application's side
//!   rebalance     group membership: heartbeats, queue assignment and hand-over, commits
//!     fetcher     the long-poll loop of one owned queue; hands each batch to a sink
//!       orderly, concurrent   push delivery: one at a time under the queue's lease, or
//!                             a batch with send-back and local redelivery on failure
//!         offset_store        what is safe to commit, and where offsets live
//!           (this module)     the vocabulary: settings, QueueKey, PullResult, Handler,
//!                             Sink, Fetched, Member
//! shared          the shared-group consumer (uses only this module's vocabulary)
//! ```

pub(crate) mod concurrent;
pub(crate) mod fetcher;
pub(crate) mod offset_store;
pub(crate) mod orderly;
pub mod pull;
pub mod push;
pub(crate) mod rebalance;
pub mod shared;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc;
use weir_proto::pb;

use crate::connection::ConnectionConfig;
use crate::message::ReceivedMessage;
use crate::pool::Pool;

pub use pull::PullConsumer;
pub use push::PushConsumer;
pub use shared::{SharedConsumer, SharedConsumerConfig, SharedMessage, SharedWorkers};

/// How a group's members share its topics' messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeMode {
    /// Each queue is owned by one member at a time; the broker keeps the group's offsets.
    #[default]
    Clustering,
    /// Every member gets every message; each member keeps its own offsets.
    Broadcast,
}

impl ConsumeMode {
    pub(crate) fn to_pb(self) -> pb::ConsumeMode {
        match self {
            ConsumeMode::Clustering => pb::ConsumeMode::Clustering,
            ConsumeMode::Broadcast => pb::ConsumeMode::Broadcast,
        }
    }
}

/// Where a group starts on a queue it has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// After the last message stored so far: only new messages.
    #[default]
    Latest,
    /// At the oldest message still stored.
    Earliest,
}

impl StartFrom {
    pub(crate) fn to_pb(self) -> pb::StartFrom {
        match self {
            StartFrom::Latest => pb::StartFrom::Latest,
            StartFrom::Earliest => pb::StartFrom::Earliest,
        }
    }
}

/// What a push consumer's handler says about the message(s) it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Processed; the offset may move past it.
    Success,
    /// Not processed. In clustering mode the message is handed back to the broker
    /// (`SendBack`), which redelivers it to the group later through `%RETRY%<group>` with a
    /// growing back-off, and after the broker's `max_retries` moves it to `%DLQ%<group>`; the
    /// queue's other messages keep flowing. If the broker cannot be told (and in broadcast
    /// mode), the handler gets it again locally after a back-off, the queue waiting, at most
    /// `max_redeliveries` times; then it is skipped with an error log. A handler that panics
    /// or runs longer than `handler_timeout` counts as `Retry`.
    Retry,
}

/// Settings of a consumer ([`PushConsumer`] or [`PullConsumer`]).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Servers to ask for routes (`host:port` each).
    pub servers: Vec<String>,
    /// The consumer group.
    pub group: String,
    /// The topics subscribed to.
    pub topics: Vec<String>,
    /// Clustering or broadcast.
    pub mode: ConsumeMode,
    /// Where to start on queues the group has no offset for.
    pub start_from: StartFrom,
    /// Most messages asked for per pull.
    pub pull_batch: u32,
    /// Most bytes asked for per pull (at least one message is always returned).
    pub pull_max_bytes: u32,
    /// How long the broker may hold an empty pull (long polling).
    pub max_wait: Duration,
    /// Tag filter: `*` for all, else `TagA || TagB`. The broker skips by tag hash; the
    /// client compares the tags themselves (a batch that mixes tags comes whole).
    pub tag_expression: String,
    /// How often processed offsets are committed.
    pub commit_interval: Duration,
    /// Broadcast mode: a directory where offsets are kept in a JSON file across restarts
    /// (`None`: in memory only).
    pub offsets_dir: Option<PathBuf>,
    /// Push consumer: how many times a message whose handler says [`ConsumeResult::Retry`] is
    /// handed over again locally (when it cannot be sent back to the broker) before it is
    /// skipped.
    pub max_redeliveries: u32,
    /// Push consumer: a handler call that takes longer counts as failed
    /// ([`ConsumeResult::Retry`]), whatever it returned.
    pub handler_timeout: Duration,
    /// Pull consumer: most messages one `poll` returns.
    pub max_poll_messages: usize,
    /// Push consumer: orderly consumption: one message at a time per queue, only while this
    /// member holds the queue's broker-side lock; a failed message is retried in place after
    /// `orderly_retry_pause`, and after `orderly_max_attempts` calls it goes to
    /// `%DLQ%<group>`. Clustering mode only.
    pub orderly: bool,
    /// Orderly: pause before a failed message is handed over again.
    pub orderly_retry_pause: Duration,
    /// Orderly: handler calls for one message before it goes to the dead-letter topic.
    pub orderly_max_attempts: u32,
    /// Connection settings.
    pub connection: ConnectionConfig,
}

impl ConsumerConfig {
    /// Defaults for `group` consuming `topic`, with routes asked from `servers`.
    pub fn new<S: Into<String>>(
        servers: impl IntoIterator<Item = S>,
        group: impl Into<String>,
        topic: impl Into<String>,
    ) -> ConsumerConfig {
        ConsumerConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            group: group.into(),
            topics: vec![topic.into()],
            mode: ConsumeMode::Clustering,
            start_from: StartFrom::Latest,
            pull_batch: 32,
            pull_max_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_secs(15),
            tag_expression: "*".into(),
            commit_interval: Duration::from_secs(1),
            offsets_dir: None,
            max_redeliveries: 16,
            handler_timeout: Duration::from_secs(15 * 60),
            max_poll_messages: 256,
            orderly: false,
            orderly_retry_pause: Duration::from_secs(1),
            orderly_max_attempts: 16,
            connection: ConnectionConfig::default(),
        }
    }
}

/// Settings of a [`PushConsumer`].
pub type PushConsumerConfig = ConsumerConfig;
/// Settings of a [`PullConsumer`].
pub type PullConsumerConfig = ConsumerConfig;

/// One queue of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    /// The topic.
    pub topic: String,
    /// The queue id.
    pub queue_id: u32,
}

impl std::fmt::Display for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.topic, self.queue_id)
    }
}

/// What one pull returned.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// The messages, in queue order.
    pub messages: Vec<ReceivedMessage>,
    /// Where to pull next (past messages skipped by the tag filter too).
    pub next_offset: u64,
    /// The queue's minimum offset.
    pub min_offset: u64,
    /// The queue's maximum offset (the offset the next message stored will get).
    pub max_offset: u64,
    /// Offsets below `next_offset` the broker stepped over because their message is damaged
    /// on its disk: they will never be delivered.
    pub skipped: Vec<SkippedRange>,
}

/// Queue offsets `[from, to)` a broker could not serve because they are damaged on its disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    /// First skipped offset.
    pub from: u64,
    /// One past the last skipped offset.
    pub to: u64,
    /// Why (`corrupt_record`, `index_mismatch`, `missing_entry`, `lost_in_log`).
    pub reason: String,
}

impl SkippedRange {
    /// Offsets in the range.
    pub fn len(&self) -> u64 {
        self.to.saturating_sub(self.from)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type EachFn = dyn Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync;
type BatchFn = dyn Fn(&[ReceivedMessage]) -> ConsumeResult + Send + Sync;

/// The user's handler: per message or per pulled batch.
#[derive(Clone)]
pub(crate) enum Handler {
    Each(Arc<EachFn>),
    Batch(Arc<BatchFn>),
}

/// Runs `f` where blocking is allowed: in `block_in_place` on a multi-threaded runtime.
pub(crate) fn run_handler<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Where fetched messages go.
pub(crate) enum Sink {
    /// To a handler, in the fetch loop (push consumer).
    Push(Handler),
    /// Into a channel drained by `poll` (pull consumer).
    Pull(mpsc::Sender<Fetched>),
}

/// Messages fetched from one queue, for the pull consumer's buffer.
pub(crate) struct Fetched {
    pub key: QueueKey,
    pub epoch: u64,
    pub messages: Vec<ReceivedMessage>,
}

/// A group member as its fetch loops and deliveries see it: settings, identity, connections
/// and where fetched messages go. The member's group machinery (the rebalancer's `Group`) and
/// each of its queues' loops share one.
pub(crate) struct Member {
    pub config: ConsumerConfig,
    pub member_id: String,
    /// Connections to the brokers (shared with the member's route cache).
    pub pool: Arc<Pool>,
    pub sink: Sink,
    /// Messages the brokers skipped because they are damaged on disk (see [`SkippedRange`]).
    pub damaged_skipped: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod tests {
    /// Each consumer module with its source and the sibling modules it may use. Every module
    /// may use only modules listed before it, so the imports cannot form a cycle.
    const LAYERS: &[(&str, &str, &[&str])] = &[
        ("offset_store", include_str!("offset_store.rs"), &[]),
        ("orderly", include_str!("orderly.rs"), &["offset_store"]),
        (
            "concurrent",
            include_str!("concurrent.rs"),
            &["offset_store"],
        ),
        (
            "fetcher",
            include_str!("fetcher.rs"),
            &["offset_store", "orderly", "concurrent"],
        ),
        (
            "rebalance",
            include_str!("rebalance.rs"),
            &["offset_store", "orderly", "fetcher"],
        ),
        ("push", include_str!("push.rs"), &["rebalance"]),
        (
            "pull",
            include_str!("pull.rs"),
            &["offset_store", "fetcher", "rebalance"],
        ),
        ("shared", include_str!("shared.rs"), &[]),
    ];

    /// The sibling modules `source` refers to: `consumer::name`, `super::name`, or `name` in
    /// a `use crate::consumer::{...}` list.
    fn used_siblings(source: &str) -> Vec<&'static str> {
        let mut grouped = Vec::new();
        for (start, _) in source.match_indices("crate::consumer::{") {
            let rest = &source[start + "crate::consumer::{".len()..];
            let list = rest.split('}').next().unwrap_or_default();
            grouped.extend(
                list.split(',')
                    .filter_map(|item| item.split([':', ' ', '\n']).find(|w| !w.is_empty())),
            );
        }
        LAYERS
            .iter()
            .map(|(name, _, _)| *name)
            .filter(|name| {
                source.contains(&format!("consumer::{name}"))
                    || source.contains(&format!("super::{name}"))
                    || grouped.contains(name)
            })
            .collect()
    }

    #[test]
    fn consumer_modules_depend_one_way() {
        for (i, (name, source, allowed)) in LAYERS.iter().enumerate() {
            let earlier: Vec<&str> = LAYERS[..i].iter().map(|(n, _, _)| *n).collect();
            for dep in *allowed {
                assert!(
                    earlier.contains(dep),
                    "{name} may only use modules below it"
                );
            }
            for used in used_siblings(source) {
                assert!(
                    used == *name || allowed.contains(&used),
                    "consumer/{name}.rs uses {used}, which is not below it in the chain"
                );
            }
        }
        // The vocabulary uses none of the machinery.
        let vocabulary = include_str!("mod.rs").split("#[cfg(test)]").next();
        for name in [
            "offset_store",
            "orderly",
            "concurrent",
            "fetcher",
            "rebalance",
        ] {
            assert!(
                !vocabulary
                    .unwrap_or_default()
                    .contains(&format!("{name}::")),
                "mod.rs uses {name}"
            );
        }
    }
}

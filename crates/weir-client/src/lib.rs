//! Rust client SDK for Weir.
//!
//! * [`Producer`] — `send` (waits for the ack), `send_async`, `send_oneway`, and `send_batch`
//!   (a whole batch in one call with one completion); batching with linger, compression
//!   ([`Compression`]), retries with back-off, queue choice by key hash or round-robin, latency
//!   fault avoidance. Messages go out as Kafka RecordBatch v2 batches in a Weir envelope
//!   (`weir_proto::batch`): headers keep their order, repeated names and binary or null values.
//! * [`PushConsumer`] — a handler closure fed by long-polling pull loops, one per owned queue;
//!   clustering or broadcast groups; offsets committed periodically and on shutdown.
//! * [`PullConsumer`] — subscribe like the push consumer and `poll` yourself, or `pull` any
//!   queue at any offset.
//! * [`SharedConsumer`] — a member of a shared group: `receive`, then `ack`, `nack` or
//!   `change_invisibility` each message; parallelism is not capped by the queue count.
//! * [`Admin`] — topics, groups, offsets, message lookup.
//! * [`TransactionProducer`] — half message, local transaction, commit or rollback, and the
//!   broker's check-back of undecided transactions. [`ProducerConfig::idempotent`] makes a
//!   [`Producer`] idempotent (a resent batch is stored once).
//!
//! ```no_run
//! # async fn example() -> weir_client::Result<()> {
//! use weir_client::{Message, Producer, ProducerConfig};
//! let producer = Producer::new(ProducerConfig::new(["127.0.0.1:9876"]))?;
//! let sent = producer.send(Message::new("orders", "hello").with_key("order-1")).await?;
//! println!("stored as {} at {}:{}", sent.message_id, sent.queue_id, sent.queue_offset);
//! producer.close().await;
//! # Ok(()) }
//! ```

mod ack_latency;
pub mod admin;
mod batch;
pub mod cluster;
pub mod connection;
pub mod consumer;
mod dead_letter;
mod entries;
pub mod error;
mod fault;
pub mod message;
mod pool;
pub mod producer;
mod replicas;
mod route;
pub mod transaction;

pub use admin::{Admin, ResetTo};
pub use batch::BatchSendResult;
pub use cluster::ClusterStatus;
pub use consumer::{
    ConsumeMode, ConsumeResult, ConsumerConfig, PullConsumer, PullConsumerConfig, PullResult,
    PushConsumer, PushConsumerConfig, QueueKey, SharedConsumer, SharedConsumerConfig,
    SharedMessage, SharedWorkers, SkippedRange, StartFrom,
};
pub use error::{ClientError, Result};
pub use fault::FaultConfig;
pub use message::{Message, ReceivedMessage, SendResult};
pub use producer::{BatchSendHandle, Producer, ProducerConfig, QueueSelection, SendHandle};
pub use replicas::ReplicaChange;
pub use route::{QueueRoute, TopicRoute};
pub use transaction::{TransactionChecker, TransactionProducer, TxOutcome, TxState};
pub use weir_proto::batch::Compression;
pub use weir_proto::names;
pub use weir_proto::{ErrorCode, MessageId};

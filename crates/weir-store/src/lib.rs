//! Weir's storage engine.
//!
//! One append-only [commit log](commit_log) holds every topic's records in segment files;
//! per-(topic, queue) [consume queues](consume_queue) and a [key index](key_index) are built
//! from it by the [dispatcher](dispatch) and can always be rebuilt from it. [Flushing](flush)
//! is async (interval) or sync (group commit); a [checkpoint](checkpoint) bounds
//! [recovery](recovery) to the data written since; [retention](retention) deletes old
//! segments. Every read [verifies](verify) what it serves; [damage](damage) is isolated and
//! listed, never fatal. The entry point is [`Store`]; see `docs/storage.md` for the whole picture.

#![deny(unsafe_code)]

mod checkpoint;
mod commit_log;
mod config;
mod consume_queue;
mod damage;
mod dispatch;
mod error;
mod filter;
mod flush;
mod key_index;
mod log_copy;
pub mod metric_names;
mod mmap;
mod page_cache;
mod recovery;
mod retention;
mod segment;
mod store;
mod tombstones;
mod topic_bytes;
mod verify;

pub use config::{FlushMode, StoreConfig};
pub use damage::{DamageLocation, DamageReason, DamagedRange, SkippedRange};
pub use error::StoreError;
pub use filter::TagFilter;
pub use log_copy::{LogSpan, StagedLog, replace_log};
pub use store::{AppendResult, DispatchListener, QueueOffsets, ReadResult, Store, StoreStats};

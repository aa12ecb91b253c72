//! Where a producer's batch went, as every protocol answers it.

/// The position of a stored batch: its entry's and its first message's, and each message's
/// when the batch was not stored as one entry (a batch with delayed messages is split between
/// its queue and `%DELAY%`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Produced {
    /// Queue offset of the first message (the others follow by one).
    pub queue_offset: u64,
    /// Commit-log offset of the batch's entry (message i's id is this and i).
    pub commit_log_offset: u64,
    /// Messages in the batch.
    pub count: u32,
    /// Store timestamp of the batch, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// With a split batch: the commit-log offset of each message's entry, in batch order;
    /// else empty.
    pub record_offsets: Vec<u64>,
    /// With a split batch: each message's queue offset (0 for a delayed one); else empty.
    pub record_queue_offsets: Vec<u64>,
    /// With a split batch: each message's index in its entry; else empty.
    pub record_indexes: Vec<u32>,
}

impl Produced {
    /// A batch stored contiguously in one queue.
    pub fn contiguous(stored: &weir_store::AppendResult) -> Produced {
        Produced {
            queue_offset: stored.queue_offset,
            commit_log_offset: stored.commit_log_offset,
            count: stored.count,
            store_timestamp: stored.store_timestamp,
            ..Produced::default()
        }
    }
}

//! Where a producer's batch went, as every protocol answers it.

/// The position of a stored batch: its first record's, and each record's when they were not
/// stored contiguously (a batch with delayed records is split between its queue and
/// `%DELAY%`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Produced {
    /// Queue offset of the first record stored in its queue (the others follow by one).
    pub queue_offset: u64,
    /// Commit-log offset of the first record (its message id).
    pub commit_log_offset: u64,
    /// Records in the batch.
    pub count: u32,
    /// Store timestamp of the batch, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// With a split batch: each record's commit-log offset, in batch order; else empty.
    pub record_offsets: Vec<u64>,
    /// With a split batch: each record's queue offset (0 for a delayed one); else empty.
    pub record_queue_offsets: Vec<u64>,
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

//! Background collection of partitions detached by `clear_store`.
//!
//! `clear_store` only moves a partition id into `garbage`; the writer then
//! deletes that partition's entries here, at most [`CHUNK_ENTRIES`] per
//! transaction, between client groups. Partition ids are never reused, so
//! a partition being collected can never receive new writes.

use redb::{ReadableTable, WriteTransaction};

use super::schema::{GARBAGE, KV, partition_range};
use super::{EngineResult, StorageContext as _};

/// Entries deleted per GC transaction: a few milliseconds of work, so
/// client writes queued behind a chunk wait briefly.
pub(crate) const CHUNK_ENTRIES: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Nothing to collect.
    Idle,
    Removed {
        pid: u64,
        removed: u64,
        /// The partition is gone and left `garbage`.
        finished: bool,
    },
}

/// Deletes up to `max` entries of the oldest garbage partition.
pub(crate) fn collect_chunk(txn: &WriteTransaction, max: usize) -> EngineResult<Progress> {
    let mut garbage = txn.open_table(GARBAGE).ctx("gc open")?;
    let Some(pid) = garbage.first().ctx("gc")?.map(|(k, _)| k.value()) else {
        return Ok(Progress::Idle);
    };
    let mut kv = txn.open_table(KV).ctx("gc open")?;
    let mut removed = 0usize;
    {
        // Only entries pulled from the iterator are removed, which is what
        // bounds the chunk.
        let mut extracted = kv
            .extract_from_if(partition_range(pid), |_, _| true)
            .ctx("gc")?;
        while removed < max {
            match extracted.next() {
                Some(item) => {
                    item.ctx("gc")?;
                    removed += 1;
                }
                None => break,
            }
        }
    }
    let finished = removed < max;
    if finished {
        garbage.remove(pid).ctx("gc")?;
    }
    Ok(Progress::Removed {
        pid,
        removed: removed as u64,
        finished,
    })
}

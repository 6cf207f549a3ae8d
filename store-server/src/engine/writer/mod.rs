//! The group-commit writer.
//!
//! One dedicated thread owns every redb write transaction. It blocks for the
//! first queued write, takes everything else already queued (bounded by
//! [`group::MAX_GROUP_OPS`] and [`group::MAX_GROUP_BYTES`]), applies the
//! whole group in one transaction, commits once, and only then answers each
//! request. Under concurrency this turns N fsyncs into one.
//!
//! [`handle`] is the async side (channel, submit, reply, lifecycle);
//! [`group`] is the thread (grouping, durability, commit, GC turns); the
//! ops themselves are applied by [`super::tables`].

mod group;
mod handle;

use std::sync::Arc;

use bytes::Bytes;
use drasi_store_protocol::{EntriesFrame, KeysFrame};
use tokio::sync::oneshot;

use super::EngineResult;
use super::import::ImportPlan;
#[cfg(test)]
pub(crate) use handle::QUEUE_CAPACITY;
pub(crate) use handle::{WriterHandle, WriterState, spawn};

/// A write request, as the HTTP layer hands it over: already decoded and
/// checked against the limits, so the writer only applies it.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Set {
        store: String,
        key: String,
        value: Bytes,
    },
    Delete {
        store: String,
        key: String,
    },
    SetMany {
        store: String,
        entries: EntriesFrame,
    },
    DeleteMany {
        store: String,
        keys: KeysFrame,
    },
    Clear {
        store: String,
    },
    /// Forces a durable commit and answers after it.
    Sync,
    /// A write-ahead log write (see [`super::wal`]).
    Wal(super::wal::WalOp),
    /// Replaces whole stores with the records of a snapshot file that
    /// `engine::import` verified completely before handing it over.
    Import(Arc<ImportPlan>),
}

impl WriteOp {
    /// What the op adds to a group's size.
    pub(crate) fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Set { key, value, .. } => key.len() + value.len(),
            WriteOp::SetMany { entries, .. } => entries.frame_bytes(),
            WriteOp::DeleteMany { keys, .. } => keys.frame_bytes(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::Clear { .. } | WriteOp::Sync => 0,
            WriteOp::Wal(op) => op.payload_bytes(),
            WriteOp::Import(plan) => usize::try_from(plan.spool_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// What a write returned: `count` is "existed" (0/1) for delete, the
/// number of keys removed for delete-many and clear, 0 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub count: u64,
    /// Set when a WAL op was refused; it changed nothing, and the rest of
    /// its group commits.
    pub refusal: Option<super::wal::Refusal>,
}

type ReplyTx = oneshot::Sender<EngineResult<Reply>>;

enum Msg {
    Write(WriteOp, ReplyTx),
    /// Writes from one mixed batch request, sent together so that they
    /// join the same group (one commit) rather than racing the writer's
    /// wake-up one by one.
    WriteMany(Vec<(WriteOp, ReplyTx)>),
    Shutdown(oneshot::Sender<anyhow::Result<()>>),
    /// Something other than the writer (the replication state machine)
    /// detached partitions: collect them.
    CollectGarbage,
    /// Makes the writer thread panic, so tests can check what a dead
    /// writer looks like from the outside. Not compiled into the server.
    #[cfg(test)]
    Crash,
    /// Keeps the writer busy until the sender is dropped, so tests can
    /// fill its queue.
    #[cfg(test)]
    Hold {
        held: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

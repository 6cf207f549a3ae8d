//! Replication on Raft (openraft 0.9): groundwork, not yet used by the
//! server. docs/replication.md is the design and lists what exists.
//!
//! What is here: the type configuration, [`LogStore`] (the Raft log in
//! its own redb file) and [`StateMachine`] (the engine's database applying
//! one group per entry, snapshots as the backup stream). The peer
//! transport and the wiring into the request path come next.

mod log_store;
mod state_machine;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use log_store::{LOG_FILE_NAME, LogStore};
pub use state_machine::StateMachine;

/// A node's id: the StatefulSet ordinal of its pod (`--node-id`).
pub type NodeId = u64;

/// One group-commit group, the payload of one log entry.
///
/// `group` holds the group's write requests in the commit journal's record
/// encoding (`engine::journal::encode`); the log store treats it as opaque.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPayload {
    pub group: Vec<u8>,
}

/// The answers to one applied group, one per request
/// (`state_machine::encode_replies`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupResult {
    pub replies: Vec<u8>,
}

openraft::declare_raft_types!(
    /// The Raft types of a replicated store. Members are addressed by
    /// [`openraft::BasicNode`], whose `addr` is the peer `host:port`.
    /// Snapshots are files in the data directory holding the backup
    /// snapshot stream, so a large one is never held in memory.
    pub TypeConfig:
        D = LogPayload,
        R = GroupResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
);

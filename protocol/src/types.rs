//! Small JSON bodies. Values never travel as JSON: single values are raw
//! bytes and batches use the binary framing in [`crate::batch`].

use serde::{Deserialize, Serialize};

/// Answer to `DELETE /v1/kv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteResponse {
    pub existed: bool,
}

/// Answer to `POST /v1/kv/delete-many` and `DELETE /v1/store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CountResponse {
    pub count: u64,
}

/// Answer to `GET /v1/store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StoreInfo {
    /// True only when the partition holds at least one key.
    pub exists: bool,
    pub key_count: u64,
}

/// Answer to `GET /v1/store/keys`, in no particular order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    pub keys: Vec<String>,
}

/// Answer to `POST /v1/admin/import`: what the imported snapshot held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportResponse {
    /// Records written.
    pub records: u64,
    /// The store_ids replaced, sorted: every store_id with records plus
    /// those a selective snapshot lists (emptied when it holds none).
    pub stores: Vec<String>,
    /// Length of the snapshot stream.
    pub bytes: u64,
    /// The snapshot's SHA-256 (its trailer checksum), in hex.
    pub sha256: String,
}

/// How the server commits writes (`--durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A write is acknowledged after its commit reached the disk (fsync).
    Immediate,
    /// A write is acknowledged before its commit reaches the disk; a crash
    /// loses about the last second of acknowledged writes.
    Eventual,
}

impl Durability {
    /// As on the wire, in [`ServerInfo`] and the durability header.
    pub const fn as_str(self) -> &'static str {
        match self {
            Durability::Immediate => "immediate",
            Durability::Eventual => "eventual",
        }
    }

    /// Parses the durability header's value.
    pub fn from_header(value: &[u8]) -> Option<Self> {
        match value {
            b"immediate" => Some(Durability::Immediate),
            b"eventual" => Some(Durability::Eventual),
            _ => None,
        }
    }
}

/// Answer to `GET /v1/info`: what a client needs to know about the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerInfo {
    pub durability: Durability,
    /// The server's version (its crate version).
    pub version: String,
}

/// A node's role in a replicated store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    Leader,
    Follower,
    Candidate,
    Learner,
}

/// One member of a replicated store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub id: u64,
    /// Its peer address (`host:port`); empty on a single node.
    pub addr: String,
    /// False for a learner, which replicates without voting.
    pub voter: bool,
}

/// Answer to `GET /v1/cluster`: this node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    pub node_id: u64,
    pub role: ClusterRole,
    /// The leader this node knows of, if any.
    pub leader_id: Option<u64>,
    pub term: u64,
    /// The last log index this node knows to be committed.
    pub commit_index: u64,
    /// The last log index applied to this node's data.
    pub applied_index: u64,
    pub members: Vec<ClusterMember>,
    /// On the leader: how many log entries each other member is behind
    /// (by id; absent when its progress is not known yet).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lag: std::collections::BTreeMap<u64, u64>,
}

/// Answer to `POST /v1/cluster/step-down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StepDownResponse {
    /// True when this node was the leader and another node now is; false
    /// when it was not the leader to begin with (nothing changed).
    pub stepped_down: bool,
    /// The leader now, as this node knows it.
    pub leader_id: Option<u64>,
    pub term: u64,
    /// From the request to the new leader being known (0 when nothing
    /// was handed over).
    pub took_ms: u64,
}

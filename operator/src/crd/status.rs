//! `DrasiStateStore` status: what the reconciler observed. Only the
//! reconciler writes it, through the status subresource.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::restore::RestoredFrom;

/// The condition types the reconciler maintains, in the order they appear
/// in `status.conditions`. The string form is the condition's `type`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumString,
)]
pub enum ConditionType {
    /// True when the server pod is ready and the connection Secret is current.
    Ready,
    /// True while the operator is rolling out a change (new pod, volume
    /// expansion, StatefulSet re-creation).
    Progressing,
    /// True when something needs a human: a missing Secret, a StorageClass
    /// that cannot expand, a pod that does not become ready.
    Degraded,
    /// Replicated stores only: True when a majority of the replicas agree
    /// on a leader, every replica answers `GET /v1/cluster` and none lags
    /// far behind. Informational: it never changes `Ready` or the phase.
    ReplicationHealthy,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrasiStateStoreStatus {
    /// Summary of the store's lifecycle; details are in `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Standard conditions: `Ready`, `Progressing`, `Degraded`, and for a
    /// replicated store `ReplicationHealthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready server pods (0 or 1; up to `spec.replicas` when replicated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// URL clients use, `http://<name>.<namespace>.svc:7070` (https with TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Name of the Secret to mount with `envFrom` (`<name>-connection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,

    /// Server image the StatefulSet runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Requested and actual size of the data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,

    /// Where the data was restored from (`spec.restore`), recorded when
    /// the store was created with the restore init container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,

    /// Replicated stores only (`spec.replicas` 3 or 5): the Raft group as
    /// the replicas report it on `GET /v1/cluster`. Absent with one
    /// replica and until the first probe of the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationStatus>,
}

// The string form (`Display`, `AsRef<str>`) is the serialized one: the
// value of `status.phase` and of the `phase` metric label. (A `//`
// comment: a doc comment would become the schema's description.)
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum Phase {
    /// Accepted; the operator has not applied the store's objects yet (the
    /// first pass is running, or failing: see the operator's logs).
    Pending,
    /// Objects applied, the server pod is not ready yet (first start, roll
    /// out or volume expansion).
    Provisioning,
    /// The server pod is ready and the connection Secret is current.
    Ready,
    /// Was ready, or should be, but something is wrong (see conditions).
    Degraded,
    /// `spec.paused` is true; the operator leaves everything as it is.
    Paused,
    /// Being deleted; the finalizer is cleaning up (PVC retention).
    Terminating,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// `spec.storage.size` as last applied to the volume claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Quantity>,
    /// Capacity the bound volume reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
}

/// The replication state of a replicated store, from each replica's
/// `GET /v1/cluster`. Rewritten only when something meaningful changes (the
/// leader, the term, a replica's role, reachability or whether it lags
/// more than the threshold), so the indexes and lags are those of
/// `observedAt`, not of every probe.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// Pod name of the leader a majority of the replicas agree on; absent
    /// when there is none (an election is running, or too few answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The Raft term: the leader's, else the highest a replica reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    /// The last committed log index: the leader's, else the highest a
    /// replica reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_index: Option<i64>,
    /// One entry per replica, by ordinal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<ReplicaStatus>,
    /// When these values were observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

/// One replica of a replicated store.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// The pod, `<name>-<ordinal>`.
    pub name: String,
    /// Its Raft node id (the pod ordinal), as it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i64>,
    /// Its role, as it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ReplicaRole>,
    /// The last log index applied to its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<i64>,
    /// Log entries it is behind the leader: from the leader's own view
    /// when the leader answered, else the commit index minus its applied
    /// index; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Whether it answered `GET /v1/cluster`.
    pub reachable: bool,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// A replica's role in the Raft group (the server's `role`, capitalized as
// Kubernetes enums are). A `//` comment: see `Phase`.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
)]
pub enum ReplicaRole {
    /// Accepts writes and replicates them.
    Leader,
    /// Replicates from the leader and votes.
    Follower,
    /// Asks for votes: an election is running.
    Candidate,
    /// Replicates without voting.
    Learner,
}

//! `DrasiStateStore` status: what the reconciler observed. Only the
//! reconciler writes it, through the status subresource.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrasiStateStoreStatus {
    /// Summary of the store's lifecycle; details are in `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Standard conditions: `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready server pods (0 or 1).
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

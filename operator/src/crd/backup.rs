//! The `DrasiStateStoreBackup` custom resource: one backup of one store,
//! taken by a Job. See docs/backup.md.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::data_protection::{BackupDestination, DNS_LABEL_PATTERN};

/// One consistent backup of one `DrasiStateStore` in the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "drasi.io",
    version = "v1alpha1",
    kind = "DrasiStateStoreBackup",
    plural = "drasistatestorebackups",
    shortname = "dssbackup",
    category = "drasi",
    namespaced,
    status = "DrasiStateStoreBackupStatus",
    derive = "PartialEq",
    doc = "One consistent backup of one DrasiStateStore, taken by a Job running drasi-store-server backup.",
    printcolumn(name = "Store", type_ = "string", json_path = ".spec.store", description = "The store backed up"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Pending, Running, Completed or Failed"),
    printcolumn(name = "Records", type_ = "integer", json_path = ".status.records", description = "Records in the snapshot"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes", description = "Snapshot size in bytes"),
    printcolumn(name = "Location", type_ = "string", json_path = ".status.location", priority = 1, description = "Where the snapshot is"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: it names the backup Job"),
    validation = Rule::new("self.spec == oldSelf.spec").message("spec is immutable: create a new DrasiStateStoreBackup instead"),
)]
#[serde(rename_all = "camelCase")]
pub struct DrasiStateStoreBackupSpec {
    /// Name of the `DrasiStateStore` in this namespace.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub store: String,

    /// Name of one of the store's `spec.backup.destinations`; the first
    /// one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub destination: Option<String>,
}

/// What the backup Job did. Only the operator writes it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrasiStateStoreBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,

    /// Machine-readable cause of the phase (e.g. `WaitingForOtherBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Human-readable detail; for `Failed`, the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The Job taking the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// `s3://bucket/key` or `pvc://<claim>/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,

    /// The destination as declared by the store when the backup started,
    /// so the backup can be read (restored, deleted) after the store is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<BackupDestination>,

    /// Snapshot size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stores: Option<i64>,

    /// SHA-256 of the snapshot stream (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,

    /// When the snapshot's read transaction was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time_unix_ms: Option<i64>,
}

// The string form is the value of `status.phase`.
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
)]
pub enum BackupPhase {
    /// Waiting to start (e.g. for another backup of the same store).
    Pending,
    /// The Job is running.
    Running,
    /// The snapshot is complete and verified at `location`.
    Completed,
    /// The backup failed; `message` says why. It is not retried.
    Failed,
}

impl BackupPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

//! `DrasiStateStore.spec.backup`: where backups of a store go. See
//! docs/backup.md.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::spec::SECRET_NAME_PATTERN;

/// Most destinations a store declares; keeps the CEL uniqueness rule's
/// cost bounded.
pub const MAX_DESTINATIONS: usize = 8;

/// DNS-1123 label: the syntax of a destination name and a PVC name.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Backup destinations of a store, declared once and referenced by name
/// from each `DrasiStateStoreBackup`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The first one is the default of a backup without `destination`.
    #[schemars(length(min = 1, max = MAX_DESTINATIONS))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))").message("spec.backup.destinations must have unique names"))]
    pub destinations: Vec<BackupDestination>,
}

/// One place backups are written to: object storage or a volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.objectStore) != has(self.volume)").message("a backup destination sets exactly one of objectStore and volume"))]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// Name referenced by `DrasiStateStoreBackup.spec.destination`.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreDestination>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
}

/// An S3-compatible bucket. Objects are named
/// `<prefix><namespace>/<store>/<backup>.snap`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreDestination {
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][-a-z0-9.]*[a-z0-9]$"))]
    pub bucket: String,

    /// Key prefix, e.g. `backups/`; a trailing `/` is added when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(r"^[^\s]*$"))]
    pub prefix: Option<String>,

    #[serde(flatten)]
    pub access: ObjectStoreAccess,
}

/// How a pod reaches S3-compatible storage: the fields a backup
/// destination's `objectStore` shares with `spec.restore.objectStore`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.endpoint) || self.endpoint.startsWith('https://') || self.endpoint.startsWith('http://')").message("objectStore.endpoint must be an http:// or https:// URL"))]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreAccess {
    /// Endpoint of an S3-compatible service (`AWS_ENDPOINT_URL`); AWS when
    /// unset. An `http://` endpoint also sets `AWS_ALLOW_HTTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,

    /// Region (`AWS_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,

    /// Secret in the store's namespace with the keys `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`, labelled
    /// `drasi.io/state-store-access: <store>` (or `true`). Only backup Jobs
    /// and the restore init container receive it, never the server
    /// container. Unset: the pod's own identity (e.g. IRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub credentials_secret: Option<String>,
}

/// A PersistentVolumeClaim in the store's namespace. Files are named
/// `<path>/<namespace>/<store>/<backup>.snap`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub claim_name: String,

    /// Directory inside the volume (relative, no `..`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.split('/').exists(s, s == '..')").message("volume.path must be relative and must not contain '..'"))]
    pub path: Option<String>,
}

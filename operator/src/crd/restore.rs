//! `DrasiStateStore.spec.restore`: fill a new store's volume from a backup
//! before its server first starts, and `status.restoredFrom`, where the
//! data came from. See docs/restore.md.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::data_protection::{DNS_LABEL_PATTERN, ObjectStoreAccess};

/// Syntax of `spec.restore.source`: `s3://<bucket>/<key>` or
/// `pvc://<claim>/<path to the file>`. `..` segments are refused by a CEL
/// rule (and by [`RestoreLocation::parse`]).
pub const RESTORE_SOURCE_PATTERN: &str = r"^(s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/\S*[^/\s]$";

/// Where a new store's data comes from. Set at creation only: the CRD
/// refuses adding, changing or removing it later (a restore fills an empty
/// volume once; restoring into a live store is `drasi-store-server
/// import`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.fromBackup) != has(self.source)").message("spec.restore sets exactly one of fromBackup and source"))]
#[x_kube(validation = Rule::new("!has(self.objectStore) || (has(self.source) && self.source.startsWith('s3://'))").message("spec.restore.objectStore goes only with an s3:// source: a fromBackup restore reads the backup's own destination"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Name of a `DrasiStateStoreBackup` in this namespace. The store is
    /// created once the backup is `Completed`; the snapshot is read from
    /// the destination recorded in the backup's status, so the backed-up
    /// store may be gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub from_backup: Option<String>,

    /// A snapshot file: `s3://<bucket>/<key>` (endpoint, region and
    /// credentials in `objectStore`) or `pvc://<claim>/<path>` (a
    /// PersistentVolumeClaim in this namespace, mounted read-only into the
    /// restore init container only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), pattern(RESTORE_SOURCE_PATTERN))]
    #[x_kube(validation = Rule::new("!self.startsWith('pvc://') || !self.split('/').exists(s, s == '..')").message("spec.restore.source: a pvc:// path must not contain '..'"))]
    pub source: Option<String>,

    /// How to reach an `s3://` source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreAccess>,
}

/// Where the store's data was restored from, as resolved when the store
/// was created. The restore init container is built from it on every
/// later pass, so deleting the backup afterwards changes nothing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// The `DrasiStateStoreBackup` (`spec.restore.fromBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,

    /// The snapshot: `s3://bucket/key` or `pvc://<claim>/<path>`.
    pub location: String,

    /// How the init container reaches an `s3://` location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreAccess>,
}

/// A parsed `s3://` or `pvc://` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreLocation {
    S3 {
        bucket: String,
        key: String,
    },
    /// `path` is relative to the claim's root.
    Volume {
        claim: String,
        path: String,
    },
}

impl RestoreLocation {
    /// Parses a location as `spec.restore.source` and a backup's
    /// `status.location` write it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let split = |rest: &str| -> Result<(String, String), String> {
            match rest.split_once('/') {
                Some((head, tail))
                    if !head.is_empty() && !tail.is_empty() && !tail.ends_with('/') =>
                {
                    Ok((head.to_owned(), tail.to_owned()))
                }
                _ => Err(format!(
                    "{raw:?} names no file: use s3://<bucket>/<key> or pvc://<claim>/<path>"
                )),
            }
        };
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, key) = split(rest)?;
            return Ok(Self::S3 { bucket, key });
        }
        if let Some(rest) = raw.strip_prefix("pvc://") {
            let (claim, path) = split(rest)?;
            if path.split('/').any(|s| s == "..") {
                return Err(format!("{raw:?}: a pvc:// path must not contain '..'"));
            }
            return Ok(Self::Volume { claim, path });
        }
        Err(format!(
            "{raw:?} is neither s3://<bucket>/<key> nor pvc://<claim>/<path>"
        ))
    }
}

/// The creation-time rules of `spec.restore` (see `validate`).
pub(super) fn validate(restore: &RestoreSpec, fail: &mut dyn FnMut(&str, String)) {
    match (&restore.from_backup, &restore.source) {
        (Some(_), Some(_)) | (None, None) => fail(
            "spec.restore",
            "sets exactly one of fromBackup and source".into(),
        ),
        _ => {}
    }
    if let Some(source) = &restore.source {
        match RestoreLocation::parse(source) {
            Err(message) => fail("spec.restore.source", message),
            Ok(RestoreLocation::Volume { .. }) if restore.object_store.is_some() => fail(
                "spec.restore.objectStore",
                "goes only with an s3:// source".into(),
            ),
            Ok(_) => {}
        }
    } else if restore.object_store.is_some() {
        fail(
            "spec.restore.objectStore",
            "goes only with an s3:// source: a fromBackup restore reads the backup's own \
             destination"
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_object_and_volume_locations() {
        assert_eq!(
            RestoreLocation::parse("s3://b-1/dir/x.snap"),
            Ok(RestoreLocation::S3 {
                bucket: "b-1".into(),
                key: "dir/x.snap".into()
            })
        );
        assert_eq!(
            RestoreLocation::parse("pvc://claim/ns/store/b.snap"),
            Ok(RestoreLocation::Volume {
                claim: "claim".into(),
                path: "ns/store/b.snap".into()
            })
        );
        for bad in [
            "s3://b",
            "s3://b/",
            "s3:///k",
            "s3://b/dir/",
            "pvc://claim",
            "pvc://claim/a/../b",
            "gs://b/k",
            "/file.snap",
            "",
        ] {
            assert!(RestoreLocation::parse(bad).is_err(), "{bad}");
        }
    }
}

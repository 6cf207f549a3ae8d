//! The validate step of a backup: a `DrasiStateStoreBackup` and its store
//! in, everything the Job builder needs out, or why the backup cannot run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::builders::{
    BuildContext, connection_secret_name, endpoint, namespace_of, resolved_image,
};
use crate::crd::{BackupDestination, DrasiStateStore, DrasiStateStoreBackup};

/// Where a snapshot lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket/key`.
    ObjectStore { url: String },
    /// A file on a PVC: the claim is mounted with `sub_path` as its root,
    /// and the snapshot is `file` in it.
    Volume {
        claim: String,
        sub_path: Option<String>,
        file: String,
    },
}

/// Mount point of a volume destination in backup and restore containers.
pub const BACKUP_VOLUME_DIR: &str = "/var/run/drasi-store/backup";

impl Location {
    /// The user-facing form recorded in `status.location`:
    /// `s3://bucket/key` or `pvc://<claim>/<path>`.
    pub fn display(&self) -> String {
        match self {
            Self::ObjectStore { url } => url.clone(),
            Self::Volume {
                claim,
                sub_path,
                file,
            } => match sub_path {
                Some(dir) => format!("pvc://{claim}/{dir}/{file}"),
                None => format!("pvc://{claim}/{file}"),
            },
        }
    }

    /// The `--output`/`--input` argument of drasi-store-server.
    pub fn argument(&self) -> String {
        match self {
            Self::ObjectStore { url } => url.clone(),
            Self::Volume { file, .. } => format!("{BACKUP_VOLUME_DIR}/{file}"),
        }
    }
}

/// Values of a backup's `status.reason` (docs/backup.md, "Status").
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::AsRefStr, strum::EnumIter)]
pub enum BackupReason {
    /// Pending: another backup of the same store is running.
    WaitingForOtherBackup,
    /// Running: the Job is taking the backup.
    JobRunning,
    /// Completed: the summary was read from the Job's pod.
    Completed,
    /// Failed: the Job failed; the message is its error.
    BackupFailed,
    /// Failed: the Job succeeded but left no summary to read.
    NoSummary,
    /// Failed: `spec.store` does not exist.
    StoreNotFound,
    /// Failed: the store declares no `spec.backup.destinations`.
    NoBackupDestination,
    /// Failed: `spec.destination` names no destination of the store.
    UnknownDestination,
}

/// Why a backup cannot run; becomes `status.reason` and `status.message`
/// of a `Failed` backup. Never carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupInvalid {
    #[error("DrasiStateStore {store} does not exist in namespace {namespace}")]
    StoreNotFound { store: String, namespace: String },
    #[error("DrasiStateStore {store} declares no spec.backup.destinations")]
    NoDestination { store: String },
    #[error("DrasiStateStore {store} has no backup destination named {destination}")]
    UnknownDestination { store: String, destination: String },
}

impl BackupInvalid {
    /// The value of `status.reason`.
    pub fn reason(&self) -> BackupReason {
        match self {
            Self::StoreNotFound { .. } => BackupReason::StoreNotFound,
            Self::NoDestination { .. } => BackupReason::NoBackupDestination,
            Self::UnknownDestination { .. } => BackupReason::UnknownDestination,
        }
    }
}

/// A backup that can run.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupPlan {
    pub name: String,
    pub namespace: String,
    pub store: String,
    /// The server image of the store, so backup and server agree on the
    /// snapshot format.
    pub image: String,
    /// The store's client URL.
    pub url: String,
    /// `<store>-connection`: the token (and CA for TLS) clients use.
    pub connection_secret: String,
    pub tls: bool,
    pub destination: BackupDestination,
    pub location: Location,
    /// Controller reference to the backup CR; `None` without a uid.
    pub owner: Option<OwnerReference>,
}

/// Resolves `backup` against `store` (`None`: the store does not exist).
pub fn plan(
    backup: &DrasiStateStoreBackup,
    store: Option<&DrasiStateStore>,
    ctx: &BuildContext,
) -> Result<BackupPlan, BackupInvalid> {
    let namespace = backup.namespace().unwrap_or_else(|| "default".to_owned());
    let store_name = backup.spec.store.clone();
    let Some(store) = store else {
        return Err(BackupInvalid::StoreNotFound {
            store: store_name,
            namespace,
        });
    };
    let destinations = store
        .spec
        .backup
        .as_ref()
        .map(|b| b.destinations.as_slice())
        .unwrap_or_default();
    let destination = match &backup.spec.destination {
        None => destinations
            .first()
            .ok_or_else(|| BackupInvalid::NoDestination {
                store: store_name.clone(),
            })?,
        Some(wanted) => destinations
            .iter()
            .find(|d| &d.name == wanted)
            .ok_or_else(|| BackupInvalid::UnknownDestination {
                store: store_name.clone(),
                destination: wanted.clone(),
            })?,
    };
    let name = backup.name_any();
    let store_namespace = namespace_of(store);
    let file = format!("{name}.snap");
    let location = if let Some(os) = &destination.object_store {
        let prefix = match os.prefix.as_deref().unwrap_or_default() {
            "" => String::new(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        Location::ObjectStore {
            url: format!(
                "s3://{}/{prefix}{store_namespace}/{store_name}/{file}",
                os.bucket
            ),
        }
    } else {
        // The CRD guarantees exactly one of objectStore and volume.
        let volume = destination.volume.clone().unwrap_or_default();
        let mut dirs: Vec<String> = volume
            .path
            .iter()
            .flat_map(|p| p.split('/'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        dirs.push(store_namespace.clone());
        dirs.push(store_name.clone());
        Location::Volume {
            claim: volume.claim_name,
            sub_path: Some(dirs.join("/")),
            file,
        }
    };
    Ok(BackupPlan {
        name,
        namespace,
        store: store_name.clone(),
        image: resolved_image(store, ctx),
        url: endpoint(store),
        connection_secret: connection_secret_name(&store_name),
        tls: store.spec.tls.is_some(),
        destination: destination.clone(),
        location,
        owner: backup.controller_owner_ref(&()),
    })
}

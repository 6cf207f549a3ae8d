//! The validate step of a backup: a `DrasiStateStoreBackup` and its store
//! in, everything the Job builder needs out, or why the backup cannot run.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::builders::{
    BuildContext, connection_secret_name, endpoint, namespace_of, resolved_image,
};
use crate::crd::{BackupDestination, DrasiStateStore, DrasiStateStoreBackup};
use crate::labels::{self, ACCESS_LABEL};

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
    /// Failed: the store's server image is not allowed by the operator's
    /// `--allowed-images`, so no Job runs it.
    ImageNotAllowed,
    /// Failed: the destination's `credentialsSecret` does not exist.
    CredentialsSecretNotFound,
    /// Failed: the destination's `credentialsSecret` does not carry the
    /// `drasi.io/state-store-access` label for the store.
    SecretNotOptedIn,
    /// Failed: a Job named like the backup exists and is not controlled by
    /// it; the operator never takes over a Job it did not create.
    ObjectNotOwned,
    /// Pending: a Job of a deleted backup of the same name is still there,
    /// waiting for the garbage collector.
    WaitingForOldJob,
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
    #[error(
        "image {image} of DrasiStateStore {store} is not allowed by the operator's \
         --allowed-images ({allowed}); no backup Job runs it"
    )]
    ImageNotAllowed {
        store: String,
        image: String,
        allowed: String,
    },
    #[error(
        "Secret {secret} (credentialsSecret of backup destination {destination}) does not exist \
         in namespace {namespace}"
    )]
    CredentialsSecretNotFound {
        secret: String,
        destination: String,
        namespace: String,
    },
    #[error(
        "Secret {secret} (credentialsSecret of backup destination {destination}) does not opt in \
         to being used by DrasiStateStore {store}: label it {ACCESS_LABEL}={store} (or \
         {ACCESS_LABEL}=true for every store in the namespace)"
    )]
    SecretNotOptedIn {
        secret: String,
        destination: String,
        store: String,
    },
    #[error(
        "{object} already exists and is not controlled by this DrasiStateStoreBackup; the \
         operator never takes over a Job it did not create: delete or rename it, then create \
         the backup again"
    )]
    ObjectNotOwned { object: String },
}

impl BackupInvalid {
    /// The value of `status.reason`.
    pub fn reason(&self) -> BackupReason {
        match self {
            Self::StoreNotFound { .. } => BackupReason::StoreNotFound,
            Self::NoDestination { .. } => BackupReason::NoBackupDestination,
            Self::UnknownDestination { .. } => BackupReason::UnknownDestination,
            Self::ImageNotAllowed { .. } => BackupReason::ImageNotAllowed,
            Self::CredentialsSecretNotFound { .. } => BackupReason::CredentialsSecretNotFound,
            Self::SecretNotOptedIn { .. } => BackupReason::SecretNotOptedIn,
            Self::ObjectNotOwned { .. } => BackupReason::ObjectNotOwned,
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
    /// The store's `imagePullPolicy` and `imagePullSecrets`, so the Job can
    /// pull the image wherever the store can.
    pub image_pull_policy: Option<String>,
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
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
    // The Job mounts the store's token (and receives the bucket's
    // credentials): it runs only an image the store itself may run.
    let image = resolved_image(store, ctx);
    if !ctx.allowed_images.allows(&image) {
        return Err(BackupInvalid::ImageNotAllowed {
            store: store_name,
            image,
            allowed: ctx.allowed_images.to_string(),
        });
    }
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
        image,
        image_pull_policy: store.spec.image_pull_policy.map(|p| p.to_string()),
        image_pull_secrets: store.spec.image_pull_secrets.clone(),
        url: endpoint(store),
        connection_secret: connection_secret_name(&store_name),
        tls: store.spec.tls.is_some(),
        destination: destination.clone(),
        location,
        owner: backup.controller_owner_ref(&()),
    })
}

impl BackupPlan {
    /// The destination's `credentialsSecret`, if it names one.
    pub fn credentials_secret(&self) -> Option<&str> {
        self.destination
            .object_store
            .as_ref()?
            .access
            .credentials_secret
            .as_deref()
    }

    /// Checks the destination's `credentialsSecret` as found in the cluster
    /// (`None`: it does not exist). Like every other Secret a store
    /// references, it must opt in with the label
    /// [`ACCESS_LABEL`](crate::labels::ACCESS_LABEL) = the store's name (or
    /// `true`): otherwise whoever may create a store and a backup could send
    /// any Secret of the namespace to a bucket of their choosing.
    pub fn check_credentials(&self, found: Option<&Secret>) -> Result<(), BackupInvalid> {
        let Some(secret) = self.credentials_secret() else {
            return Ok(());
        };
        match found {
            None => Err(BackupInvalid::CredentialsSecretNotFound {
                secret: secret.to_owned(),
                destination: self.destination.name.clone(),
                namespace: self.namespace.clone(),
            }),
            Some(found) if !labels::opted_in(found.metadata.labels.as_ref(), &self.store) => {
                Err(BackupInvalid::SecretNotOptedIn {
                    secret: secret.to_owned(),
                    destination: self.destination.name.clone(),
                    store: self.store.clone(),
                })
            }
            Some(_) => Ok(()),
        }
    }
}

/// Who controls the Job named like a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOwner {
    /// This very backup (its UID).
    This,
    /// A deleted backup of the same name: the garbage collector removes it.
    OldBackup,
    /// Anyone else, or no one.
    Foreign,
}

/// Who controls `job`, relative to `backup`.
pub fn job_owner(job: &Job, backup: &DrasiStateStoreBackup) -> JobOwner {
    let kind = DrasiStateStoreBackup::kind(&());
    let Some(controller) = job
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
    else {
        return JobOwner::Foreign;
    };
    if controller.kind != kind || controller.name != backup.name_any() {
        return JobOwner::Foreign;
    }
    match backup.metadata.uid.as_deref() {
        Some(uid) if uid == controller.uid => JobOwner::This,
        _ => JobOwner::OldBackup,
    }
}

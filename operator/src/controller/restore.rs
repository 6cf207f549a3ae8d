//! Resolving `spec.restore` to the snapshot the restore init container
//! reads (docs/restore.md).
//!
//! A restore is resolved once, when the store is created: the result is
//! recorded in `status.restoredFrom` and every later pass builds the init
//! container from that record without reading the backup again. So the
//! pod template, and with it the server, never changes because a backup
//! was deleted or a Secret relabelled after the volume was filled.
//!
//! Until it resolves, nothing of the store is applied: the store waits
//! (`Progressing`, a backup that has not completed yet) or needs a human
//! (`Degraded`, a backup that does not exist or failed, credentials that
//! are missing or not opted in).

use k8s_openapi::api::core::v1::Secret;
use kube::{Client, ResourceExt};

use super::api::{self, ApiError};
use super::status::{DegradedReason, Problem, Progress, ProgressingReason};
use crate::crd::{
    BackupPhase, DrasiStateStore, DrasiStateStoreBackup, RestoreLocation, RestoredFrom,
};
use crate::labels::{self, ACCESS_LABEL};

/// Why a store's restore cannot be set up (yet). Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreBlocked {
    #[error(
        "spec.restore.fromBackup names DrasiStateStoreBackup {backup}, which does not exist in \
         namespace {namespace}; the store is created once it exists and is Completed"
    )]
    BackupNotFound { backup: String, namespace: String },
    #[error(
        "DrasiStateStoreBackup {backup} is {phase}; the store is created once the backup is \
         Completed"
    )]
    BackupNotCompleted { backup: String, phase: String },
    #[error(
        "DrasiStateStoreBackup {backup} failed and will never complete ({message}); delete this \
         store and create it again from another backup"
    )]
    BackupFailed { backup: String, message: String },
    #[error("cannot restore from {what}: {problem}")]
    SourceInvalid { what: String, problem: String },
    #[error("Secret {secret} ({role}) does not exist in namespace {namespace}")]
    CredentialsSecretMissing {
        secret: String,
        role: String,
        namespace: String,
    },
    #[error(
        "Secret {secret} ({role}) does not opt in to being used by DrasiStateStore {store}: label \
         it {ACCESS_LABEL}={store} (or {ACCESS_LABEL}=true for every store in the namespace)"
    )]
    SecretNotOptedIn {
        secret: String,
        role: String,
        store: String,
    },
}

/// How a blocked restore shows in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Waiting for something that will happen on its own.
    Waiting(Progress),
    /// Needs a human.
    Problem(Problem),
}

impl RestoreBlocked {
    pub fn status(&self) -> Blocked {
        let message = self.to_string();
        let degraded = |reason| Blocked::Problem(Problem::new(reason, message.clone()));
        match self {
            Self::BackupNotCompleted { .. } => Blocked::Waiting(Progress::new(
                ProgressingReason::RestoreBackupNotCompleted,
                message.clone(),
            )),
            Self::BackupNotFound { .. } => degraded(DegradedReason::RestoreBackupNotFound),
            Self::BackupFailed { .. } => degraded(DegradedReason::RestoreBackupFailed),
            Self::SourceInvalid { .. } => degraded(DegradedReason::RestoreSourceInvalid),
            Self::CredentialsSecretMissing { .. } => {
                degraded(DegradedReason::RestoreCredentialsSecretMissing)
            }
            Self::SecretNotOptedIn { .. } => degraded(DegradedReason::SecretNotOptedIn),
        }
    }
}

/// What `spec.restore` resolves to: `None` without a restore; otherwise
/// `status.restoredFrom` once recorded, else the backup (`backup`: the one
/// `fromBackup` names, `None` when it does not exist) or `source`.
pub fn resolve(
    store: &DrasiStateStore,
    backup: Option<&DrasiStateStoreBackup>,
) -> Result<Option<RestoredFrom>, RestoreBlocked> {
    let Some(restore) = &store.spec.restore else {
        return Ok(None);
    };
    if let Some(recorded) = store.status.as_ref().and_then(|s| s.restored_from.clone()) {
        return Ok(Some(recorded));
    }
    if let Some(name) = &restore.from_backup {
        return from_backup(store, name, backup).map(Some);
    }
    let source = restore.source.clone().unwrap_or_default();
    let location =
        RestoreLocation::parse(&source).map_err(|problem| RestoreBlocked::SourceInvalid {
            what: "spec.restore.source".to_owned(),
            problem,
        })?;
    Ok(Some(RestoredFrom {
        backup: None,
        object_store: match location {
            RestoreLocation::S3 { .. } => restore.object_store.clone(),
            RestoreLocation::Volume { .. } => None,
        },
        location: source,
    }))
}

fn from_backup(
    store: &DrasiStateStore,
    name: &str,
    backup: Option<&DrasiStateStoreBackup>,
) -> Result<RestoredFrom, RestoreBlocked> {
    let Some(backup) = backup else {
        return Err(RestoreBlocked::BackupNotFound {
            backup: name.to_owned(),
            namespace: store.namespace().unwrap_or_default(),
        });
    };
    let status = backup.status.clone().unwrap_or_default();
    match status.phase {
        Some(BackupPhase::Completed) => {}
        Some(BackupPhase::Failed) => {
            return Err(RestoreBlocked::BackupFailed {
                backup: name.to_owned(),
                message: status.message.unwrap_or_else(|| "no message".to_owned()),
            });
        }
        phase => {
            return Err(RestoreBlocked::BackupNotCompleted {
                backup: name.to_owned(),
                phase: phase.map_or_else(|| "not started yet".to_owned(), |p| p.to_string()),
            });
        }
    }
    let invalid = |problem: &str| RestoreBlocked::SourceInvalid {
        what: format!("DrasiStateStoreBackup {name}"),
        problem: problem.to_owned(),
    };
    let (Some(location), Some(destination)) = (status.location, status.destination) else {
        return Err(invalid(
            "it is Completed but its status records no location or destination",
        ));
    };
    let object_store = match (RestoreLocation::parse(&location), destination) {
        (Ok(RestoreLocation::S3 { bucket, .. }), dest) => match dest.object_store {
            Some(os) if os.bucket == bucket => Some(os.access),
            _ => {
                return Err(invalid(&format!(
                    "its location {location} is not in the object store destination its status \
                     records"
                )));
            }
        },
        (Ok(RestoreLocation::Volume { claim, .. }), dest) => match dest.volume {
            Some(volume) if volume.claim_name == claim => None,
            _ => {
                return Err(invalid(&format!(
                    "its location {location} is not on the volume destination its status records"
                )));
            }
        },
        (Err(problem), _) => return Err(invalid(&problem)),
    };
    Ok(RestoredFrom {
        backup: Some(name.to_owned()),
        location,
        object_store,
    })
}

/// The credentials Secret the init container would receive, and what it
/// is to the user (for messages).
pub fn credentials_secret(
    store: &DrasiStateStore,
    from: &RestoredFrom,
) -> Option<(String, String)> {
    let secret = from.object_store.as_ref()?.credentials_secret.clone()?;
    let role = match &from.backup {
        Some(backup) => format!(
            "credentialsSecret of the destination of DrasiStateStoreBackup {backup}, needed by \
             spec.restore of DrasiStateStore {}",
            store.name_any()
        ),
        None => "spec.restore.objectStore.credentialsSecret".to_owned(),
    };
    Some((secret, role))
}

/// Checks the credentials Secret as found in the cluster (`found`: `None`
/// when it does not exist). Like every Secret a store references it must
/// opt in, labelled for THIS store: otherwise whoever may create a store
/// could have any credentials of the namespace read a bucket of their
/// choosing into it.
pub fn check_credentials(
    store: &DrasiStateStore,
    from: &RestoredFrom,
    found: Option<&Secret>,
) -> Result<(), RestoreBlocked> {
    let Some((secret, role)) = credentials_secret(store, from) else {
        return Ok(());
    };
    match found {
        None => Err(RestoreBlocked::CredentialsSecretMissing {
            secret,
            role,
            namespace: store.namespace().unwrap_or_default(),
        }),
        Some(found) if !labels::opted_in(found.metadata.labels.as_ref(), &store.name_any()) => {
            Err(RestoreBlocked::SecretNotOptedIn {
                secret,
                role,
                store: store.name_any(),
            })
        }
        Some(_) => Ok(()),
    }
}

/// Reads what resolving `spec.restore` needs and resolves it. Once
/// `status.restoredFrom` is recorded, nothing is read.
pub async fn lookup(
    client: &Client,
    store: &DrasiStateStore,
    namespace: &str,
) -> Result<Result<Option<RestoredFrom>, RestoreBlocked>, ApiError> {
    let Some(restore) = &store.spec.restore else {
        return Ok(Ok(None));
    };
    if store
        .status
        .as_ref()
        .is_some_and(|s| s.restored_from.is_some())
    {
        return Ok(resolve(store, None));
    }
    let backup = match &restore.from_backup {
        Some(name) => api::get_opt::<DrasiStateStoreBackup>(client, namespace, name).await?,
        None => None,
    };
    let from = match resolve(store, backup.as_ref()) {
        Ok(Some(from)) => from,
        other => return Ok(other),
    };
    if let Some((secret, _)) = credentials_secret(store, &from) {
        let found = api::get_opt::<Secret>(client, namespace, &secret).await?;
        if let Err(blocked) = check_credentials(store, &from, found.as_ref()) {
            return Ok(Err(blocked));
        }
    }
    Ok(Ok(Some(from)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store(restore: serde_json::Value, status: Option<serde_json::Value>) -> DrasiStateStore {
        let mut object = json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStore",
            "metadata": { "name": "new", "namespace": "ns" },
            "spec": { "restore": restore },
        });
        if let Some(status) = status {
            object["status"] = status;
        }
        serde_json::from_value(object).unwrap()
    }

    fn backup(status: serde_json::Value) -> DrasiStateStoreBackup {
        serde_json::from_value(json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStoreBackup",
            "metadata": { "name": "b1", "namespace": "ns" },
            "spec": { "store": "old" },
            "status": status,
        }))
        .unwrap()
    }

    fn s3_completed() -> serde_json::Value {
        json!({
            "phase": "Completed",
            "location": "s3://bkt/stores/ns/old/b1.snap",
            "destination": { "name": "s3", "objectStore": { "bucket": "bkt",
                "endpoint": "http://minio:9000", "credentialsSecret": "creds" } },
        })
    }

    #[test]
    fn a_completed_backup_resolves_to_its_location_and_destination() {
        let s = store(json!({ "fromBackup": "b1" }), None);
        let from = resolve(&s, Some(&backup(s3_completed()))).unwrap().unwrap();
        assert_eq!(from.backup.as_deref(), Some("b1"));
        assert_eq!(from.location, "s3://bkt/stores/ns/old/b1.snap");
        let os = from.object_store.unwrap();
        assert_eq!(os.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(os.credentials_secret.as_deref(), Some("creds"));

        let volume = backup(json!({
            "phase": "Completed",
            "location": "pvc://backups/stores/ns/old/b1.snap",
            "destination": { "name": "v", "volume": { "claimName": "backups", "path": "stores" } },
        }));
        let from = resolve(&s, Some(&volume)).unwrap().unwrap();
        assert_eq!(from.location, "pvc://backups/stores/ns/old/b1.snap");
        assert_eq!(from.object_store, None);
    }

    #[test]
    fn a_backup_that_is_missing_unfinished_or_failed_blocks() {
        let s = store(json!({ "fromBackup": "b1" }), None);
        let err = resolve(&s, None).unwrap_err();
        assert!(
            matches!(err, RestoreBlocked::BackupNotFound { .. }),
            "{err}"
        );
        assert!(matches!(
            err.status(),
            Blocked::Problem(p) if p.reason == DegradedReason::RestoreBackupNotFound
        ));
        for phase in [
            json!({}),
            json!({ "phase": "Pending" }),
            json!({ "phase": "Running" }),
        ] {
            let err = resolve(&s, Some(&backup(phase))).unwrap_err();
            assert!(
                matches!(
                    err.status(),
                    Blocked::Waiting(p) if p.reason == ProgressingReason::RestoreBackupNotCompleted
                ),
                "{err}"
            );
        }
        let failed = backup(json!({ "phase": "Failed", "message": "connection refused" }));
        let err = resolve(&s, Some(&failed)).unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        assert!(matches!(
            err.status(),
            Blocked::Problem(p) if p.reason == DegradedReason::RestoreBackupFailed
        ));
        // Completed, but a status that does not add up is not guessed at.
        let mut odd = s3_completed();
        odd["location"] = json!("s3://other/b1.snap");
        let err = resolve(&s, Some(&backup(odd))).unwrap_err();
        assert!(matches!(err, RestoreBlocked::SourceInvalid { .. }), "{err}");
        let mut bare = s3_completed();
        bare.as_object_mut().unwrap().remove("destination");
        assert!(resolve(&s, Some(&backup(bare))).is_err());
    }

    #[test]
    fn a_recorded_restore_is_used_without_the_backup() {
        let recorded = json!({ "restoredFrom": { "backup": "b1",
            "location": "s3://bkt/k.snap", "objectStore": { "region": "r" } } });
        let s = store(json!({ "fromBackup": "b1" }), Some(recorded));
        let from = resolve(&s, None).unwrap().unwrap();
        assert_eq!(from.location, "s3://bkt/k.snap");
        assert_eq!(from.object_store.unwrap().region.as_deref(), Some("r"));
    }

    #[test]
    fn a_source_resolves_from_the_spec() {
        let s = store(
            json!({ "source": "s3://bkt/a/b.snap", "objectStore": { "credentialsSecret": "c" } }),
            None,
        );
        let from = resolve(&s, None).unwrap().unwrap();
        assert_eq!(from.backup, None);
        assert_eq!(from.location, "s3://bkt/a/b.snap");
        let (secret, role) = credentials_secret(&s, &from).unwrap();
        assert_eq!(secret, "c");
        assert_eq!(role, "spec.restore.objectStore.credentialsSecret");

        let pvc = store(json!({ "source": "pvc://claim/x/b.snap" }), None);
        let from = resolve(&pvc, None).unwrap().unwrap();
        assert_eq!(from.object_store, None);
        assert_eq!(credentials_secret(&pvc, &from), None);
    }

    #[test]
    fn credentials_must_exist_and_opt_in_to_the_new_store() {
        let s = store(
            json!({ "source": "s3://bkt/a/b.snap", "objectStore": { "credentialsSecret": "c" } }),
            None,
        );
        let from = resolve(&s, None).unwrap().unwrap();
        let secret = |label: Option<&str>| -> Secret {
            let mut secret = Secret::default();
            secret.metadata.name = Some("c".into());
            if let Some(value) = label {
                secret.metadata.labels = Some([(ACCESS_LABEL.to_owned(), value.to_owned())].into());
            }
            secret
        };
        assert!(matches!(
            check_credentials(&s, &from, None),
            Err(RestoreBlocked::CredentialsSecretMissing { .. })
        ));
        // Labelled for the backed-up store is not enough.
        for label in [None, Some("old")] {
            let err = check_credentials(&s, &from, Some(&secret(label))).unwrap_err();
            assert!(
                err.to_string().contains(&format!("{ACCESS_LABEL}=new")),
                "{err}"
            );
        }
        for label in ["new", "true"] {
            check_credentials(&s, &from, Some(&secret(Some(label)))).unwrap();
        }
    }
}

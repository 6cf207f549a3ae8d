//! Deleting a backup's data: which snapshot a deleted backup left and the
//! Job that deletes it (`drasi-store-server delete`). Pure: the same backup
//! always gives the same Job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::backup::job::{JobParts, backup_claim, job_with_container};
use crate::backup::object_store_env;
use crate::backup::plan::BACKUP_VOLUME_DIR;
use crate::crd::{BackupDestination, BackupPhase, DrasiStateStoreBackup};
use crate::labels::{
    COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_LABEL, NAME_VALUE,
    PART_OF_LABEL, PART_OF_VALUE,
};

/// Finalizer of the backups a schedule creates: their snapshot is deleted
/// before the object goes.
pub const DATA_FINALIZER: &str = "drasi.io/backup-data";

/// Label naming the backup whose data a deletion Job deletes.
pub const DELETION_LABEL: &str = "drasi.io/backup-deletion";

/// `app.kubernetes.io/component` of deletion Jobs and their pods.
pub const DELETION_COMPONENT: &str = "backup-deletion";

pub const DELETION_CONTAINER: &str = "delete";

/// Retries of the pod inside one Job: deleting is idempotent.
pub const DELETION_BACKOFF_LIMIT: i32 = 2;

/// A deletion that has not finished after this long is failed (and retried
/// by the operator with a new Job).
pub const DELETION_DEADLINE_SECONDS: i64 = 10 * 60;

/// The snapshot a deleted backup leaves, and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletionPlan {
    pub backup: String,
    pub namespace: String,
    pub store: String,
    /// `status.location`, for messages.
    pub location: String,
    pub target: Target,
    pub destination: BackupDestination,
    pub image: String,
    pub owner: Option<OwnerReference>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `s3://bucket/key`, deleted with the destination's `AWS_*`.
    Object { url: String },
    /// A file in a claim: the claim is mounted with `sub_path` as its root.
    File {
        claim: String,
        sub_path: Option<String>,
        file: String,
    },
}

/// Why a Completed backup's snapshot cannot be located from its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot delete the snapshot of DrasiStateStoreBackup {namespace}/{backup}: {why}; delete the \
     data by hand, then remove the finalizer {DATA_FINALIZER}"
)]
pub struct DeletionInvalid {
    pub namespace: String,
    pub backup: String,
    pub why: String,
}

/// What deleting `backup` requires: `Ok(None)` when it has no data (it
/// never completed), else the snapshot to delete, with `image` (the
/// operator's server image) running the deletion.
pub fn deletion_plan(
    backup: &DrasiStateStoreBackup,
    image: &str,
) -> Result<Option<DeletionPlan>, DeletionInvalid> {
    let status = backup.status.clone().unwrap_or_default();
    // Only a Completed backup wrote its snapshot: the server writes a file
    // under a temporary name and completes a multipart upload only at the
    // end, so a backup that failed or never ran left nothing to delete.
    if status.phase != Some(BackupPhase::Completed) {
        return Ok(None);
    }
    let namespace = backup.namespace().unwrap_or_default();
    let name = backup.name_any();
    let invalid = |why: &str| DeletionInvalid {
        namespace: namespace.clone(),
        backup: name.clone(),
        why: why.to_owned(),
    };
    let location = status
        .location
        .ok_or_else(|| invalid("status.location is not set"))?;
    let destination = status
        .destination
        .ok_or_else(|| invalid("status.destination is not set"))?;
    let target = if location.starts_with("s3://") {
        if destination.object_store.is_none() {
            return Err(invalid(
                "status.location is an s3:// URL but status.destination is not an objectStore",
            ));
        }
        Target::Object {
            url: location.clone(),
        }
    } else if let Some(rest) = location.strip_prefix("pvc://") {
        let volume = destination.volume.as_ref().ok_or_else(|| {
            invalid("status.location is a pvc:// path but status.destination is not a volume")
        })?;
        let (claim, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("status.location names no file in the claim"))?;
        if claim != volume.claim_name {
            return Err(invalid(
                "status.location names another claim than status.destination",
            ));
        }
        let segments: Vec<&str> = path.split('/').collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(invalid("status.location is not a plain relative path"));
        }
        let (file, dirs) = segments.split_last().expect("split yields a segment");
        Target::File {
            claim: claim.to_owned(),
            sub_path: (!dirs.is_empty()).then(|| dirs.join("/")),
            file: (*file).to_owned(),
        }
    } else {
        return Err(invalid("status.location is neither s3:// nor pvc://"));
    };
    Ok(Some(DeletionPlan {
        backup: name,
        namespace,
        store: backup.spec.store.clone(),
        location,
        target,
        destination,
        image: image.to_owned(),
        owner: backup.controller_owner_ref(&()),
    }))
}

/// `<backup>-delete`, or for a long name its first 40 characters and a hash,
/// so the Job name stays within 63 characters and is the same every time.
pub fn deletion_job_name(backup: &str) -> String {
    const SUFFIX: &str = "-delete";
    if backup.len() + SUFFIX.len() <= 63 {
        return format!("{backup}{SUFFIX}");
    }
    let hash = Sha256::digest(backup.as_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let head = backup[..40].trim_end_matches('-');
    format!("{head}-{hex}{SUFFIX}")
}

/// The server's command line.
pub fn deletion_args(plan: &DeletionPlan) -> Vec<String> {
    let location = match &plan.target {
        Target::Object { url } => url.clone(),
        Target::File { file, .. } => format!("{BACKUP_VOLUME_DIR}/{file}"),
    };
    vec!["delete".into(), "--location".into(), location]
}

pub fn deletion_labels(plan: &DeletionPlan) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), NAME_VALUE.to_owned()),
        (INSTANCE_LABEL.to_owned(), plan.store.clone()),
        (COMPONENT_LABEL.to_owned(), DELETION_COMPONENT.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (PART_OF_LABEL.to_owned(), PART_OF_VALUE.to_owned()),
        (DELETION_LABEL.to_owned(), plan.backup.clone()),
    ])
}

/// The Job deleting the snapshot. It never talks to the store: no token, no
/// Service; only the bucket's credentials (as Secret references) or the
/// claim holding the file.
pub fn deletion_job(plan: &DeletionPlan) -> Job {
    let (env, volumes, mounts) = match &plan.target {
        Target::Object { .. } => (
            plan.destination
                .object_store
                .as_ref()
                .map(|dest| object_store_env(&dest.access))
                .unwrap_or_default(),
            Vec::new(),
            Vec::new(),
        ),
        Target::File {
            claim, sub_path, ..
        } => {
            let (volume, mount) = backup_claim(claim, sub_path.clone());
            (Vec::new(), vec![volume], vec![mount])
        }
    };
    job_with_container(JobParts {
        name: deletion_job_name(&plan.backup),
        namespace: plan.namespace.clone(),
        labels: deletion_labels(plan),
        owner: plan.owner.clone(),
        backoff_limit: DELETION_BACKOFF_LIMIT,
        active_deadline_seconds: DELETION_DEADLINE_SECONDS,
        container: DELETION_CONTAINER,
        image: plan.image.clone(),
        image_pull_policy: None,
        image_pull_secrets: None,
        args: deletion_args(plan),
        env,
        mounts,
        volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        DrasiStateStoreBackupSpec, DrasiStateStoreBackupStatus, ObjectStoreAccess,
        ObjectStoreDestination, VolumeDestination,
    };

    fn backup(
        phase: BackupPhase,
        location: &str,
        destination: BackupDestination,
    ) -> DrasiStateStoreBackup {
        let mut b = DrasiStateStoreBackup::new(
            "nightly-202403100200",
            DrasiStateStoreBackupSpec {
                store: "orders".into(),
                destination: None,
            },
        );
        b.metadata.namespace = Some("apps".into());
        b.metadata.uid = Some("uid-1".into());
        b.status = Some(DrasiStateStoreBackupStatus {
            phase: Some(phase),
            location: Some(location.into()),
            destination: Some(destination),
            ..DrasiStateStoreBackupStatus::default()
        });
        b
    }

    fn s3() -> BackupDestination {
        BackupDestination {
            name: "s3".into(),
            object_store: Some(ObjectStoreDestination {
                bucket: "bkt".into(),
                prefix: None,
                access: ObjectStoreAccess {
                    credentials_secret: Some("creds".into()),
                    endpoint: Some("http://minio:9000".into()),
                    ..ObjectStoreAccess::default()
                },
            }),
            volume: None,
        }
    }

    fn volume() -> BackupDestination {
        BackupDestination {
            name: "vol".into(),
            object_store: None,
            volume: Some(VolumeDestination {
                claim_name: "backups".into(),
                path: Some("stores".into()),
            }),
        }
    }

    #[test]
    fn unfinished_or_failed_backups_have_no_data() {
        for phase in [
            BackupPhase::Pending,
            BackupPhase::Running,
            BackupPhase::Failed,
        ] {
            let b = backup(phase, "s3://bkt/apps/orders/x.snap", s3());
            assert_eq!(deletion_plan(&b, "img").unwrap(), None, "{phase}");
        }
        let mut never_ran = backup(BackupPhase::Completed, "s3://x/y", s3());
        never_ran.status = None;
        assert_eq!(deletion_plan(&never_ran, "img").unwrap(), None);
    }

    #[test]
    fn object_store_snapshots_are_deleted_with_the_destination_credentials() {
        let url = "s3://bkt/apps/orders/nightly-202403100200.snap";
        let plan = deletion_plan(&backup(BackupPhase::Completed, url, s3()), "img")
            .unwrap()
            .unwrap();
        assert_eq!(deletion_args(&plan), ["delete", "--location", url]);
        let job = deletion_job(&plan);
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("nightly-202403100200-delete")
        );
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DrasiStateStoreBackup", "uid-1")
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let secret_keys: Vec<_> = env
            .iter()
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((r.name.as_str().to_owned(), e.name.clone()))
            })
            .collect();
        assert!(secret_keys.contains(&("creds".into(), "AWS_SECRET_ACCESS_KEY".into())));
        assert!(env.iter().all(|e| e.value.as_deref() != Some("creds")));
        assert_eq!(pod.volumes, None);
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn volume_snapshots_are_deleted_through_the_claim() {
        let plan = deletion_plan(
            &backup(
                BackupPhase::Completed,
                "pvc://backups/stores/apps/orders/n.snap",
                volume(),
            ),
            "img",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            plan.target,
            Target::File {
                claim: "backups".into(),
                sub_path: Some("stores/apps/orders".into()),
                file: "n.snap".into()
            }
        );
        assert_eq!(
            deletion_args(&plan),
            ["delete", "--location", "/var/run/drasi-store/backup/n.snap"]
        );
        let pod = deletion_job(&plan).spec.unwrap().template.spec.unwrap();
        let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.sub_path.as_deref(), Some("stores/apps/orders"));
        assert_eq!(pod.containers[0].env, None);
    }

    #[test]
    fn inconsistent_statuses_are_refused() {
        for (location, destination) in [
            ("s3://bkt/k.snap", volume()),
            ("pvc://backups/x.snap", s3()),
            ("pvc://other/stores/x.snap", volume()),
            ("pvc://backups/stores/../../etc/x.snap", volume()),
            ("pvc://backups", volume()),
            ("/abs/x.snap", volume()),
        ] {
            let err = deletion_plan(
                &backup(BackupPhase::Completed, location, destination),
                "img",
            )
            .unwrap_err();
            assert!(err.to_string().contains(DATA_FINALIZER), "{err}");
        }
    }

    #[test]
    fn job_names_fit_63_characters_and_stay_distinct() {
        assert_eq!(deletion_job_name("a"), "a-delete");
        let long_a = format!("{}-202403100200", "s".repeat(50));
        let long_b = format!("{}-202403100300", "s".repeat(50));
        let (a, b) = (deletion_job_name(&long_a), deletion_job_name(&long_b));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, deletion_job_name(&long_a));
        assert!(a.ends_with("-delete"));
    }
}

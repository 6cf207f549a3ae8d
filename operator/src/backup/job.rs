//! The backup Job: one pod running `drasi-store-server backup` against the
//! store's Service. Pure: the same plan always gives the same Job. Also the
//! Job shell the data deletion Job shares ([`job_with_container`]).

use std::collections::BTreeMap;

use drasi_store_protocol::env;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, KeyToPath, LocalObjectReference,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::object_store_env;
use super::plan::{BACKUP_VOLUME_DIR, BackupPlan, Location};
use crate::builders::{TMP_DIR, container_security_context, pod_security_context};
use crate::labels::{
    COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_LABEL, NAME_VALUE,
    PART_OF_LABEL, PART_OF_VALUE,
};

/// `app.kubernetes.io/component` of backup Jobs and their pods. Different
/// from the server's, so the store's Services never select a backup pod.
pub const BACKUP_COMPONENT: &str = "backup";

/// Label naming the backup a Job belongs to.
pub const BACKUP_LABEL: &str = "drasi.io/backup";

pub const BACKUP_CONTAINER: &str = "backup";

const CONNECTION_DIR: &str = "/var/run/drasi-store/connection";

/// A backup that has not finished after this long is stopped and failed.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 6 * 60 * 60;

/// Labels of a backup Job and its pod.
pub fn job_labels(store: &str, backup: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), NAME_VALUE.to_owned()),
        (INSTANCE_LABEL.to_owned(), store.to_owned()),
        (COMPONENT_LABEL.to_owned(), BACKUP_COMPONENT.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (PART_OF_LABEL.to_owned(), PART_OF_VALUE.to_owned()),
        (BACKUP_LABEL.to_owned(), backup.to_owned()),
    ])
}

/// The Job's name: the backup's (at most 63 characters, as the CRD checks),
/// which the Job controller also puts into its pods' `job-name` label.
pub fn job_name(plan: &BackupPlan) -> String {
    plan.name.clone()
}

/// The server's command line for this backup.
pub fn backup_args(plan: &BackupPlan) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "backup".into(),
        "--url".into(),
        plan.url.clone(),
        "--token-file".into(),
        format!("{CONNECTION_DIR}/token"),
    ];
    if plan.tls {
        args.extend(["--ca-file".into(), format!("{CONNECTION_DIR}/ca.crt")]);
    }
    args.extend(["--output".into(), plan.location.argument(), "--json".into()]);
    args
}

pub fn backup_job(plan: &BackupPlan) -> Job {
    let mut connection_items = vec![KeyToPath {
        key: env::TOKEN.to_owned(),
        path: "token".to_owned(),
        ..KeyToPath::default()
    }];
    if plan.tls {
        connection_items.push(KeyToPath {
            key: env::CA_CERT.to_owned(),
            path: "ca.crt".to_owned(),
            ..KeyToPath::default()
        });
    }
    let mut volumes = vec![
        Volume {
            name: "connection".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(plan.connection_secret.clone()),
                items: Some(connection_items),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".to_owned())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "connection".to_owned(),
            mount_path: CONNECTION_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: TMP_DIR.to_owned(),
            ..VolumeMount::default()
        },
    ];
    let env = match (&plan.location, &plan.destination.object_store) {
        (Location::ObjectStore { .. }, Some(dest)) => object_store_env(&dest.access),
        _ => Vec::new(),
    };
    if let Location::Volume {
        claim, sub_path, ..
    } = &plan.location
    {
        let (volume, mount) = backup_claim(claim, sub_path.clone());
        volumes.push(volume);
        mounts.push(mount);
    }
    job_with_container(JobParts {
        name: job_name(plan),
        namespace: plan.namespace.clone(),
        labels: job_labels(&plan.store, &plan.name),
        owner: plan.owner.clone(),
        // One attempt: a failed backup is reported as Failed and a new
        // DrasiStateStoreBackup is the retry, so history stays honest.
        backoff_limit: 0,
        active_deadline_seconds: ACTIVE_DEADLINE_SECONDS,
        container: BACKUP_CONTAINER,
        image: plan.image.clone(),
        image_pull_policy: plan.image_pull_policy.clone(),
        image_pull_secrets: plan.image_pull_secrets.clone(),
        args: backup_args(plan),
        env,
        mounts,
        volumes,
    })
}

/// What sets one of the operator's one-shot Jobs (backup, data deletion)
/// apart; [`job_with_container`] puts it into the shell they share.
pub(crate) struct JobParts {
    pub name: String,
    pub namespace: String,
    /// On the Job and on its pod.
    pub labels: BTreeMap<String, String>,
    pub owner: Option<OwnerReference>,
    pub backoff_limit: i32,
    pub active_deadline_seconds: i64,
    pub container: &'static str,
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    pub args: Vec<String>,
    /// Empty lists are left out of the Job.
    pub env: Vec<EnvVar>,
    pub mounts: Vec<VolumeMount>,
    pub volumes: Vec<Volume>,
}

/// A Job running one container once, hardened like the store's pods: no
/// service account token, no service links, the restricted security
/// contexts and bounded resources.
pub(crate) fn job_with_container(parts: JobParts) -> Job {
    let JobParts {
        name,
        namespace,
        labels,
        owner,
        backoff_limit,
        active_deadline_seconds,
        container,
        image,
        image_pull_policy,
        image_pull_secrets,
        args,
        env,
        mounts,
        volumes,
    } = parts;
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: Some(active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![Container {
                        name: container.to_owned(),
                        image: Some(image),
                        image_pull_policy,
                        args: Some(args),
                        env: (!env.is_empty()).then_some(env),
                        // On failure the last log lines (the error) become
                        // the termination message the operator reports.
                        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                        resources: Some(job_resources()),
                        security_context: Some(container_security_context()),
                        volume_mounts: (!mounts.is_empty()).then_some(mounts),
                        ..Container::default()
                    }],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    image_pull_secrets,
                    security_context: Some(pod_security_context()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

pub(crate) fn claim_volume(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_owned(),
            read_only: read_only.then_some(true),
        }),
        ..Volume::default()
    }
}

/// The claim holding snapshot files, writable, with `sub_path` mounted at
/// [`BACKUP_VOLUME_DIR`].
pub(crate) fn backup_claim(claim: &str, sub_path: Option<String>) -> (Volume, VolumeMount) {
    let mount = VolumeMount {
        name: "backup".to_owned(),
        mount_path: BACKUP_VOLUME_DIR.to_owned(),
        sub_path,
        ..VolumeMount::default()
    };
    (claim_volume("backup", claim, false), mount)
}

/// Streaming needs little: the upload keeps about 24 MiB in flight.
fn job_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("50m")),
            ("memory".to_owned(), q("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("256Mi"))])),
        ..ResourceRequirements::default()
    }
}

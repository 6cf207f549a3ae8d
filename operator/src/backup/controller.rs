//! The `DrasiStateStoreBackup` reconcile loop: plan the backup, wait for
//! any other running backup of the same store, apply the Job, and turn the
//! Job's outcome into the backup's status. A finished backup is never
//! touched again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::job::{BACKUP_CONTAINER, BACKUP_LABEL, backup_job, job_name};
use super::plan::{BackupInvalid, BackupPlan, BackupReason, JobOwner, job_owner, plan};
use super::summary::{BackupSummary, error_message, parse_summary};
use crate::builders::BuildContext;
use crate::controller::api::{ApiError, apply_status, describe, get_opt};
use crate::crd::{
    BackupPhase, DrasiStateStore, DrasiStateStoreBackup, DrasiStateStoreBackupStatus,
};

/// How often a waiting or running backup is looked at again, besides the
/// Job watch.
const POLL: Duration = Duration::from_secs(15);

/// Log bytes read from a finished backup pod: the summary is the last line.
const LOG_LIMIT_BYTES: i64 = 64 * 1024;

pub struct BackupContext {
    pub client: Client,
    pub build: BuildContext,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("DrasiStateStoreBackup has no namespace")]
    NoNamespace,
}

/// What the Job says, reduced to what the status needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Absent,
    Running,
    Succeeded,
    Failed,
}

pub fn job_outcome(job: Option<&Job>) -> JobOutcome {
    let Some(job) = job else {
        return JobOutcome::Absent;
    };
    let status = job.status.clone().unwrap_or_default();
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    if condition("Complete") || status.succeeded.unwrap_or(0) > 0 {
        JobOutcome::Succeeded
    } else if condition("Failed") {
        JobOutcome::Failed
    } else {
        JobOutcome::Running
    }
}

/// A backup of `store` other than `name` that is running now.
pub fn other_running<'a>(
    backups: &'a [DrasiStateStoreBackup],
    store: &str,
    name: &str,
) -> Option<&'a DrasiStateStoreBackup> {
    backups.iter().find(|b| {
        b.spec.store == store
            && b.name_any() != name
            && b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Running)
    })
}

/// Status of a backup whose Job is running.
pub fn running_status(
    plan: &BackupPlan,
    now: Time,
    previous: Option<&DrasiStateStoreBackupStatus>,
) -> DrasiStateStoreBackupStatus {
    DrasiStateStoreBackupStatus {
        phase: Some(BackupPhase::Running),
        reason: Some(BackupReason::JobRunning.to_string()),
        message: Some(format!("Job {} is taking the backup", job_name(plan))),
        job_name: Some(job_name(plan)),
        start_time: previous.and_then(|p| p.start_time.clone()).or(Some(now)),
        location: Some(plan.location.display()),
        destination: Some(plan.destination.clone()),
        ..DrasiStateStoreBackupStatus::default()
    }
}

/// Status of a backup whose Job succeeded and reported `summary`.
pub fn completed_status(
    running: &DrasiStateStoreBackupStatus,
    summary: &BackupSummary,
    now: Time,
) -> DrasiStateStoreBackupStatus {
    DrasiStateStoreBackupStatus {
        phase: Some(BackupPhase::Completed),
        reason: Some(BackupReason::Completed.to_string()),
        message: Some(format!(
            "{} records of {} stores, {} bytes",
            summary.records, summary.stores, summary.bytes
        )),
        completion_time: Some(now),
        size_bytes: i64::try_from(summary.bytes).ok(),
        records: i64::try_from(summary.records).ok(),
        stores: i64::try_from(summary.stores).ok(),
        sha256: Some(summary.sha256.clone()),
        snapshot_time_unix_ms: summary.created_at_unix_ms,
        ..running.clone()
    }
}

/// Status of a backup that failed with `reason` and `message`.
pub fn failed_status(
    previous: Option<&DrasiStateStoreBackupStatus>,
    reason: BackupReason,
    message: String,
    now: Time,
) -> DrasiStateStoreBackupStatus {
    DrasiStateStoreBackupStatus {
        phase: Some(BackupPhase::Failed),
        reason: Some(reason.to_string()),
        message: Some(message),
        completion_time: Some(now),
        ..previous.cloned().unwrap_or_default()
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub async fn reconcile(
    backup: Arc<DrasiStateStoreBackup>,
    ctx: Arc<BackupContext>,
) -> Result<Action, BackupError> {
    let previous = backup.status.as_ref();
    if previous
        .and_then(|s| s.phase)
        .is_some_and(BackupPhase::is_finished)
    {
        return Ok(Action::await_change());
    }
    let namespace = backup.namespace().ok_or(BackupError::NoNamespace)?;
    let name = backup.name_any();
    let client = &ctx.client;
    let store: Option<DrasiStateStore> = get_opt(client, &namespace, &backup.spec.store).await?;
    let plan = match plan(&backup, store.as_ref(), &ctx.build) {
        Ok(plan) => plan,
        Err(invalid) => {
            let status = failed_status(previous, invalid.reason(), invalid.to_string(), now());
            apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let job: Option<Job> = get_opt(client, &namespace, &job_name(&plan)).await?;
    // Never take over a Job this backup did not create: its outcome would
    // be reported as the backup's, and applying would overwrite it.
    match job.as_ref().map(|j| job_owner(j, &backup)) {
        None | Some(JobOwner::This) => {}
        Some(JobOwner::OldBackup) => {
            let status = DrasiStateStoreBackupStatus {
                phase: Some(BackupPhase::Pending),
                reason: Some(BackupReason::WaitingForOldJob.to_string()),
                message: Some(format!(
                    "Job {} of a deleted DrasiStateStoreBackup of the same name still exists; \
                     waiting for the garbage collector to remove it",
                    job_name(&plan)
                )),
                ..DrasiStateStoreBackupStatus::default()
            };
            if previous != Some(&status) {
                apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status).await?;
            }
            return Ok(Action::requeue(POLL));
        }
        Some(JobOwner::Foreign) => {
            let invalid = BackupInvalid::ObjectNotOwned {
                object: describe::<Job>(&namespace, &job_name(&plan)),
            };
            let status = failed_status(previous, invalid.reason(), invalid.to_string(), now());
            apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status).await?;
            return Ok(Action::await_change());
        }
    }
    match job_outcome(job.as_ref()) {
        JobOutcome::Absent => {
            // The bucket credentials go to the Job only if their Secret
            // opted in to this store, like every Secret a store references.
            if let Some(secret) = plan.credentials_secret() {
                let found: Option<Secret> = get_opt(client, &namespace, secret).await?;
                if let Err(invalid) = plan.check_credentials(found.as_ref()) {
                    let status =
                        failed_status(previous, invalid.reason(), invalid.to_string(), now());
                    apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status)
                        .await?;
                    return Ok(Action::await_change());
                }
            }
            let backups: Api<DrasiStateStoreBackup> = Api::namespaced(client.clone(), &namespace);
            let all = backups.list(&ListParams::default()).await.map_err(|e| {
                ApiError::new(
                    "listing",
                    format!("DrasiStateStoreBackups in {namespace}"),
                    e,
                )
            })?;
            if let Some(other) = other_running(&all.items, &plan.store, &name) {
                let status = DrasiStateStoreBackupStatus {
                    phase: Some(BackupPhase::Pending),
                    reason: Some(BackupReason::WaitingForOtherBackup.to_string()),
                    message: Some(format!(
                        "backup {} of store {} is running; one backup per store runs at a time",
                        other.name_any(),
                        plan.store
                    )),
                    ..DrasiStateStoreBackupStatus::default()
                };
                if previous != Some(&status) {
                    apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status)
                        .await?;
                }
                return Ok(Action::requeue(POLL));
            }
            // Status first: a second backup reconciled right after this one
            // must see it Running and wait.
            apply_status::<DrasiStateStoreBackup>(
                client,
                &namespace,
                &name,
                &running_status(&plan, now(), previous),
            )
            .await?;
            // Created, never applied: a Job that appeared under this name
            // in the meantime makes the create fail (409) instead of being
            // taken over, and the next pass checks who controls it.
            let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
            match jobs
                .create(&PostParams::default(), &backup_job(&plan))
                .await
            {
                Ok(_) => Ok(Action::requeue(POLL)),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
                Err(e) => {
                    Err(
                        ApiError::new("creating", describe::<Job>(&namespace, &job_name(&plan)), e)
                            .into(),
                    )
                }
            }
        }
        JobOutcome::Running => {
            let status = running_status(&plan, now(), previous);
            if previous.map(|p| p.phase) != Some(status.phase) {
                apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status).await?;
            }
            Ok(Action::requeue(POLL))
        }
        JobOutcome::Succeeded => {
            let job = job.as_ref().expect("a Job that succeeded exists");
            let running = running_status(&plan, now(), previous);
            let status = match pod_log(client, &namespace, &plan, job).await? {
                Some(summary) => completed_status(&running, &summary, now()),
                None => failed_status(
                    Some(&running),
                    BackupReason::NoSummary,
                    format!(
                        "Job {} succeeded but its pod's log holds no backup summary; verify {} with `drasi-store-server verify`",
                        job_name(&plan),
                        plan.location.display()
                    ),
                    now(),
                ),
            };
            apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status).await?;
            Ok(Action::await_change())
        }
        JobOutcome::Failed => {
            let job = job.as_ref().expect("a Job that failed exists");
            let running = running_status(&plan, now(), previous);
            let message = termination_message(client, &namespace, &plan, job)
                .await?
                .map(|m| error_message(&m))
                .unwrap_or_else(|| format!("Job {} failed (see its pod's log)", job_name(&plan)));
            let status = failed_status(Some(&running), BackupReason::BackupFailed, message, now());
            apply_status::<DrasiStateStoreBackup>(client, &namespace, &name, &status).await?;
            Ok(Action::await_change())
        }
    }
}

/// The pods of the backup's Job: labelled for the backup AND controlled by
/// the Job's UID, so a pod someone else labelled cannot report an outcome.
async fn job_pods(
    client: &Client,
    namespace: &str,
    plan: &BackupPlan,
    job: &Job,
) -> Result<Vec<Pod>, ApiError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{BACKUP_LABEL}={}", plan.name);
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    pods.list(&ListParams::default().labels(&selector))
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|pod| {
                    pod.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.controller == Some(true) && r.kind == "Job" && r.uid == job_uid)
                })
                .collect()
        })
        .map_err(|e| {
            ApiError::new(
                "listing",
                format!("pods of Job {namespace}/{}", job_name(plan)),
                e,
            )
        })
}

async fn pod_log(
    client: &Client,
    namespace: &str,
    plan: &BackupPlan,
    job: &Job,
) -> Result<Option<BackupSummary>, ApiError> {
    let pods = job_pods(client, namespace, plan, job).await?;
    let Some(pod) = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
    else {
        return Ok(None);
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = LogParams {
        container: Some(BACKUP_CONTAINER.to_owned()),
        limit_bytes: Some(LOG_LIMIT_BYTES),
        ..LogParams::default()
    };
    let pod_name = pod.name_any();
    let log = api.logs(&pod_name, &params).await.map_err(|e| {
        ApiError::new(
            "reading the log of",
            describe::<Pod>(namespace, &pod_name),
            e,
        )
    })?;
    Ok(parse_summary(&log))
}

async fn termination_message(
    client: &Client,
    namespace: &str,
    plan: &BackupPlan,
    job: &Job,
) -> Result<Option<String>, ApiError> {
    let pods = job_pods(client, namespace, plan, job).await?;
    Ok(pods.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == BACKUP_CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .clone()
    }))
}

pub fn error_policy(
    _: Arc<DrasiStateStoreBackup>,
    error: &BackupError,
    _: Arc<BackupContext>,
) -> Action {
    tracing::warn!(%error, "backup reconcile failed");
    Action::requeue(POLL)
}

/// Runs the backup controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<BackupContext>,
    watch_namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (backups, jobs): (Api<DrasiStateStoreBackup>, Api<Job>) = match watch_namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    // Only backup Jobs (a label-exists selector), so the cache stays small.
    let owned = watcher::Config::default()
        .labels(BACKUP_LABEL)
        .any_semantic();
    // One reconcile at a time: "at most one running backup per store" is
    // decided from a fresh list, and the Running status is written before
    // the Job is created, so sequential passes cannot both start a backup.
    Controller::new(backups, watcher::Config::default().any_semantic())
        .owns(jobs, owned)
        .with_config(controller::Config::default().concurrency(1))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "backup controller error");
            }
        })
        .await;
}

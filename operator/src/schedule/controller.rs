//! Two reconcile loops:
//! - [`reconcile`]: a `DrasiStateStoreScheduledBackup` creates the backup
//!   of the slot that is due, applies retention, writes its status and
//!   requeues itself for the next slot;
//! - [`reconcile_deletion`]: a deleted backup carrying [`DATA_FINALIZER`]
//!   keeps existing until a Job deleted its snapshot.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::cron::{Schedule, minute_of, slot_name};
use super::deletion_job::{
    DATA_FINALIZER, DELETION_CONTAINER, DELETION_LABEL, DeletionPlan, Target, deletion_job,
    deletion_job_name, deletion_plan,
};
use super::retention::{Candidate, Retention, parse_max_age, select};
use super::{SCHEDULE_LABEL, ScheduleReason};
use crate::backup::controller::{JobOutcome, job_outcome};
use crate::backup::summary::error_message;
use crate::builders::BuildContext;
use crate::controller::api::{ApiError, FIELD_MANAGER, apply_status, delete, describe, get_opt};
use crate::crd::{
    BackupPhase, DrasiStateStoreBackup, DrasiStateStoreBackupSpec, DrasiStateStoreBackupStatus,
    DrasiStateStoreScheduledBackup, DrasiStateStoreScheduledBackupStatus,
};
use crate::labels::{self, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Longest wait between two passes of a schedule: `maxAge` expiry depends
/// on the clock alone, and a clock jump must not stall a schedule.
pub const MAX_REQUEUE: Duration = Duration::from_secs(60 * 60);

/// How often a running deletion Job is looked at, besides the Job watch.
const POLL: Duration = Duration::from_secs(15);

/// Wait before a failed deletion (or a failed retention delete) is retried.
pub const RETRY: Duration = Duration::from_secs(60);

/// Condition types of a schedule's status.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
pub const CONDITION_RETENTION: &str = "Retention";

pub struct ScheduleContext {
    pub client: Client,
    pub build: BuildContext,
    recorder: Recorder,
}

impl ScheduleContext {
    /// `instance` identifies this operator replica in events (the pod name).
    pub fn new(client: Client, build: BuildContext, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            build,
        }
    }

    /// Best effort, like the store controller's events: an event that
    /// cannot be written is logged and never fails a reconcile.
    async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: ScheduleReason,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(
                object = regarding.name.as_deref().unwrap_or_default(),
                %reason,
                %error,
                "could not publish event"
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{kind} has no namespace")]
    NoNamespace { kind: &'static str },
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: ScheduleReason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    // lastTransitionTime moves only when the status flips.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// The backups `schedule` owns (controller reference by UID): a backup
/// someone else labelled is never counted, and never deleted.
pub fn owned_backups(
    schedule: &DrasiStateStoreScheduledBackup,
    backups: Vec<DrasiStateStoreBackup>,
) -> Vec<DrasiStateStoreBackup> {
    let uid = schedule.metadata.uid.clone().unwrap_or_default();
    backups
        .into_iter()
        .filter(|b| {
            b.metadata.owner_references.iter().flatten().any(|r| {
                r.controller == Some(true)
                    && r.kind == DrasiStateStoreScheduledBackup::kind(&())
                    && r.uid == uid
            })
        })
        .collect()
}

/// What retention knows of a backup.
pub fn candidate(backup: &DrasiStateStoreBackup) -> Candidate {
    Candidate {
        name: backup.name_any(),
        created: backup
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::MAX),
        phase: backup.status.as_ref().and_then(|s| s.phase),
        deleting: backup.metadata.deletion_timestamp.is_some(),
    }
}

/// The backup `schedule` takes for `slot`: owned by the schedule (so
/// deleting the schedule deletes its backups), labelled with its name, and
/// carrying [`DATA_FINALIZER`] so that deleting it deletes its snapshot.
pub fn slot_backup(
    schedule: &DrasiStateStoreScheduledBackup,
    slot: Timestamp,
) -> DrasiStateStoreBackup {
    let name = schedule.name_any();
    DrasiStateStoreBackup {
        metadata: ObjectMeta {
            name: Some(slot_name(&name, slot)),
            namespace: schedule.namespace(),
            labels: Some(BTreeMap::from([
                (SCHEDULE_LABEL.to_owned(), name),
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                (
                    labels::INSTANCE_LABEL.to_owned(),
                    schedule.spec.store.clone(),
                ),
            ])),
            owner_references: schedule.controller_owner_ref(&()).map(|o| vec![o]),
            finalizers: Some(vec![DATA_FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: DrasiStateStoreBackupSpec {
            store: schedule.spec.store.clone(),
            destination: schedule.spec.destination.clone(),
        },
        status: None,
    }
}

/// The requeue for a schedule whose next slot is `next`.
pub fn requeue_for(next: Option<Timestamp>, now: Timestamp) -> Duration {
    next.and_then(|next| Duration::try_from(next.duration_since(now)).ok())
        // A slot is due at its second 0; one more second and it is past.
        .map(|d| d + Duration::from_secs(1))
        .unwrap_or(MAX_REQUEUE)
        .min(MAX_REQUEUE)
}

pub async fn reconcile(
    schedule: Arc<DrasiStateStoreScheduledBackup>,
    ctx: Arc<ScheduleContext>,
) -> Result<Action, ScheduleError> {
    reconcile_at(&schedule, &ctx, Timestamp::now()).await
}

/// One pass at the instant `now` (a parameter, so tests can move the clock).
pub async fn reconcile_at(
    schedule: &DrasiStateStoreScheduledBackup,
    ctx: &ScheduleContext,
    now: Timestamp,
) -> Result<Action, ScheduleError> {
    if schedule.metadata.deletion_timestamp.is_some() {
        // Its backups go with it through their owner references.
        return Ok(Action::await_change());
    }
    let namespace = schedule.namespace().ok_or(ScheduleError::NoNamespace {
        kind: "DrasiStateStoreScheduledBackup",
    })?;
    let name = schedule.name_any();
    let client = &ctx.client;
    let regarding = schedule.object_ref(&());
    let generation = schedule.metadata.generation;
    let previous = schedule.status.clone().unwrap_or_default();
    let mut status = DrasiStateStoreScheduledBackupStatus {
        observed_generation: generation,
        ..previous.clone()
    };

    // Bad input changes nothing: no backup is created and none deleted.
    let parsed = Schedule::parse(
        &schedule.spec.schedule,
        schedule.spec.time_zone.as_deref(),
        now,
    )
    .map_err(|e| e.to_string())
    .and_then(|s| {
        let max_age = schedule
            .spec
            .max_age
            .as_deref()
            .map(parse_max_age)
            .transpose()?;
        Ok((s, max_age))
    });
    let (cron, max_age) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            status.next_schedule_time = None;
            let c = condition(
                &previous.conditions,
                CONDITION_SCHEDULED,
                false,
                ScheduleReason::InvalidSpec,
                message.clone(),
                generation,
                now,
            );
            let changed = previous
                .conditions
                .iter()
                .find(|p| p.type_ == CONDITION_SCHEDULED)
                .is_none_or(|p| p.reason != c.reason || p.message != c.message);
            set_condition(&mut status.conditions, c);
            if status != previous {
                apply_status::<DrasiStateStoreScheduledBackup>(client, &namespace, &name, &status)
                    .await?;
            }
            if changed {
                ctx.event(
                    &regarding,
                    EventType::Warning,
                    ScheduleReason::InvalidSpec,
                    message,
                )
                .await;
            }
            return Ok(Action::await_change());
        }
    };

    let api: Api<DrasiStateStoreBackup> = Api::namespaced(client.clone(), &namespace);
    let listed = api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await
        .map_err(|e| {
            ApiError::new(
                "listing",
                format!("DrasiStateStoreBackups of schedule {namespace}/{name}"),
                e,
            )
        })?;
    let mut owned = owned_backups(schedule, listed.items);

    let mut scheduled = condition(
        &previous.conditions,
        CONDITION_SCHEDULED,
        !schedule.spec.suspend,
        if schedule.spec.suspend {
            ScheduleReason::Suspended
        } else {
            ScheduleReason::Scheduled
        },
        if schedule.spec.suspend {
            "spec.suspend is true: no new backups; retention still applies".to_owned()
        } else {
            format!(
                "backups of DrasiStateStore {} on {:?} ({})",
                schedule.spec.store,
                schedule.spec.schedule,
                schedule.spec.time_zone.as_deref().unwrap_or("UTC")
            )
        },
        generation,
        now,
    );
    if !schedule.spec.suspend {
        let first = previous.last_schedule_time.is_none() && owned.is_empty();
        let slot = if first && schedule.spec.immediate {
            Some(minute_of(now))
        } else {
            let last = previous
                .last_schedule_time
                .as_ref()
                .or(schedule.metadata.creation_timestamp.as_ref())
                .map(|t| t.0)
                .unwrap_or(now);
            cron.due(last, now)
        };
        if let Some(slot) = slot {
            let backup = slot_backup(schedule, slot);
            let backup_name = backup.name_any();
            let created = match api.create(&PostParams::default(), &backup).await {
                Ok(created) => {
                    ctx.event(
                        &regarding,
                        EventType::Normal,
                        ScheduleReason::BackupCreated,
                        format!("created DrasiStateStoreBackup {backup_name} for the slot {slot}"),
                    )
                    .await;
                    Some(created)
                }
                // Already there: a repeated pass for the same slot (e.g. the
                // status write after the create failed, or a restart).
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing: Option<DrasiStateStoreBackup> =
                        get_opt(client, &namespace, &backup_name).await?;
                    let ours = existing.and_then(|e| owned_backups(schedule, vec![e]).pop());
                    if ours.is_none() {
                        let message = format!(
                            "DrasiStateStoreBackup {backup_name} already exists and is not owned \
                             by this schedule; the slot {slot} is skipped"
                        );
                        scheduled = condition(
                            &previous.conditions,
                            CONDITION_SCHEDULED,
                            false,
                            ScheduleReason::BackupNameTaken,
                            message.clone(),
                            generation,
                            now,
                        );
                        ctx.event(
                            &regarding,
                            EventType::Warning,
                            ScheduleReason::BackupNameTaken,
                            message,
                        )
                        .await;
                    }
                    ours
                }
                Err(e) => {
                    return Err(ApiError::new(
                        "creating",
                        describe::<DrasiStateStoreBackup>(&namespace, &backup_name),
                        e,
                    )
                    .into());
                }
            };
            // The slot counts as taken either way, so a name held by
            // someone else does not stop every later slot.
            status.last_schedule_time = Some(Time(slot));
            status.last_backup = Some(backup_name);
            if let Some(created) = created
                && !owned.iter().any(|b| b.name_any() == created.name_any())
            {
                owned.push(created);
            }
        }
    }
    set_condition(&mut status.conditions, scheduled);

    // Retention.
    let retention = Retention {
        keep_last: schedule
            .spec
            .keep_last
            .and_then(|n| usize::try_from(n).ok()),
        max_age,
    };
    let candidates: Vec<Candidate> = owned.iter().map(candidate).collect();
    let doomed = select(&candidates, &retention, now);
    let mut failures = Vec::new();
    for victim in &doomed {
        match delete::<DrasiStateStoreBackup>(
            client,
            &namespace,
            victim,
            &DeleteParams::background(),
        )
        .await
        {
            Ok(()) => {
                ctx.event(
                    &regarding,
                    EventType::Normal,
                    ScheduleReason::BackupExpired,
                    format!("deleted DrasiStateStoreBackup {victim} (retention)"),
                )
                .await;
            }
            Err(error) => failures.push(error.to_string()),
        }
    }
    let kept = candidates
        .iter()
        .filter(|c| !c.deleting && !doomed.contains(&c.name))
        .count();
    let retention_condition = if failures.is_empty() {
        condition(
            &previous.conditions,
            CONDITION_RETENTION,
            true,
            ScheduleReason::RetentionApplied,
            format!("{kept} backups kept"),
            generation,
            now,
        )
    } else {
        condition(
            &previous.conditions,
            CONDITION_RETENTION,
            false,
            ScheduleReason::RetentionFailed,
            failures.join("; "),
            generation,
            now,
        )
    };
    set_condition(&mut status.conditions, retention_condition);

    let newest_completed = owned
        .iter()
        .filter(|b| {
            !doomed.contains(&b.name_any())
                && b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed)
        })
        .max_by_key(|b| (candidate(b).created, b.name_any()));
    if let Some(b) = newest_completed {
        status.last_successful_backup = Some(b.name_any());
        status.last_successful_time = b
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .or_else(|| b.metadata.creation_timestamp.clone());
    }
    let next = (!schedule.spec.suspend)
        .then(|| cron.next_after(now))
        .flatten();
    status.next_schedule_time = next.map(Time);
    if status != previous {
        apply_status::<DrasiStateStoreScheduledBackup>(client, &namespace, &name, &status).await?;
    }
    Ok(Action::requeue(if failures.is_empty() {
        requeue_for(next, now)
    } else {
        RETRY
    }))
}

pub fn error_policy(
    _: Arc<DrasiStateStoreScheduledBackup>,
    error: &ScheduleError,
    _: Arc<ScheduleContext>,
) -> Action {
    tracing::warn!(%error, "scheduled backup reconcile failed");
    Action::requeue(RETRY)
}

/// One pass of the data deletion of a deleted backup.
pub async fn reconcile_deletion(
    backup: Arc<DrasiStateStoreBackup>,
    ctx: Arc<ScheduleContext>,
) -> Result<Action, ScheduleError> {
    let backup = backup.as_ref();
    if backup.metadata.deletion_timestamp.is_none()
        || !backup.finalizers().iter().any(|f| f == DATA_FINALIZER)
    {
        return Ok(Action::await_change());
    }
    let namespace = backup.namespace().ok_or(ScheduleError::NoNamespace {
        kind: "DrasiStateStoreBackup",
    })?;
    let name = backup.name_any();
    let client = &ctx.client;
    let plan = match deletion_plan(backup, &ctx.build.server_image) {
        Ok(None) => {
            remove_finalizer(client, backup, &namespace).await?;
            return Ok(Action::await_change());
        }
        Ok(Some(plan)) => plan,
        Err(invalid) => {
            deletion_failed(&ctx, backup, &namespace, invalid.to_string()).await?;
            return Ok(Action::requeue(RETRY));
        }
    };
    if namespace_terminating(client, &namespace).await {
        // No Job can start in a terminating namespace, and the finalizer
        // must not keep the namespace from going: the snapshot is kept.
        ctx.event(
            &backup.object_ref(&()),
            EventType::Warning,
            ScheduleReason::SnapshotKept,
            format!(
                "namespace {namespace} is being deleted: the snapshot at {} is kept; delete it by hand",
                plan.location
            ),
        )
        .await;
        remove_finalizer(client, backup, &namespace).await?;
        return Ok(Action::await_change());
    }
    if let Err(message) = check_credentials(client, &plan).await? {
        deletion_failed(&ctx, backup, &namespace, message).await?;
        return Ok(Action::requeue(RETRY));
    }
    let job_name = deletion_job_name(&name);
    let job: Option<Job> = get_opt(client, &namespace, &job_name).await?;
    let uid = backup.metadata.uid.clone().unwrap_or_default();
    if let Some(job) = &job {
        let ours = job
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.uid == uid);
        if !ours {
            let message = format!(
                "{} exists and is not controlled by this backup; the operator never takes over \
                 a Job it did not create: delete it",
                describe::<Job>(&namespace, &job_name)
            );
            deletion_failed(&ctx, backup, &namespace, message).await?;
            return Ok(Action::requeue(RETRY));
        }
    }
    match job_outcome(job.as_ref()) {
        JobOutcome::Absent => {
            let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
            match jobs
                .create(&PostParams::default(), &deletion_job(&plan))
                .await
            {
                Ok(_) => {}
                // The failed Job of the previous attempt is still going away.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Ok(Action::requeue(Duration::from_secs(5)));
                }
                Err(e) => {
                    return Err(ApiError::new(
                        "creating",
                        describe::<Job>(&namespace, &job_name),
                        e,
                    )
                    .into());
                }
            }
            set_backup_reason(
                client,
                backup,
                &namespace,
                ScheduleReason::DeletingSnapshot,
                format!(
                    "Job {job_name} is deleting the snapshot at {}",
                    plan.location
                ),
            )
            .await?;
            Ok(Action::requeue(POLL))
        }
        JobOutcome::Running => Ok(Action::requeue(POLL)),
        JobOutcome::Succeeded => {
            // The Job goes with the backup through its owner reference.
            remove_finalizer(client, backup, &namespace).await?;
            Ok(Action::await_change())
        }
        JobOutcome::Failed => {
            let job = job.as_ref().expect("a failed Job exists");
            let detail = termination_message(client, &namespace, &plan, job)
                .await?
                .map(|m| error_message(&m))
                .unwrap_or_else(|| "see the Job's pod log".to_owned());
            let message = format!(
                "deleting the snapshot at {} failed (Job {job_name}): {detail}; retried {} s \
                 after the failure",
                plan.location,
                RETRY.as_secs()
            );
            deletion_failed(&ctx, backup, &namespace, message).await?;
            // Wait out the pause first: deleting the Job wakes this loop at
            // once (the Job watch), and the next pass creates the next Job.
            if let Some(wait) = retry_wait(job, Timestamp::now()) {
                return Ok(Action::requeue(wait));
            }
            delete::<Job>(client, &namespace, &job_name, &DeleteParams::background()).await?;
            Ok(Action::requeue(Duration::from_secs(5)))
        }
    }
}

/// How long a failed deletion Job still stays before the retry: [`RETRY`]
/// after its `Failed` condition turned true. `None`: retry now (also when
/// the time is unknown).
pub fn retry_wait(job: &Job, now: Timestamp) -> Option<Duration> {
    let failed_at = job
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True")?
        .last_transition_time
        .as_ref()?
        .0;
    let elapsed = Duration::try_from(now.duration_since(failed_at)).unwrap_or(Duration::ZERO);
    RETRY.checked_sub(elapsed).filter(|w| !w.is_zero())
}

/// Whether `namespace` is being deleted (or already gone). An unreadable
/// namespace counts as live: the deletion then proceeds (and fails, and is
/// retried) as usual.
async fn namespace_terminating(client: &Client, namespace: &str) -> bool {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(ns)) => {
            ns.metadata.deletion_timestamp.is_some()
                || ns.status.and_then(|s| s.phase).as_deref() == Some("Terminating")
        }
        Ok(None) => true,
        Err(error) => {
            tracing::debug!(namespace, %error, "could not read namespace");
            false
        }
    }
}

/// The destination's `credentialsSecret` must still exist and opt in to
/// the store (as when the backup ran): revoking that label also stops
/// deletion Jobs from receiving it. `Ok(Err(message))` when it does not.
async fn check_credentials(
    client: &Client,
    plan: &DeletionPlan,
) -> Result<Result<(), String>, ApiError> {
    let Target::Object { .. } = plan.target else {
        return Ok(Ok(()));
    };
    let Some(secret) = plan
        .destination
        .object_store
        .as_ref()
        .and_then(|o| o.access.credentials_secret.clone())
    else {
        return Ok(Ok(()));
    };
    let found: Option<Secret> = get_opt(client, &plan.namespace, &secret).await?;
    Ok(match found {
        None => Err(format!(
            "Secret {secret} (credentialsSecret of backup destination {}) does not exist in \
             namespace {}: the snapshot at {} cannot be deleted without it",
            plan.destination.name, plan.namespace, plan.location
        )),
        Some(found) if !labels::opted_in(found.metadata.labels.as_ref(), &plan.store) => {
            Err(format!(
                "Secret {secret} (credentialsSecret of backup destination {}) does not opt in to \
                 being used by DrasiStateStore {}: label it {}={}",
                plan.destination.name,
                plan.store,
                labels::ACCESS_LABEL,
                plan.store
            ))
        }
        Some(_) => Ok(()),
    })
}

async fn deletion_failed(
    ctx: &ScheduleContext,
    backup: &DrasiStateStoreBackup,
    namespace: &str,
    message: String,
) -> Result<(), ApiError> {
    let unchanged = backup.status.as_ref().is_some_and(|s| {
        s.reason.as_deref() == Some(ScheduleReason::SnapshotDeletionFailed.as_ref())
            && s.message.as_deref() == Some(message.as_str())
    });
    if unchanged {
        return Ok(());
    }
    tracing::warn!(backup = %backup.name_any(), %namespace, %message, "snapshot deletion failed");
    ctx.event(
        &backup.object_ref(&()),
        EventType::Warning,
        ScheduleReason::SnapshotDeletionFailed,
        message.clone(),
    )
    .await;
    set_backup_reason(
        &ctx.client,
        backup,
        namespace,
        ScheduleReason::SnapshotDeletionFailed,
        message,
    )
    .await
}

/// The backup's status with `reason` and `message` replaced; the phase and
/// everything else stay as the backup controller wrote them.
async fn set_backup_reason(
    client: &Client,
    backup: &DrasiStateStoreBackup,
    namespace: &str,
    reason: ScheduleReason,
    message: String,
) -> Result<(), ApiError> {
    let previous = backup.status.clone().unwrap_or_default();
    let status = DrasiStateStoreBackupStatus {
        reason: Some(reason.to_string()),
        message: Some(message),
        ..previous.clone()
    };
    if status == previous {
        return Ok(());
    }
    apply_status::<DrasiStateStoreBackup>(client, namespace, &backup.name_any(), &status).await
}

async fn remove_finalizer(
    client: &Client,
    backup: &DrasiStateStoreBackup,
    namespace: &str,
) -> Result<(), ApiError> {
    let name = backup.name_any();
    let remaining: Vec<&String> = backup
        .finalizers()
        .iter()
        .filter(|f| *f != DATA_FINALIZER)
        .collect();
    // resourceVersion makes the merge patch conditional, so a concurrent
    // finalizer change by someone else is not overwritten.
    let patch = serde_json::json!({
        "metadata": { "finalizers": remaining, "resourceVersion": backup.resource_version() }
    });
    let api: Api<DrasiStateStoreBackup> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| {
            ApiError::new(
                "removing the finalizer of",
                describe::<DrasiStateStoreBackup>(namespace, &name),
                e,
            )
        })
}

/// The failed container's termination message, from the Job's own pods
/// (labelled for the backup and controlled by the Job's UID).
async fn termination_message(
    client: &Client,
    namespace: &str,
    plan: &DeletionPlan,
    job: &Job,
) -> Result<Option<String>, ApiError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{DELETION_LABEL}={}", plan.backup);
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            ApiError::new(
                "listing",
                format!(
                    "pods of Job {namespace}/{}",
                    deletion_job_name(&plan.backup)
                ),
                e,
            )
        })?;
    Ok(list
        .items
        .iter()
        .filter(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.controller == Some(true) && r.kind == "Job" && r.uid == job_uid)
        })
        .find_map(|pod| {
            pod.status
                .as_ref()?
                .container_statuses
                .iter()
                .flatten()
                .find(|c| c.name == DELETION_CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .message
                .clone()
        }))
}

pub fn deletion_error_policy(
    _: Arc<DrasiStateStoreBackup>,
    error: &ScheduleError,
    _: Arc<ScheduleContext>,
) -> Action {
    tracing::warn!(%error, "backup data deletion failed");
    Action::requeue(RETRY)
}

/// Runs the schedule controller and the backup data deletion controller
/// until `shutdown` resolves.
pub async fn run(
    ctx: Arc<ScheduleContext>,
    watch_namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let client = ctx.client.clone();
    let (schedules, backups, jobs) = match watch_namespace {
        Some(ns) => (
            Api::<DrasiStateStoreScheduledBackup>::namespaced(client.clone(), ns),
            Api::<DrasiStateStoreBackup>::namespaced(client.clone(), ns),
            Api::<Job>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    // Only scheduled backups (a label-exists selector): their phase
    // changes drive retention and `lastSuccessfulBackup`.
    let scheduled_backups = watcher::Config::default()
        .labels(SCHEDULE_LABEL)
        .any_semantic();
    let schedule_loop = Controller::new(schedules, watcher::Config::default().any_semantic())
        .owns(backups.clone(), scheduled_backups.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "scheduled backup controller error");
            }
        });
    let deletion_loop = Controller::new(backups, scheduled_backups)
        .owns(
            jobs,
            watcher::Config::default()
                .labels(DELETION_LABEL)
                .any_semantic(),
        )
        .with_config(controller::Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_deletion, deletion_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "backup data deletion controller error");
            }
        });
    futures::join!(schedule_loop, deletion_loop);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_failed_deletion_job_is_retried_a_minute_after_its_failure() {
        let job = |condition: serde_json::Value| -> Job {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "b-delete" },
                "status": { "conditions": [condition] },
            }))
            .unwrap()
        };
        let failed = job(serde_json::json!({ "type": "Failed", "status": "True",
            "lastTransitionTime": "2024-01-01T00:00:00Z" }));
        assert_eq!(
            retry_wait(&failed, ts("2024-01-01T00:00:20Z")),
            Some(Duration::from_secs(40))
        );
        assert_eq!(retry_wait(&failed, ts("2024-01-01T00:01:00Z")), None);
        assert_eq!(retry_wait(&failed, ts("2024-01-01T03:00:00Z")), None);
        // A failure time in the future (skew) waits at most RETRY.
        assert_eq!(retry_wait(&failed, ts("2023-12-31T23:00:00Z")), Some(RETRY));
        let unknown = job(serde_json::json!({ "type": "Failed", "status": "True" }));
        assert_eq!(retry_wait(&unknown, ts("2024-01-01T00:00:20Z")), None);
    }

    #[test]
    fn requeue_waits_for_the_next_slot_capped_at_an_hour() {
        let now = ts("2024-01-01T00:00:00Z");
        assert_eq!(
            requeue_for(Some(ts("2024-01-01T00:15:00Z")), now),
            Duration::from_secs(15 * 60 + 1)
        );
        assert_eq!(
            requeue_for(Some(ts("2024-01-02T00:00:00Z")), now),
            MAX_REQUEUE
        );
        assert_eq!(requeue_for(None, now), MAX_REQUEUE);
        // A slot in the past (clock skew) never gives a zero wait.
        assert!(requeue_for(Some(ts("2023-12-31T23:59:00Z")), now) > Duration::ZERO);
    }
}

//! Scheduled backups (docs/backup-operator.md, "Scheduled backups"):
//! - [`cron`]: parsing the schedule, the slot that is due, slot names;
//! - [`retention`]: which backups `keepLast`/`maxAge` delete;
//! - [`deletion_job`]: the Job deleting a deleted backup's snapshot;
//! - [`controller`]: the `DrasiStateStoreScheduledBackup` reconcile loop,
//!   and the loop that deletes the data of deleted scheduled backups.

pub mod controller;
pub mod cron;
pub mod deletion_job;
pub mod retention;

/// Label of the backups a schedule creates: the schedule's name.
pub const SCHEDULE_LABEL: &str = "drasi.io/scheduled-backup";

/// Values of the schedule's `Scheduled` and `Retention` conditions, of
/// the events it emits, and of `status.reason` of a scheduled backup whose
/// data is being deleted (docs/backup-operator.md lists them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::AsRefStr, strum::EnumIter)]
pub enum ScheduleReason {
    /// Scheduled=True: backups are taken on the schedule.
    Scheduled,
    /// Scheduled=False: `spec.suspend` is true.
    Suspended,
    /// Scheduled=False: `spec.schedule` or `spec.maxAge` cannot be used;
    /// nothing is created or deleted.
    InvalidSpec,
    /// Scheduled=False: the name of a slot's backup is taken by an object
    /// this schedule does not own; the slot is skipped.
    BackupNameTaken,
    /// Retention=True: the limits were applied.
    RetentionApplied,
    /// Retention=False: deleting an expired backup failed; retried.
    RetentionFailed,
    /// Event: a backup was created for a slot.
    BackupCreated,
    /// Event: retention deleted a backup.
    BackupExpired,
    /// Backup status: the deletion Job is deleting the snapshot.
    DeletingSnapshot,
    /// Backup status and event: the snapshot could not be deleted; retried.
    SnapshotDeletionFailed,
    /// Event: the backup's namespace is being deleted, so no deletion Job
    /// can run; the finalizer is removed and the snapshot kept.
    SnapshotKept,
}

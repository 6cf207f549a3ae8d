//! The `DrasiStateStoreScheduledBackup` custom resource: backups of one
//! store on a cron schedule, with retention. See docs/backup-operator.md,
//! "Scheduled backups".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::data_protection::DNS_LABEL_PATTERN;

/// Longest schedule name: its backups are named
/// `<schedule>-<yyyymmddhhmm>` (13 more characters) and a backup name is
/// at most 63 characters (it names the backup Job).
pub const MAX_SCHEDULE_NAME: usize = 50;

/// Five fields separated by blanks, or an `@daily`-style macro; the
/// operator parses it fully and reports anything else in the status.
pub const SCHEDULE_PATTERN: &str = r"^\s*(@[a-zA-Z]+|\S+(\s+\S+){4})\s*$";

/// An IANA time zone name such as `Europe/Berlin` or `UTC`.
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$";

/// One or more `<number><unit>` with unit `m`, `h`, `d` or `w`, e.g.
/// `30d`, `12h`, `1d12h`.
pub const MAX_AGE_PATTERN: &str = r"^([0-9]+[mhdw])+$";

/// Backups of one `DrasiStateStore` on a schedule, each one a
/// `DrasiStateStoreBackup` owned by this object.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "drasi.io",
    version = "v1alpha1",
    kind = "DrasiStateStoreScheduledBackup",
    plural = "drasistatestorescheduledbackups",
    shortname = "dssschedule",
    category = "drasi",
    namespaced,
    status = "DrasiStateStoreScheduledBackupStatus",
    derive = "PartialEq",
    doc = "Backups of one DrasiStateStore on a cron schedule, with retention; each backup is a DrasiStateStoreBackup owned by this object.",
    printcolumn(name = "Store", type_ = "string", json_path = ".spec.store", description = "The store backed up"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule", description = "Cron schedule (in spec.timeZone, UTC by default)"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend", description = "No new backups while true"),
    printcolumn(name = "Last Backup", type_ = "string", json_path = ".status.lastSuccessfulBackup", description = "The newest Completed backup"),
    printcolumn(name = "Next", type_ = "date", json_path = ".status.nextScheduleTime", description = "When the next backup is due"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 50").message("metadata.name must be at most 50 characters: backups are named <schedule>-<yyyymmddhhmm>"),
    validation = Rule::new("self.spec.store == oldSelf.spec.store").message("spec.store is immutable: create a new DrasiStateStoreScheduledBackup for another store"),
)]
#[serde(rename_all = "camelCase")]
pub struct DrasiStateStoreScheduledBackupSpec {
    /// Name of the `DrasiStateStore` in this namespace.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub store: String,

    /// Name of one of the store's `spec.backup.destinations`; the first
    /// one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub destination: Option<String>,

    /// Standard 5-field cron expression (minute hour day-of-month month
    /// day-of-week), evaluated in `timeZone`, e.g. `0 2 * * *`; the macros
    /// `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly` too.
    #[schemars(length(min = 1, max = 128), pattern(SCHEDULE_PATTERN))]
    pub schedule: String,

    /// IANA time zone the schedule is evaluated in (e.g. `Europe/Berlin`);
    /// UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(TIME_ZONE_PATTERN))]
    pub time_zone: Option<String>,

    /// No new backups while true; retention still applies.
    #[serde(default)]
    pub suspend: bool,

    /// Take one backup right away when the schedule is created, instead
    /// of waiting for the first slot.
    #[serde(default)]
    pub immediate: bool,

    /// Keep at most this many finished backups (Completed or Failed) of
    /// this schedule, the newest; older ones are deleted with their data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep_last: Option<i32>,

    /// Delete finished backups older than this, with their data: one or
    /// more `<number><unit>`, unit `m` (minutes), `h`, `d` or `w`, e.g.
    /// `30d`, `12h`, `1w3d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), pattern(MAX_AGE_PATTERN))]
    pub max_age: Option<String>,
}

/// What the schedule did. Only the operator writes it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrasiStateStoreScheduledBackupStatus {
    /// The slot of the last backup this schedule created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// The name of that backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,

    /// When the next backup is due; unset while suspended or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// The newest `Completed` backup of this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,

    /// When that backup completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,

    /// `Scheduled` (True: active; False: `Suspended` or `InvalidSpec`)
    /// and `Retention` (False: `RetentionFailed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

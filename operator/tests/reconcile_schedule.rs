//! The `DrasiStateStoreScheduledBackup` controller and the snapshot
//! deletion of scheduled backups against the SIMULATED API server
//! (`support/fake_api/`). The clock is a parameter of `reconcile_at`, so
//! slots are reached without waiting; Job and pod statuses are set by the
//! tests, as the Job controller and kubelet would.

// The shared harness serves several test binaries; this one uses only part of it.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use drasi_store_operator::builders::BuildContext;
use drasi_store_operator::crd::{DrasiStateStoreBackup, DrasiStateStoreScheduledBackup};
use drasi_store_operator::schedule::controller::{
    MAX_REQUEUE, RETRY, ScheduleContext, reconcile_at, reconcile_deletion,
};
use drasi_store_operator::schedule::deletion_job::DATA_FINALIZER;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use support::*;

const SCHEDULE: &str = "nightly";
const STORE: &str = "orders";
const CREDS: &str = "orders-backup-s3";
/// The backup of the schedule's 2024-01-01T00:00 slot.
const SLOT_BACKUP: &str = "nightly-202401010000";

fn schedule_path(name: &str) -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestorescheduledbackups/{name}")
}
fn backup_path(name: &str) -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestorebackups/{name}")
}
fn job_path(name: &str) -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs/{name}")
}
fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Schedules {
    h: Harness,
    ctx: Arc<ScheduleContext>,
}

impl Schedules {
    fn new() -> Self {
        let h = Harness::new();
        let ctx = Arc::new(ScheduleContext::new(
            h.ctx.client.clone(),
            BuildContext::new(SERVER_IMAGE),
            Some("operator-0".into()),
        ));
        Self { h, ctx }
    }

    /// A schedule created at 2024-01-01T00:00:00Z (the simulated API
    /// server's creationTimestamp) with `spec` on top of store + schedule.
    fn create(&self, schedule: &str, extra: Value) {
        let mut spec = json!({ "store": STORE, "schedule": schedule });
        json_patch::merge(&mut spec, &extra);
        self.h.server.put(
            "drasistatestorescheduledbackups",
            json!({
                "apiVersion": "drasi.io/v1alpha1",
                "kind": "DrasiStateStoreScheduledBackup",
                "metadata": { "name": SCHEDULE, "namespace": NS },
                "spec": spec,
            }),
        );
    }

    fn schedule(&self) -> DrasiStateStoreScheduledBackup {
        let value = self
            .h
            .server
            .get(&schedule_path(SCHEDULE))
            .expect("schedule exists");
        serde_json::from_value(value).expect("stored schedule parses")
    }

    fn status(&self) -> Value {
        self.h.server.get(&schedule_path(SCHEDULE)).unwrap()["status"].clone()
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let status = self.status();
        let c = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
            .clone();
        (
            c["status"].as_str().unwrap().into(),
            c["reason"].as_str().unwrap().into(),
            c["message"].as_str().unwrap().into(),
        )
    }

    async fn reconcile(&self, now: &str) -> Action {
        reconcile_at(&self.schedule(), &self.ctx, ts(now))
            .await
            .unwrap_or_else(|e| panic!("reconciling the schedule at {now}: {e}"))
    }

    /// Names of the backups in the namespace, sorted, as the API server
    /// lists them.
    async fn backups(&self) -> Vec<String> {
        let mut names: Vec<String> =
            kube::Api::<DrasiStateStoreBackup>::namespaced(self.h.ctx.client.clone(), NS)
                .list(&Default::default())
                .await
                .expect("listing backups")
                .items
                .into_iter()
                .map(|b| b.metadata.name.unwrap_or_default())
                .collect();
        names.sort();
        names
    }

    fn backup(&self, name: &str) -> Value {
        self.h
            .server
            .get(&backup_path(name))
            .unwrap_or_else(|| panic!("backup {name} does not exist"))
    }

    fn deleting(&self, name: &str) -> bool {
        self.backup(name)["metadata"]["deletionTimestamp"].is_string()
    }

    /// A backup the schedule owns, created at `created`, with `status`.
    fn add_owned_backup(&self, name: &str, created: &str, status: Value) {
        let schedule = self.schedule();
        self.h.server.put(
            "drasistatestorebackups",
            json!({
                "apiVersion": "drasi.io/v1alpha1",
                "kind": "DrasiStateStoreBackup",
                "metadata": { "name": name, "namespace": NS,
                    "labels": { "drasi.io/scheduled-backup": SCHEDULE },
                    "finalizers": [DATA_FINALIZER],
                    "ownerReferences": [{ "apiVersion": "drasi.io/v1alpha1",
                        "kind": "DrasiStateStoreScheduledBackup", "name": SCHEDULE,
                        "uid": schedule.metadata.uid, "controller": true,
                        "blockOwnerDeletion": true }] },
                "spec": { "store": STORE },
            }),
        );
        self.h.server.update(&backup_path(name), |b| {
            b["metadata"]["creationTimestamp"] = json!(created);
            b["status"] = status;
        });
    }

    /// Writes (everything but GET) since request `since`, without events.
    fn writes_since(&self, since: usize) -> Vec<String> {
        self.h.server.requests()[since..]
            .iter()
            .filter(|r| r.method != "GET" && !r.path.contains("/events"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn mark_last_schedule(&self, at: &str) {
        self.h.server.update(&schedule_path(SCHEDULE), |s| {
            s["status"] = json!({ "lastScheduleTime": at });
        });
    }

    async fn reconcile_deletion(&self, name: &str) -> Action {
        let backup: DrasiStateStoreBackup =
            serde_json::from_value(self.backup(name)).expect("stored backup parses");
        reconcile_deletion(Arc::new(backup), self.ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("deleting the data of {name}: {e}"))
    }

    /// `kubectl delete`: with the finalizer the object only gets a
    /// deletionTimestamp.
    async fn delete_backup(&self, name: &str) {
        kube::Api::<DrasiStateStoreBackup>::namespaced(self.h.ctx.client.clone(), NS)
            .delete(name, &Default::default())
            .await
            .expect("deleting the backup");
    }

    fn add_credentials(&self, labels: Value) {
        self.h.add_labelled_secret(
            CREDS,
            &[
                ("AWS_ACCESS_KEY_ID", "AKIATEST"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
            ],
            labels,
        );
    }

    fn job_finished(&self, job: &str, succeeded: bool, message: &str) {
        let job_value = self.h.server.get(&job_path(job)).expect("Job exists");
        let mut labels = job_value["spec"]["template"]["metadata"]["labels"].clone();
        labels["job-name"] = json!(job);
        let (phase, code) = if succeeded {
            ("Succeeded", 0)
        } else {
            ("Failed", 1)
        };
        self.h.server.put(
            "pods",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": format!("{job}-x1"), "namespace": NS, "labels": labels,
                    "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": job,
                        "uid": job_value["metadata"]["uid"], "controller": true }] },
                "status": { "phase": phase, "containerStatuses": [{
                    "name": "delete", "image": SERVER_IMAGE, "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": { "terminated": { "exitCode": code, "message": message } } }] },
            }),
        );
        self.h.server.update(&job_path(job), |j| {
            j["status"] = if succeeded {
                json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] })
            } else {
                json!({ "failed": 3, "conditions": [{ "type": "Failed", "status": "True" }] })
            };
        });
    }

    fn event_reasons(&self) -> Vec<String> {
        self.h.event_reasons()
    }

    /// A schedule and one Completed S3 backup it owns, [`SLOT_BACKUP`],
    /// with the credentials Secret labelled
    /// `drasi.io/state-store-access: <access>`.
    fn with_completed_s3_backup(access: &str) -> Self {
        let s = Self::new();
        s.create("0 0 1 1 *", json!({}));
        s.add_credentials(json!({ "drasi.io/state-store-access": access }));
        s.add_owned_backup(
            SLOT_BACKUP,
            "2024-01-01T00:00:00Z",
            completed_s3(SLOT_BACKUP),
        );
        s
    }

    /// The Job deleting the data of `backup`, if it exists.
    fn deletion_job(&self, backup: &str) -> Option<Value> {
        self.h.server.get(&job_path(&format!("{backup}-delete")))
    }

    fn backup_gone(&self, name: &str) -> bool {
        self.h.server.get(&backup_path(name)).is_none()
    }

    /// The backups being deleted, sorted.
    async fn deleting_backups(&self) -> Vec<String> {
        let mut deleting = Vec::new();
        for b in self.backups().await {
            if self.deleting(&b) {
                deleting.push(b);
            }
        }
        deleting
    }

    /// Requests so far, for [`Self::writes_since`].
    fn request_count(&self) -> usize {
        self.h.server.requests().len()
    }

    /// When the failed Job `job` failed.
    fn set_job_failed_at(&self, job: &str, at: String) {
        self.h.server.update(&job_path(job), |j| {
            j["status"]["conditions"][0]["lastTransitionTime"] = json!(at);
        });
    }
}

fn completed_s3(name: &str) -> Value {
    json!({ "phase": "Completed", "reason": "Completed",
        "location": format!("s3://drasi-backups/stores/{NS}/{STORE}/{name}.snap"),
        "destination": { "name": "s3", "objectStore": {
            "bucket": "drasi-backups", "prefix": "stores/",
            "endpoint": "http://minio.minio.svc:9000", "region": "us-east-1",
            "credentialsSecret": CREDS } } })
}

fn phase(p: &str) -> Value {
    json!({ "phase": p })
}

#[tokio::test]
async fn one_backup_per_slot_no_duplicates_and_a_requeue_until_the_next_slot() {
    let s = Schedules::new();
    s.create("0 * * * *", json!({ "destination": "s3" }));

    // Before the first slot: nothing, and a wait until 01:00.
    let action = s.reconcile("2024-01-01T00:30:00Z").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30 * 60 + 1)));
    assert!(s.backups().await.is_empty());
    assert_eq!(s.status()["nextScheduleTime"], "2024-01-01T01:00:00Z");
    assert_eq!(s.condition("Scheduled").1, "Scheduled");

    let action = s.reconcile("2024-01-01T01:00:05Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010100"]);
    assert_eq!(action, Action::requeue(Duration::from_secs(3600 - 5 + 1)));
    let backup = s.backup("nightly-202401010100");
    assert_eq!(
        backup["spec"],
        json!({ "store": STORE, "destination": "s3" })
    );
    assert_eq!(
        backup["metadata"]["labels"]["drasi.io/scheduled-backup"],
        SCHEDULE
    );
    assert_eq!(backup["metadata"]["finalizers"], json!([DATA_FINALIZER]));
    let owner = &backup["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "DrasiStateStoreScheduledBackup");
    assert_eq!(owner["uid"], s.schedule().metadata.uid.unwrap().as_str());
    assert_eq!(owner["controller"], true);
    let status = s.status();
    assert_eq!(status["lastScheduleTime"], "2024-01-01T01:00:00Z");
    assert_eq!(status["lastBackup"], "nightly-202401010100");
    assert_eq!(status["nextScheduleTime"], "2024-01-01T02:00:00Z");
    assert!(s.event_reasons().contains(&"BackupCreated".to_owned()));

    // Repeated passes within the slot change nothing at all.
    let since = s.request_count();
    s.reconcile("2024-01-01T01:00:06Z").await;
    s.reconcile("2024-01-01T01:59:59Z").await;
    assert_eq!(s.writes_since(since), Vec::<String>::new());
    assert_eq!(s.backups().await.len(), 1);

    s.reconcile("2024-01-01T02:00:00Z").await;
    assert_eq!(
        s.backups().await,
        ["nightly-202401010100", "nightly-202401010200"]
    );
    s.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_lost_status_write_or_a_restart_never_duplicates_a_slot() {
    let s = Schedules::new();
    s.create("0 * * * *", json!({}));
    s.reconcile("2024-01-01T01:00:05Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010100"]);
    // As if the status write after the create had been lost.
    s.h.server.update(&schedule_path(SCHEDULE), |sch| {
        sch["status"] = Value::Null;
    });
    s.reconcile("2024-01-01T01:10:00Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010100"]);
    assert_eq!(s.status()["lastScheduleTime"], "2024-01-01T01:00:00Z");
    assert_eq!(s.condition("Scheduled").1, "Scheduled");
}

#[tokio::test]
async fn missed_slots_give_one_catch_up_backup_only() {
    let s = Schedules::new();
    s.create("0 * * * *", json!({}));
    s.reconcile("2024-01-01T05:30:00Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010500"]);
    s.reconcile("2024-01-01T05:31:00Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010500"]);
}

#[tokio::test]
async fn a_suspended_schedule_creates_nothing_and_resumes_with_one_backup() {
    let s = Schedules::new();
    s.create("0 * * * *", json!({ "suspend": true, "immediate": true }));
    let action = s.reconcile("2024-01-01T03:00:00Z").await;
    assert!(s.backups().await.is_empty());
    assert_eq!(action, Action::requeue(MAX_REQUEUE));
    let (status, reason, _) = s.condition("Scheduled");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Suspended"));
    assert!(s.status().get("nextScheduleTime").is_none());

    s.h.server.update(&schedule_path(SCHEDULE), |sch| {
        sch["spec"]["suspend"] = json!(false);
        sch["spec"]["immediate"] = json!(false);
    });
    s.reconcile("2024-01-01T05:10:00Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010500"]);
    assert_eq!(s.condition("Scheduled").0, "True");
}

#[tokio::test]
async fn immediate_takes_one_backup_at_creation_then_follows_the_schedule() {
    let s = Schedules::new();
    s.create("0 2 * * *", json!({ "immediate": true }));
    s.reconcile("2024-01-01T00:07:30Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010007"]);
    s.reconcile("2024-01-01T00:08:30Z").await;
    s.reconcile("2024-01-01T01:59:00Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010007"]);
    s.reconcile("2024-01-01T02:00:00Z").await;
    assert_eq!(
        s.backups().await,
        ["nightly-202401010007", "nightly-202401010200"]
    );
}

#[tokio::test]
async fn a_time_zone_moves_the_slots_and_names_stay_utc() {
    let s = Schedules::new();
    s.create("0 2 * * *", json!({ "timeZone": "Europe/Berlin" }));
    // 02:00 in Berlin is 01:00 UTC in January.
    s.reconcile("2024-01-01T00:59:00Z").await;
    assert!(s.backups().await.is_empty());
    assert_eq!(s.status()["nextScheduleTime"], "2024-01-01T01:00:00Z");
    s.reconcile("2024-01-01T01:00:30Z").await;
    assert_eq!(s.backups().await, ["nightly-202401010100"]);
    assert!(s.condition("Scheduled").2.contains("Europe/Berlin"));
}

#[tokio::test]
async fn without_immediate_the_first_backup_waits_for_the_first_slot() {
    let s = Schedules::new();
    s.create("0 2 * * *", json!({}));
    s.reconcile("2024-01-01T00:07:30Z").await;
    assert!(s.backups().await.is_empty());
}

#[tokio::test]
async fn an_invalid_schedule_or_max_age_creates_and_deletes_nothing() {
    for (schedule, extra, expected) in [
        (
            "61 * * * *",
            json!({}),
            "\"61 * * * *\" is not a valid 5-field cron expression",
        ),
        ("0 0 30 2 *", json!({}), "never fires"),
        (
            "0 * * * *",
            json!({ "maxAge": "0d" }),
            "spec.maxAge \"0d\" is zero",
        ),
        (
            "0 * * * *",
            json!({ "timeZone": "Mars/Olympus_Mons" }),
            "spec.timeZone \"Mars/Olympus_Mons\" is not a time zone",
        ),
    ] {
        let s = Schedules::new();
        s.create(schedule, extra);
        s.mark_last_schedule("2023-01-01T00:00:00Z");
        s.add_owned_backup("old", "2023-01-01T00:00:00Z", phase("Completed"));
        s.add_owned_backup("older", "2022-01-01T00:00:00Z", phase("Completed"));
        let since = s.request_count();
        let action = s.reconcile("2024-01-01T05:00:00Z").await;
        assert_eq!(action, Action::await_change());
        let (status, reason, message) = s.condition("Scheduled");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
        assert!(message.contains(expected), "{message}");
        assert!(s.status().get("nextScheduleTime").is_none());
        assert_eq!(s.backups().await, ["old", "older"]);
        assert!(!s.deleting("older"));
        let writes = s.writes_since(since);
        assert_eq!(
            writes,
            [format!("PATCH {}/status", schedule_path(SCHEDULE))],
            "only the status is written"
        );
        assert!(s.event_reasons().contains(&"InvalidSpec".to_owned()));
        // The same error again: no new status write, no new event.
        let events = s.event_reasons().len();
        let since = s.request_count();
        s.reconcile("2024-01-01T05:01:00Z").await;
        assert!(s.writes_since(since).is_empty());
        assert_eq!(s.event_reasons().len(), events);
    }
}

#[tokio::test]
async fn retention_deletes_beyond_keep_last_but_never_running_or_foreign_backups() {
    let s = Schedules::new();
    s.create("0 0 1 1 *", json!({ "keepLast": 2 }));
    s.mark_last_schedule("2024-01-01T00:00:00Z");
    s.add_owned_backup("b1", "2024-06-29T00:00:00Z", phase("Completed"));
    s.add_owned_backup("b2", "2024-06-28T00:00:00Z", phase("Failed"));
    s.add_owned_backup("b3", "2024-06-27T00:00:00Z", phase("Completed"));
    s.add_owned_backup("b4", "2024-06-26T00:00:00Z", phase("Running"));
    s.add_owned_backup("b5", "2024-06-01T00:00:00Z", phase("Completed"));
    // Labelled like the schedule's but owned by no one: never touched.
    s.h.server.put(
        "drasistatestorebackups",
        json!({ "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStoreBackup",
            "metadata": { "name": "foreign", "namespace": NS,
                "labels": { "drasi.io/scheduled-backup": SCHEDULE } },
            "spec": { "store": STORE }, "status": { "phase": "Completed" } }),
    );
    s.reconcile("2024-06-30T00:00:00Z").await;
    assert_eq!(s.deleting_backups().await, ["b3", "b5"]);
    assert!(s.backups().await.contains(&"foreign".to_owned()));
    let (status, reason, message) = s.condition("Retention");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "RetentionApplied")
    );
    assert_eq!(message, "3 backups kept");
    assert_eq!(s.status()["lastSuccessfulBackup"], "b1");
    assert!(s.event_reasons().contains(&"BackupExpired".to_owned()));

    // Backups already being deleted are not deleted again.
    let since = s.request_count();
    s.reconcile("2024-06-30T00:01:00Z").await;
    assert!(
        s.writes_since(since)
            .iter()
            .all(|w| !w.starts_with("DELETE")),
        "{:?}",
        s.writes_since(since)
    );
    s.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn max_age_never_deletes_the_newest_completed_backup() {
    let s = Schedules::new();
    s.create("0 0 1 1 *", json!({ "maxAge": "30d" }));
    s.mark_last_schedule("2024-01-01T00:00:00Z");
    s.add_owned_backup("fresh-failed", "2024-06-29T00:00:00Z", phase("Failed"));
    s.add_owned_backup("old-1", "2024-04-01T00:00:00Z", phase("Completed"));
    s.add_owned_backup("old-2", "2024-03-01T00:00:00Z", phase("Completed"));
    s.add_owned_backup("old-running", "2024-02-01T00:00:00Z", phase("Pending"));
    s.reconcile("2024-06-30T00:00:00Z").await;
    assert_eq!(s.deleting_backups().await, ["old-2"]);
    assert_eq!(s.status()["lastSuccessfulBackup"], "old-1");
}

#[tokio::test]
async fn deleting_a_completed_backup_runs_a_job_then_releases_the_finalizer() {
    let s = Schedules::with_completed_s3_backup(STORE);
    let name = SLOT_BACKUP;

    // Not deleted: nothing to do.
    assert_eq!(s.reconcile_deletion(name).await, Action::await_change());
    assert!(s.deletion_job(name).is_none());

    s.delete_backup(name).await;
    assert!(s.deleting(name));
    s.reconcile_deletion(name).await;
    let job = s.deletion_job(name).expect("deletion Job");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], SERVER_IMAGE);
    assert_eq!(
        container["args"],
        json!([
            "delete",
            "--location",
            format!("s3://drasi-backups/stores/{NS}/{STORE}/{name}.snap")
        ])
    );
    // Credentials only as Secret references; no token of the store.
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "AWS_SECRET_ACCESS_KEY"
            && e["valueFrom"]["secretKeyRef"]["name"] == CREDS)
    );
    assert!(
        env.iter()
            .all(|e| e["value"] != "AKIATEST" && e["value"] != "secret"),
        "a credential value in the Job: {env:?}"
    );
    assert!(!job.to_string().contains("-connection"));
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], name);
    assert_eq!(s.backup(name)["status"]["reason"], "DeletingSnapshot");
    assert_eq!(s.backup(name)["status"]["phase"], "Completed");

    // Running: the finalizer stays.
    assert_eq!(
        s.reconcile_deletion(name).await,
        Action::requeue(Duration::from_secs(15))
    );
    assert_eq!(
        s.backup(name)["metadata"]["finalizers"],
        json!([DATA_FINALIZER])
    );

    s.job_finished(&format!("{name}-delete"), true, "");
    assert_eq!(s.reconcile_deletion(name).await, Action::await_change());
    assert!(s.backup_gone(name), "the backup is gone");
    s.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_failed_deletion_is_reported_and_retried_with_a_new_job() {
    let s = Schedules::with_completed_s3_backup("true");
    let name = SLOT_BACKUP;
    let job = format!("{name}-delete");
    s.delete_backup(name).await;
    s.reconcile_deletion(name).await;
    s.job_finished(&job, false, "error: deleting s3://...: AccessDenied");

    // Just failed: reported at once, the Job kept until the pause is over.
    s.set_job_failed_at(&job, Timestamp::now().to_string());
    let action = s.reconcile_deletion(name).await;
    assert_ne!(action, Action::await_change());
    assert_ne!(action, Action::requeue(Duration::from_secs(5)));
    assert!(s.deletion_job(name).is_some());
    let events = s.event_reasons().len();
    // The pause is over.
    s.set_job_failed_at(&job, "2024-01-01T00:00:00Z".into());
    assert_eq!(
        s.reconcile_deletion(name).await,
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        s.event_reasons().len(),
        events,
        "the same failure is reported once"
    );
    let status = s.backup(name)["status"].clone();
    assert_eq!(status["reason"], "SnapshotDeletionFailed");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(message.contains(&job), "{message}");
    assert!(
        s.event_reasons()
            .contains(&"SnapshotDeletionFailed".to_owned())
    );
    assert!(s.deletion_job(name).is_none(), "the failed Job is deleted");
    assert_eq!(
        s.backup(name)["metadata"]["finalizers"],
        json!([DATA_FINALIZER])
    );

    // The retry creates a new Job under the same name.
    s.reconcile_deletion(name).await;
    assert!(s.deletion_job(name).is_some());
    s.job_finished(&job, true, "");
    s.reconcile_deletion(name).await;
    assert!(s.backup_gone(name));
    s.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn backups_that_never_completed_are_released_at_once() {
    let s = Schedules::new();
    s.create("0 0 1 1 *", json!({}));
    for (name, status) in [
        (
            "failed",
            json!({ "phase": "Failed",
            "location": "s3://drasi-backups/x/failed.snap" }),
        ),
        ("running", phase("Running")),
        ("never-started", Value::Null),
    ] {
        s.add_owned_backup(name, "2024-01-01T00:00:00Z", status);
        s.delete_backup(name).await;
        assert_eq!(s.reconcile_deletion(name).await, Action::await_change());
        assert!(s.backup_gone(name), "{name}");
        assert!(s.deletion_job(name).is_none());
    }
}

#[tokio::test]
async fn volume_snapshots_are_deleted_through_the_claim() {
    let s = Schedules::new();
    s.create("0 0 1 1 *", json!({}));
    let name = SLOT_BACKUP;
    s.add_owned_backup(
        name,
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed",
            "location": format!("pvc://drasi-backups/stores/{NS}/{STORE}/{name}.snap"),
            "destination": { "name": "volume",
                "volume": { "claimName": "drasi-backups", "path": "stores" } } }),
    );
    s.delete_backup(name).await;
    s.reconcile_deletion(name).await;
    let job = s.deletion_job(name).expect("deletion Job");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "drasi-backups"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["subPath"],
        format!("stores/{NS}/{STORE}")
    );
    assert_eq!(
        pod["containers"][0]["args"],
        json!([
            "delete",
            "--location",
            format!("/var/run/drasi-store/backup/{name}.snap")
        ])
    );
}

#[tokio::test]
async fn credentials_that_no_longer_opt_in_stop_the_deletion() {
    let s = Schedules::with_completed_s3_backup("another-store");
    let name = SLOT_BACKUP;
    s.delete_backup(name).await;
    assert_eq!(s.reconcile_deletion(name).await, Action::requeue(RETRY));
    assert!(s.deletion_job(name).is_none());
    let status = s.backup(name)["status"].clone();
    assert_eq!(status["reason"], "SnapshotDeletionFailed");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("does not opt in"),
        "{status}"
    );
    assert!(s.deleting(name));
}

#[tokio::test]
async fn retention_and_deletion_together_remove_expired_backups_and_their_data() {
    let s = Schedules::new();
    s.create("0 0 1 1 *", json!({ "keepLast": 1 }));
    s.mark_last_schedule("2024-01-01T00:00:00Z");
    s.add_credentials(json!({ "drasi.io/state-store-access": STORE }));
    s.add_owned_backup("new", "2024-06-02T00:00:00Z", completed_s3("new"));
    s.add_owned_backup("old", "2024-06-01T00:00:00Z", completed_s3("old"));
    s.reconcile("2024-06-30T00:00:00Z").await;
    assert!(s.deleting("old") && !s.deleting("new"));
    s.reconcile_deletion("old").await;
    s.job_finished("old-delete", true, "");
    s.reconcile_deletion("old").await;
    assert_eq!(s.backups().await, ["new"]);
    s.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_terminating_namespace_releases_the_finalizer_and_keeps_the_snapshot() {
    let s = Schedules::with_completed_s3_backup(STORE);
    let name = SLOT_BACKUP;
    s.delete_backup(name).await;
    s.h.server
        .update(&format!("/api/v1/namespaces/{NS}"), |ns| {
            ns["metadata"]["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
            ns["status"]["phase"] = json!("Terminating");
        });
    assert_eq!(s.reconcile_deletion(name).await, Action::await_change());
    assert!(s.backup_gone(name));
    assert!(s.deletion_job(name).is_none());
    assert!(s.event_reasons().contains(&"SnapshotKept".to_owned()));
    s.h.assert_rbac_covers_every_request();
}

/// docs/backup-operator.md lists every reason of the schedule's conditions,
/// events and scheduled backups' deletion status.
#[test]
fn every_schedule_reason_is_documented() {
    use drasi_store_operator::schedule::ScheduleReason;
    use strum::IntoEnumIterator;
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/backup-operator.md"),
    )
    .unwrap();
    for reason in ScheduleReason::iter() {
        assert!(
            docs.contains(&format!("`{reason}`")),
            "docs/backup-operator.md does not mention the reason `{reason}`"
        );
    }
}

//! The `DrasiStateStoreBackup` controller against the SIMULATED API server
//! (`support/fake_api/`): the Job it creates, the status it derives from
//! the Job (whose status the tests set, as the Job controller and kubelet
//! would), one running backup per store, and the hardening rules (allowed
//! image, opted-in credentials Secret, never adopting a foreign Job).

// The shared harness serves several test binaries; this one uses only part of it.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use drasi_store_operator::backup::controller::{self as backups, BackupContext};
use drasi_store_operator::builders::BuildContext;
use drasi_store_operator::crd::{BackupPhase, DrasiStateStoreBackup, DrasiStateStoreBackupStatus};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use support::*;

const NAME: &str = "orders";
const CREDS: &str = "orders-backup-s3";
const SECRET_KEY: &str = "very-secret-key-value";
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const POLL: Duration = Duration::from_secs(15);

fn backup_path(name: &str) -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestorebackups/{name}")
}
fn job_path(name: &str) -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs/{name}")
}
fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{name}")
}

fn store_spec() -> Value {
    json!({ "backup": { "destinations": [
        { "name": "s3", "objectStore": {
            "bucket": "drasi-backups", "prefix": "stores/",
            "endpoint": "http://minio.minio.svc:9000", "region": "us-east-1",
            "credentialsSecret": CREDS } },
        { "name": "volume", "volume": { "claimName": "drasi-backups", "path": "stores" } },
    ] } })
}

struct Backups {
    h: Harness,
    ctx: Arc<BackupContext>,
}

impl Backups {
    fn new() -> Self {
        let h = Harness::new();
        let ctx = Arc::new(BackupContext {
            client: h.ctx.client.clone(),
            build: BuildContext::new(SERVER_IMAGE),
        });
        Self { h, ctx }
    }

    /// A store with both destinations and its opted-in credentials Secret.
    fn with_store() -> Self {
        let b = Self::new();
        b.h.create_store(NAME, store_spec());
        b.add_credentials(json!({ "drasi.io/state-store-access": NAME }));
        b
    }

    fn add_credentials(&self, labels: Value) {
        self.h.add_labelled_secret(
            CREDS,
            &[
                ("AWS_ACCESS_KEY_ID", "AKIATEST"),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ],
            labels,
        );
    }

    fn create(&self, name: &str, store: &str, destination: Option<&str>) {
        let mut spec = json!({ "store": store });
        if let Some(d) = destination {
            spec["destination"] = json!(d);
        }
        self.h.server.put(
            "drasistatestorebackups",
            json!({
                "apiVersion": "drasi.io/v1alpha1",
                "kind": "DrasiStateStoreBackup",
                "metadata": { "name": name, "namespace": NS },
                "spec": spec,
            }),
        );
    }

    fn backup(&self, name: &str) -> DrasiStateStoreBackup {
        let value = self
            .h
            .server
            .get(&backup_path(name))
            .unwrap_or_else(|| panic!("backup {name} does not exist"));
        serde_json::from_value(value).expect("stored DrasiStateStoreBackup parses")
    }

    fn status(&self, name: &str) -> DrasiStateStoreBackupStatus {
        self.backup(name).status.unwrap_or_default()
    }

    fn phase_reason(&self, name: &str) -> (Option<BackupPhase>, Option<String>) {
        let s = self.status(name);
        (s.phase, s.reason)
    }

    /// One pass, as the controller runs it after a watch event.
    async fn reconcile(&self, name: &str) -> Action {
        backups::reconcile(Arc::new(self.backup(name)), self.ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("reconciling backup {name}: {e}"))
    }

    /// Every Job in the namespace, as the API server lists them.
    async fn jobs(&self) -> Vec<Job> {
        Api::<Job>::namespaced(self.h.ctx.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .expect("listing Jobs")
            .items
    }

    fn job(&self, name: &str) -> Value {
        self.h
            .server
            .get(&job_path(name))
            .unwrap_or_else(|| panic!("Job {name} does not exist"))
    }

    /// Writes since request `since` (everything but GET).
    fn writes_since(&self, since: usize) -> Vec<String> {
        self.h.server.requests()[since..]
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    // --- the Job controller and the kubelet -------------------------------

    fn job_active(&self, name: &str) {
        self.h.server.update(&job_path(name), |job| {
            job["status"] = json!({ "active": 1, "startTime": "2024-01-01T00:00:01Z" });
        });
    }

    /// A pod of the Job (controlled by its UID), in `phase`.
    fn job_pod(&self, job: &str, pod: &str, phase: &str, container_state: Value) {
        let job_value = self.job(job);
        let mut labels = job_value["spec"]["template"]["metadata"]["labels"].clone();
        labels["job-name"] = json!(job);
        self.h.server.put(
            "pods",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": pod, "namespace": NS, "labels": labels,
                    "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": job,
                        "uid": job_value["metadata"]["uid"], "controller": true }] },
                "status": { "phase": phase, "containerStatuses": [{
                    "name": "backup", "image": SERVER_IMAGE, "imageID": "", "ready": false,
                    "restartCount": 0, "state": container_state }] },
            }),
        );
    }

    fn job_succeeded(&self, name: &str, log: &str) {
        let pod = format!("{name}-abcde");
        self.job_pod(
            name,
            &pod,
            "Succeeded",
            json!({ "terminated": { "exitCode": 0 } }),
        );
        self.h.server.set_log(&pod_path(&pod), log);
        self.h.server.update(&job_path(name), |job| {
            job["status"] = json!({ "succeeded": 1, "conditions": [
                { "type": "Complete", "status": "True" }] });
        });
    }

    fn job_failed(&self, name: &str, termination_message: &str) {
        self.job_pod(
            name,
            &format!("{name}-fghij"),
            "Failed",
            json!({ "terminated": { "exitCode": 1, "message": termination_message } }),
        );
        self.h.server.update(&job_path(name), |job| {
            job["status"] = json!({ "failed": 1, "conditions": [
                { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded" }] });
        });
    }
}

fn summary_log(records: u64, bytes: u64) -> String {
    format!(
        "{{\"timestamp\":\"2024-01-01T00:00:01Z\",\"level\":\"INFO\",\"fields\":{{\"message\":\"snapshot streamed\"}}}}\n\
         {{\"location\":\"s3://drasi-backups/stores/apps/orders/x.snap\",\"records\":{records},\"stores\":3,\
         \"bytes\":{bytes},\"sha256\":\"{SHA}\",\"createdAtUnixMs\":1700000000123,\
         \"serverVersion\":\"0.1.0\",\"selectedStores\":null}}\n"
    )
}

fn env_of(job: &Value) -> Vec<Value> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_backup_creates_exactly_one_job_with_the_expected_spec() {
    let b = Backups::new();
    // The store is reconciled for real: its own pod must get nothing of
    // the bucket credentials.
    b.h.create_and_apply(NAME, store_spec()).await;
    b.add_credentials(json!({ "drasi.io/state-store-access": NAME }));
    b.create("orders-manual-1", NAME, None);

    assert_eq!(b.reconcile("orders-manual-1").await, Action::requeue(POLL));

    let jobs = b.jobs().await;
    assert_eq!(jobs.len(), 1, "exactly one Job: {jobs:#?}");
    // Created with one POST, never applied (a PATCH could take over a Job
    // someone else created under that name).
    let job_writes: Vec<String> =
        b.h.writes()
            .iter()
            .filter(|r| r.path.contains("/jobs"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
    assert_eq!(
        job_writes,
        [format!("POST /apis/batch/v1/namespaces/{NS}/jobs")]
    );
    let job = b.job("orders-manual-1");
    let backup = b.backup("orders-manual-1");
    assert_eq!(
        job["metadata"]["ownerReferences"],
        json!([{ "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStoreBackup",
                 "name": "orders-manual-1", "uid": backup.metadata.uid.clone().unwrap(),
                 "controller": true }]),
        "a controller reference to this backup (no blockOwnerDeletion, which would need \
         update on drasistatestorebackups/finalizers)"
    );
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], json!(0));
    assert_eq!(spec["activeDeadlineSeconds"], json!(6 * 3600));
    let pod = &spec["template"];
    for (key, value) in [
        ("app.kubernetes.io/component", "backup"),
        ("app.kubernetes.io/instance", NAME),
        ("drasi.io/backup", "orders-manual-1"),
    ] {
        assert_eq!(
            pod["metadata"]["labels"][key],
            json!(value),
            "pod label {key}"
        );
    }
    assert_eq!(pod["spec"]["restartPolicy"], json!("Never"));
    assert_eq!(pod["spec"]["automountServiceAccountToken"], json!(false));
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], json!(SERVER_IMAGE));
    assert_eq!(
        container["args"],
        json!([
            "backup",
            "--url",
            "http://orders.apps.svc:7070",
            "--token-file",
            "/var/run/drasi-store/connection/token",
            "--output",
            "s3://drasi-backups/stores/apps/orders/orders-manual-1.snap",
            "--json"
        ])
    );
    assert_eq!(
        container["terminationMessagePolicy"],
        json!("FallbackToLogsOnError")
    );
    assert_eq!(
        pod["spec"]["volumes"][0]["secret"]["secretName"],
        json!("orders-connection")
    );
    let env = env_of(&job);
    let plain = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(plain("AWS_REGION"), Some(json!("us-east-1")));
    assert_eq!(
        plain("AWS_ENDPOINT_URL"),
        Some(json!("http://minio.minio.svc:9000"))
    );
    assert_eq!(plain("AWS_ALLOW_HTTP"), Some(json!("true")));
    let key_id = env
        .iter()
        .find(|e| e["name"] == "AWS_ACCESS_KEY_ID")
        .expect("AWS_ACCESS_KEY_ID");
    assert_eq!(
        key_id["valueFrom"]["secretKeyRef"],
        json!({ "name": CREDS, "key": "AWS_ACCESS_KEY_ID" })
    );
    // Secret values never appear in a pod spec.
    assert!(!job.to_string().contains(SECRET_KEY));

    let status = b.status("orders-manual-1");
    assert_eq!(status.phase, Some(BackupPhase::Running));
    assert_eq!(status.reason.as_deref(), Some("JobRunning"));
    assert_eq!(status.job_name.as_deref(), Some("orders-manual-1"));
    assert_eq!(
        status.location.as_deref(),
        Some("s3://drasi-backups/stores/apps/orders/orders-manual-1.snap")
    );
    assert_eq!(status.destination.map(|d| d.name).as_deref(), Some("s3"));
    assert!(status.start_time.is_some());

    // Another pass while the Job runs: no second Job, no write at all.
    b.job_active("orders-manual-1");
    let since = b.h.server.requests().len();
    assert_eq!(b.reconcile("orders-manual-1").await, Action::requeue(POLL));
    assert_eq!(b.writes_since(since), Vec::<String>::new());
    assert_eq!(b.jobs().await.len(), 1);

    // Cloud credentials go only to the Job, never into the store's pod.
    let sts = b.h.server.get(&sts_path(NAME)).expect("store StatefulSet");
    let sts = sts.to_string();
    assert!(
        !sts.contains(CREDS),
        "the store's StatefulSet references {CREDS}"
    );
    assert!(
        !sts.contains("AWS_"),
        "the store's StatefulSet has AWS_ variables"
    );

    b.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn status_follows_the_job_from_running_to_completed() {
    let b = Backups::with_store();
    b.create("orders-manual-1", NAME, Some("volume"));
    b.reconcile("orders-manual-1").await;
    assert_eq!(
        b.phase_reason("orders-manual-1"),
        (Some(BackupPhase::Running), Some("JobRunning".into()))
    );
    let started = b.status("orders-manual-1").start_time;
    let job = b.job("orders-manual-1");
    // A volume destination gets no AWS_ variables and mounts the claim.
    assert!(env_of(&job).is_empty());
    assert_eq!(
        job["spec"]["template"]["spec"]["volumes"][2]["persistentVolumeClaim"]["claimName"],
        json!("drasi-backups")
    );

    // A pod that carries the backup's label but is not the Job's must not
    // be believed (it lists first).
    b.h.server.put(
        "pods",
        json!({ "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "aaa-decoy", "namespace": NS,
                    "labels": { "drasi.io/backup": "orders-manual-1" } },
                "status": { "phase": "Succeeded" } }),
    );
    b.h.server
        .set_log(&pod_path("aaa-decoy"), &summary_log(666, 666));

    b.job_succeeded("orders-manual-1", &summary_log(120_431, 8_812_034));
    assert_eq!(b.reconcile("orders-manual-1").await, Action::await_change());
    let status = b.status("orders-manual-1");
    assert_eq!(status.phase, Some(BackupPhase::Completed));
    assert_eq!(status.reason.as_deref(), Some("Completed"));
    assert_eq!(status.records, Some(120_431));
    assert_eq!(status.size_bytes, Some(8_812_034));
    assert_eq!(status.stores, Some(3));
    assert_eq!(status.sha256.as_deref(), Some(SHA));
    assert_eq!(status.snapshot_time_unix_ms, Some(1_700_000_000_123));
    assert_eq!(
        status.location.as_deref(),
        Some("pvc://drasi-backups/stores/apps/orders/orders-manual-1.snap")
    );
    assert_eq!(status.start_time, started, "startTime is kept");
    assert!(status.completion_time.is_some());

    // The log was read through the pods/log subresource, with a limit.
    let log_reads: Vec<_> =
        b.h.server
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/log"))
            .collect();
    assert_eq!(log_reads.len(), 1);
    assert_eq!(
        log_reads[0].path,
        pod_path("orders-manual-1-abcde") + "/log"
    );
    assert_eq!(
        log_reads[0].query_param("limitBytes").as_deref(),
        Some("65536")
    );

    // Finished: never touched again.
    let since = b.h.server.requests().len();
    assert_eq!(b.reconcile("orders-manual-1").await, Action::await_change());
    assert_eq!(
        b.h.server.requests().len(),
        since,
        "a finished backup made requests"
    );
    b.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_job_that_succeeds_without_a_summary_is_reported_not_trusted() {
    let b = Backups::with_store();
    b.create("orders-manual-1", NAME, None);
    b.reconcile("orders-manual-1").await;
    b.job_succeeded("orders-manual-1", "{\"level\":\"INFO\"}\nno summary here\n");
    b.reconcile("orders-manual-1").await;
    let status = b.status("orders-manual-1");
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(BackupPhase::Failed), Some("NoSummary"))
    );
    assert!(
        status
            .message
            .unwrap()
            .contains("drasi-store-server verify")
    );
}

#[tokio::test]
async fn a_second_backup_of_the_same_store_waits_while_one_is_running() {
    let b = Backups::with_store();
    b.h.create_store(
        "payments",
        json!({ "backup": { "destinations": [
            { "name": "volume", "volume": { "claimName": "drasi-backups" } }] } }),
    );
    b.create("first", NAME, None);
    b.reconcile("first").await;
    assert_eq!(b.status("first").phase, Some(BackupPhase::Running));

    // Pending: the second one waits, and creates no Job.
    b.create("second", NAME, Some("volume"));
    assert_eq!(b.reconcile("second").await, Action::requeue(POLL));
    let waiting = b.status("second");
    assert_eq!(
        (waiting.phase, waiting.reason.as_deref()),
        (Some(BackupPhase::Pending), Some("WaitingForOtherBackup"))
    );
    assert!(
        waiting.message.as_deref().unwrap().contains("first"),
        "{waiting:?}"
    );
    assert!(b.h.server.get(&job_path("second")).is_none());
    assert_eq!(b.jobs().await.len(), 1);
    // Looked at again while the first runs: nothing is written.
    let since = b.h.server.requests().len();
    assert_eq!(b.reconcile("second").await, Action::requeue(POLL));
    assert_eq!(b.writes_since(since), Vec::<String>::new());

    // Another store's backup does not wait.
    b.create("payments-1", "payments", None);
    b.reconcile("payments-1").await;
    assert_eq!(b.status("payments-1").phase, Some(BackupPhase::Running));
    assert!(b.h.server.get(&job_path("payments-1")).is_some());

    // The first fails: its error becomes the message.
    b.job_failed(
        "first",
        "Error: uploading to s3://drasi-backups/stores/apps/orders/first.snap: connection refused\n",
    );
    assert_eq!(b.reconcile("first").await, Action::await_change());
    let failed = b.status("first");
    assert_eq!(
        (failed.phase, failed.reason.as_deref()),
        (Some(BackupPhase::Failed), Some("BackupFailed"))
    );
    assert_eq!(
        failed.message.as_deref(),
        Some(
            "Error: uploading to s3://drasi-backups/stores/apps/orders/first.snap: connection refused"
        )
    );
    assert!(failed.completion_time.is_some());

    // Now the second one starts: Pending -> Running -> Completed.
    assert_eq!(b.reconcile("second").await, Action::requeue(POLL));
    assert_eq!(
        b.phase_reason("second"),
        (Some(BackupPhase::Running), Some("JobRunning".into()))
    );
    assert!(b.h.server.get(&job_path("second")).is_some());
    b.job_succeeded("second", &summary_log(5, 4096));
    b.reconcile("second").await;
    assert_eq!(
        b.phase_reason("second"),
        (Some(BackupPhase::Completed), Some("Completed".into()))
    );
    b.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_backup_of_a_missing_store_fails_with_a_clear_reason() {
    let b = Backups::new();
    b.create("ghost-1", "ghost", None);
    assert_eq!(b.reconcile("ghost-1").await, Action::await_change());
    let status = b.status("ghost-1");
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(BackupPhase::Failed), Some("StoreNotFound"))
    );
    assert_eq!(
        status.message.as_deref(),
        Some("DrasiStateStore ghost does not exist in namespace apps")
    );
    assert!(b.jobs().await.is_empty());

    // A store without destinations, and an unknown destination name.
    b.h.create_store("bare", json!({}));
    b.create("bare-1", "bare", None);
    b.reconcile("bare-1").await;
    assert_eq!(
        b.phase_reason("bare-1"),
        (
            Some(BackupPhase::Failed),
            Some("NoBackupDestination".into())
        )
    );
    b.h.create_store(NAME, store_spec());
    b.create("orders-1", NAME, Some("tape"));
    b.reconcile("orders-1").await;
    assert_eq!(
        b.phase_reason("orders-1"),
        (Some(BackupPhase::Failed), Some("UnknownDestination".into()))
    );
    assert!(b.jobs().await.is_empty());
    b.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn bucket_credentials_must_exist_and_opt_in_before_a_job_gets_them() {
    let b = Backups::new();
    b.h.create_store(NAME, store_spec());

    b.create("no-secret", NAME, Some("s3"));
    assert_eq!(b.reconcile("no-secret").await, Action::await_change());
    let status = b.status("no-secret");
    assert_eq!(status.reason.as_deref(), Some("CredentialsSecretNotFound"));
    assert!(status.message.unwrap().contains(CREDS));

    // Another store's opt-in is not this store's.
    b.add_credentials(json!({ "drasi.io/state-store-access": "payments" }));
    b.create("not-opted-in", NAME, Some("s3"));
    b.reconcile("not-opted-in").await;
    let status = b.status("not-opted-in");
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(BackupPhase::Failed), Some("SecretNotOptedIn"))
    );
    assert!(
        status
            .message
            .unwrap()
            .contains("drasi.io/state-store-access=orders")
    );
    assert!(
        b.jobs().await.is_empty(),
        "a Job got unapproved credentials"
    );

    // Labelled for every store in the namespace: allowed.
    b.add_credentials(json!({ "drasi.io/state-store-access": "true" }));
    b.create("opted-in", NAME, Some("s3"));
    b.reconcile("opted-in").await;
    assert_eq!(b.status("opted-in").phase, Some(BackupPhase::Running));
    assert_eq!(b.jobs().await.len(), 1);
    b.h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn the_job_runs_only_an_allowed_image() {
    let b = Backups::new();
    let mut spec = store_spec();
    spec["image"] = json!("docker.io/evil/server:1");
    b.h.create_store(NAME, spec);
    b.add_credentials(json!({ "drasi.io/state-store-access": "true" }));
    b.create("orders-1", NAME, None);
    assert_eq!(b.reconcile("orders-1").await, Action::await_change());
    let status = b.status("orders-1");
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(BackupPhase::Failed), Some("ImageNotAllowed"))
    );
    assert!(status.message.unwrap().contains("docker.io/evil/server:1"));
    assert!(b.jobs().await.is_empty());
}

#[tokio::test]
async fn a_job_the_backup_does_not_own_is_never_taken_over() {
    let b = Backups::with_store();
    // Someone else's Job under the backup's name, already "succeeded".
    let foreign = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": "orders-1", "namespace": NS, "labels": { "team": "x" } },
        "spec": { "template": { "spec": { "restartPolicy": "Never",
            "containers": [{ "name": "x", "image": "busybox" }] } } },
        "status": { "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] },
    });
    b.h.server.put("jobs", foreign);
    let before = b.job("orders-1");
    b.create("orders-1", NAME, None);
    assert_eq!(b.reconcile("orders-1").await, Action::await_change());
    let status = b.status("orders-1");
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(BackupPhase::Failed), Some("ObjectNotOwned"))
    );
    assert!(status.message.unwrap().contains("Job apps/orders-1"));
    assert_eq!(b.job("orders-1"), before, "the foreign Job was changed");
    assert!(
        b.h.server
            .requests()
            .iter()
            .all(|r| !(r.path.contains("/jobs") && r.method != "GET")),
        "a write to a Job"
    );

    // The Job of a deleted backup of the same name: wait for the garbage
    // collector rather than fail or adopt it.
    b.h.server.put(
        "jobs",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "name": "orders-2", "namespace": NS, "ownerReferences": [{
                "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStoreBackup",
                "name": "orders-2", "uid": "uid-of-a-deleted-backup", "controller": true }] },
            "spec": { "template": { "spec": { "restartPolicy": "Never",
                "containers": [{ "name": "backup", "image": SERVER_IMAGE }] } } },
        }),
    );
    b.create("orders-2", NAME, None);
    assert_eq!(b.reconcile("orders-2").await, Action::requeue(POLL));
    assert_eq!(
        b.phase_reason("orders-2"),
        (Some(BackupPhase::Pending), Some("WaitingForOldJob".into()))
    );
    // Once it is gone, the backup runs.
    let api = Api::<Job>::namespaced(b.h.ctx.client.clone(), NS);
    api.delete("orders-2", &Default::default()).await.ok();
    assert!(b.h.server.get(&job_path("orders-2")).is_none());
    b.reconcile("orders-2").await;
    assert_eq!(b.status("orders-2").phase, Some(BackupPhase::Running));
    let uid = b.backup("orders-2").metadata.uid.unwrap();
    assert_eq!(
        b.job("orders-2")["metadata"]["ownerReferences"][0]["uid"],
        json!(uid)
    );
}

#[tokio::test]
async fn a_job_created_under_the_name_meanwhile_is_not_taken_over() {
    let b = Backups::with_store();
    b.create("orders-1", NAME, None);
    // Someone creates the Job between the operator's read and its create:
    // the API server answers 409 and nothing is overwritten.
    let collection = format!("/apis/batch/v1/namespaces/{NS}/jobs");
    b.h.server.fail("POST", &collection, 409, 1);
    assert_eq!(
        b.reconcile("orders-1").await,
        Action::requeue(Duration::from_secs(1))
    );
    assert!(
        b.h.writes()
            .iter()
            .all(|r| r.method != "PATCH" || !r.path.contains("/jobs"))
    );
    // The next pass looks again (here the Job was never really created).
    b.reconcile("orders-1").await;
    assert!(b.h.server.get(&job_path("orders-1")).is_some());
    assert_eq!(b.status("orders-1").phase, Some(BackupPhase::Running));
}

#[tokio::test]
async fn the_controller_loop_runs_a_backup_from_watch_events() {
    let b = Backups::with_store();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(backups::run(b.ctx.clone(), Some(NS), async {
        let _ = stop_rx.await;
    }));
    // The backup watch and the (label-selected) Job watch.
    wait_for("watches open", || b.h.server.open_watches() >= 2).await;

    b.create("orders-1", NAME, None);
    wait_for("the Job created and the backup Running", || {
        b.h.server.get(&job_path("orders-1")).is_some()
            && b.status("orders-1").phase == Some(BackupPhase::Running)
    })
    .await;
    // The Job watch only selects backup Jobs.
    let job_watch =
        b.h.server
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/jobs") && r.query_param("watch").is_some())
            .expect("a Job watch");
    assert_eq!(
        job_watch.query_param("labelSelector").as_deref(),
        Some("drasi.io/backup")
    );

    // The Job finishing triggers the backup through the Job watch (well
    // before the 15 s poll).
    b.job_succeeded("orders-1", &summary_log(7, 1024));
    wait_for("Completed", || {
        b.status("orders-1").phase == Some(BackupPhase::Completed)
    })
    .await;
    assert_eq!(b.status("orders-1").records, Some(7));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the backup controller stops on shutdown")
        .unwrap();
    b.h.assert_rbac_covers_every_request();
}

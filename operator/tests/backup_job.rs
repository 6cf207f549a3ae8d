//! The backup plan (destination, location) and the pure Job builder.

use drasi_store_operator::backup::controller::{
    JobOutcome, completed_status, failed_status, job_outcome, other_running, running_status,
};
use drasi_store_operator::backup::job::{backup_args, backup_job};
use drasi_store_operator::backup::plan::{BackupInvalid, BackupReason, JobOwner, job_owner, plan};
use drasi_store_operator::backup::summary::parse_summary;
use drasi_store_operator::builders::BuildContext;
use drasi_store_operator::crd::{BackupPhase, DrasiStateStore, DrasiStateStoreBackup};
use drasi_store_operator::schedule::deletion_job::{deletion_job, deletion_plan};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

fn ctx() -> BuildContext {
    BuildContext::new("ghcr.io/drasi-project/drasi-store-server:test")
}

fn store(extra: Value) -> DrasiStateStore {
    let mut spec = json!({
        "backup": { "destinations": [
            { "name": "s3", "objectStore": {
                "bucket": "backups", "prefix": "drasi", "endpoint": "http://minio.minio:9000",
                "region": "us-east-1", "credentialsSecret": "s3-creds" } },
            { "name": "nfs", "volume": { "claimName": "backup-pvc", "path": "stores" } }
        ] }
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStore",
        "metadata": { "name": "orders", "namespace": "apps", "uid": "store-uid" },
        "spec": spec,
    }))
    .unwrap()
}

fn backup(name: &str, destination: Option<&str>) -> DrasiStateStoreBackup {
    let mut spec = json!({ "store": "orders" });
    if let Some(d) = destination {
        spec["destination"] = json!(d);
    }
    serde_json::from_value(json!({
        "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStoreBackup",
        "metadata": { "name": name, "namespace": "apps", "uid": "backup-uid" },
        "spec": spec,
    }))
    .unwrap()
}

#[test]
fn object_store_job() {
    let plan = plan(&backup("orders-1", None), Some(&store(json!({}))), &ctx()).unwrap();
    assert_eq!(
        plan.location.display(),
        "s3://backups/drasi/apps/orders/orders-1.snap"
    );
    let job = backup_job(&plan);
    let text = serde_json::to_string(&job).unwrap();
    // Credentials reach the Job as Secret references only.
    assert!(text.contains("\"secretKeyRef\""));
    insta::assert_yaml_snapshot!("object-store", job);
}

#[test]
fn volume_job_with_tls() {
    let store = store(json!({ "tls": { "secretName": "orders-tls" } }));
    let plan = plan(&backup("orders-2", Some("nfs")), Some(&store), &ctx()).unwrap();
    assert_eq!(
        plan.location.display(),
        "pvc://backup-pvc/stores/apps/orders/orders-2.snap"
    );
    let args = backup_args(&plan);
    assert_eq!(
        args,
        [
            "backup",
            "--url",
            "https://orders.apps.svc:7070",
            "--token-file",
            "/var/run/drasi-store/connection/token",
            "--ca-file",
            "/var/run/drasi-store/connection/ca.crt",
            "--output",
            "/var/run/drasi-store/backup/orders-2.snap",
            "--json",
        ]
    );
    insta::assert_yaml_snapshot!("volume-tls", backup_job(&plan));
}

/// A Completed backup of `orders` whose snapshot is at `location`.
fn completed(location: &str, destination: Value) -> DrasiStateStoreBackup {
    let mut b = backup("orders-3", None);
    b.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStoreBackup",
            "name": "orders-3", "uid": "backup-uid", "controller": true }))
        .unwrap(),
    ]);
    b.status = Some(
        serde_json::from_value(json!({
            "phase": "Completed", "location": location, "destination": destination }))
        .unwrap(),
    );
    b
}

#[test]
fn deletion_jobs() {
    let image = "ghcr.io/drasi-project/drasi-store-server:test";
    let s3 = completed(
        "s3://backups/drasi/apps/orders/orders-3.snap",
        json!({ "name": "s3", "objectStore": {
            "bucket": "backups", "prefix": "drasi", "endpoint": "http://minio.minio:9000",
            "region": "us-east-1", "credentialsSecret": "s3-creds" } }),
    );
    let plan = deletion_plan(&s3, image).unwrap().unwrap();
    insta::assert_yaml_snapshot!("deletion-object-store", deletion_job(&plan));
    let nfs = completed(
        "pvc://backup-pvc/stores/apps/orders/orders-3.snap",
        json!({ "name": "nfs", "volume": { "claimName": "backup-pvc", "path": "stores" } }),
    );
    let plan = deletion_plan(&nfs, image).unwrap().unwrap();
    insta::assert_yaml_snapshot!("deletion-volume", deletion_job(&plan));
}

#[test]
fn backup_pods_are_not_selected_by_the_store_services() {
    let plan = plan(&backup("orders-1", None), Some(&store(json!({}))), &ctx()).unwrap();
    let job = backup_job(&plan);
    let labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let selector = drasi_store_operator::labels::selector_labels("orders");
    assert!(
        !selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "a backup pod must not match the store's Service selector"
    );
}

#[test]
fn invalid_backups_say_why() {
    let b = backup("b", Some("nope"));
    assert!(matches!(
        plan(&b, None, &ctx()),
        Err(BackupInvalid::StoreNotFound { .. })
    ));
    assert!(matches!(
        plan(&b, Some(&store(json!({}))), &ctx()),
        Err(BackupInvalid::UnknownDestination { .. })
    ));
    let mut bare = store(json!({}));
    bare.spec.backup = None;
    let err = plan(&backup("b", None), Some(&bare), &ctx()).unwrap_err();
    assert_eq!(err.reason().to_string(), "NoBackupDestination");
    assert!(err.to_string().contains("spec.backup.destinations"));
}

fn job(status: Value) -> Job {
    serde_json::from_value(json!({ "metadata": { "name": "j" }, "status": status })).unwrap()
}

#[test]
fn job_outcomes() {
    assert_eq!(job_outcome(None), JobOutcome::Absent);
    assert_eq!(
        job_outcome(Some(&job(json!({ "active": 1 })))),
        JobOutcome::Running
    );
    assert_eq!(
        job_outcome(Some(&job(json!({ "succeeded": 1,
            "conditions": [{ "type": "Complete", "status": "True" }] })))),
        JobOutcome::Succeeded
    );
    assert_eq!(
        job_outcome(Some(&job(json!({ "failed": 1,
            "conditions": [{ "type": "Failed", "status": "True" }] })))),
        JobOutcome::Failed
    );
}

#[test]
fn one_running_backup_per_store() {
    let mut running = backup("first", None);
    let plan = plan(&running, Some(&store(json!({}))), &ctx()).unwrap();
    let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    running.status = Some(running_status(&plan, t.clone(), None));
    let second = backup("second", None);
    let all = vec![running.clone(), second];
    assert_eq!(
        other_running(&all, "orders", "second").map(|b| b.metadata.name.clone()),
        Some(Some("first".to_owned()))
    );
    // A backup never waits for itself, nor for backups of other stores.
    assert!(other_running(&all, "orders", "first").is_none());
    assert!(other_running(&all, "payments", "second").is_none());
    // Finished backups do not block.
    let summary = parse_summary(&format!(
        r#"{{"location":"s3://backups/k","records":3,"stores":1,"bytes":99,"sha256":"{}"}}"#,
        "a".repeat(64)
    ))
    .unwrap();
    let done = completed_status(running.status.as_ref().unwrap(), &summary, t.clone());
    assert_eq!(done.phase, Some(BackupPhase::Completed));
    assert_eq!((done.records, done.size_bytes), (Some(3), Some(99)));
    assert_eq!(done.start_time, Some(t.clone()));
    running.status = Some(done);
    assert!(other_running(&[running.clone()], "orders", "second").is_none());
    let failed = failed_status(
        running.status.as_ref(),
        BackupReason::BackupFailed,
        "boom".into(),
        t,
    );
    assert_eq!(failed.phase, Some(BackupPhase::Failed));
    assert_eq!(failed.message.as_deref(), Some("boom"));
}

/// Every `status.reason` a backup can have is documented in the status table.
#[test]
fn every_backup_reason_is_documented() {
    use strum::IntoEnumIterator;
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/backup-operator.md"),
    )
    .unwrap();
    for reason in BackupReason::iter() {
        assert!(
            docs.contains(&format!("`{reason}`")),
            "docs/backup-operator.md does not mention the reason `{reason}`"
        );
    }
}

#[test]
fn the_job_runs_only_an_allowed_image() {
    // The store's image is outside the allow-list: no plan, so no Job.
    let evil = store(json!({ "image": "docker.io/evil/server:1" }));
    let err = plan(&backup("b", None), Some(&evil), &ctx()).unwrap_err();
    assert_eq!(err.reason(), BackupReason::ImageNotAllowed);
    assert!(err.to_string().contains("docker.io/evil/server:1"), "{err}");
    // An allowed spec.image is the Job's image, with the store's pull settings.
    let pinned = store(json!({
        "image": "ghcr.io/drasi-project/drasi-store-server:9.9",
        "imagePullPolicy": "Always",
        "imagePullSecrets": [{ "name": "regcred" }],
    }));
    let plan = plan(&backup("b", None), Some(&pinned), &ctx()).unwrap();
    let spec = backup_job(&plan).spec.unwrap().template.spec.unwrap();
    let container = &spec.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/drasi-project/drasi-store-server:9.9")
    );
    assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "regcred");
}

fn secret(labels: Value) -> Secret {
    serde_json::from_value(json!({ "metadata": { "name": "s3-creds", "labels": labels } })).unwrap()
}

#[test]
fn credentials_secrets_must_opt_in_for_the_store() {
    let s3 = plan(&backup("b", Some("s3")), Some(&store(json!({}))), &ctx()).unwrap();
    assert_eq!(s3.credentials_secret(), Some("s3-creds"));
    let missing = s3.check_credentials(None).unwrap_err();
    assert_eq!(missing.reason(), BackupReason::CredentialsSecretNotFound);
    for labels in [
        json!({}),
        json!({ "drasi.io/state-store-access": "payments" }),
        json!({ "drasi.io/state-store-access": "false" }),
        json!({ "drasi.io/other": "orders" }),
    ] {
        let err = s3
            .check_credentials(Some(&secret(labels.clone())))
            .unwrap_err();
        assert_eq!(err.reason(), BackupReason::SecretNotOptedIn, "{labels}");
        assert!(
            err.to_string()
                .contains("drasi.io/state-store-access=orders"),
            "{err}"
        );
    }
    for labels in [
        json!({ "drasi.io/state-store-access": "orders" }),
        json!({ "drasi.io/state-store-access": "true" }),
    ] {
        assert_eq!(s3.check_credentials(Some(&secret(labels))), Ok(()));
    }
    // A volume destination references no Secret.
    let nfs = plan(&backup("b", Some("nfs")), Some(&store(json!({}))), &ctx()).unwrap();
    assert_eq!(nfs.credentials_secret(), None);
    assert_eq!(nfs.check_credentials(None), Ok(()));
}

#[test]
fn only_a_job_controlled_by_this_backup_is_its_own() {
    let b = backup("orders-1", None);
    let owned = |kind: &str, name: &str, uid: &str, controller: bool| -> Job {
        serde_json::from_value(
            json!({ "metadata": { "name": "orders-1", "ownerReferences": [{
            "apiVersion": "drasi.io/v1alpha1", "kind": kind, "name": name, "uid": uid,
            "controller": controller }] } }),
        )
        .unwrap()
    };
    assert_eq!(
        job_owner(
            &owned("DrasiStateStoreBackup", "orders-1", "backup-uid", true),
            &b
        ),
        JobOwner::This
    );
    assert_eq!(
        job_owner(
            &owned("DrasiStateStoreBackup", "orders-1", "old-uid", true),
            &b
        ),
        JobOwner::OldBackup
    );
    for foreign in [
        owned("DrasiStateStoreBackup", "orders-1", "backup-uid", false),
        owned("DrasiStateStoreBackup", "other", "backup-uid", true),
        owned("CronJob", "orders-1", "backup-uid", true),
        job(json!({})),
    ] {
        assert_eq!(job_owner(&foreign, &b), JobOwner::Foreign);
    }
}

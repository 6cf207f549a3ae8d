//! `spec.restore` against the SIMULATED API server (`support/fake_api/`):
//! a store restored from a backup is not created until the backup exists
//! and is Completed (and says why meanwhile); once it is, the StatefulSet
//! gets the restore init container, `status.restoredFrom` records the
//! source and later passes change nothing, even after the backup is gone.

// The shared harness serves several test binaries; this one uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use drasi_store_operator::crd::{DrasiStateStoreBackup, Phase};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use support::*;

const NAME: &str = "orders-restored";
const BACKUP: &str = "orders-1";
const CREDS: &str = "orders-backup-s3";
const SECRET_KEY: &str = "very-secret-key-value";
const LOCATION: &str = "s3://drasi-backups/stores/apps/orders/orders-1.snap";

fn backup_path(name: &str) -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestorebackups/{name}")
}

fn from_backup() -> Value {
    json!({ "restore": { "fromBackup": BACKUP } })
}

/// A backup of the store `orders` with `status` (as the backup controller
/// writes it).
fn add_backup(h: &Harness, status: Value) {
    h.server.put(
        "drasistatestorebackups",
        json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStoreBackup",
            "metadata": { "name": BACKUP, "namespace": NS },
            "spec": { "store": "orders" },
            "status": status,
        }),
    );
}

fn completed() -> Value {
    json!({
        "phase": "Completed",
        "reason": "Completed",
        "location": LOCATION,
        "destination": { "name": "s3", "objectStore": {
            "bucket": "drasi-backups", "prefix": "stores/",
            "endpoint": "http://minio.minio.svc:9000", "region": "us-east-1",
            "credentialsSecret": CREDS } },
        "records": 3,
    })
}

fn add_credentials(h: &Harness, access: &str) {
    h.add_labelled_secret(
        CREDS,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIATEST"),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
        json!({ "drasi.io/state-store-access": access }),
    );
}

fn statefulset(h: &Harness) -> Option<Value> {
    h.server.get(&sts_path(NAME))
}

fn init_containers(sts: &Value) -> Vec<Value> {
    sts["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Nothing of the store exists: no Secret, Service or StatefulSet.
fn assert_nothing_applied(h: &Harness) {
    let writes: Vec<String> = h
        .object_writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "applied although blocked: {writes:?}");
    assert!(statefulset(h).is_none());
}

fn count(events: &[String], reason: &str) -> usize {
    events.iter().filter(|e| *e == reason).count()
}

#[tokio::test]
async fn a_missing_backup_keeps_the_store_from_being_created() {
    let h = Harness::new();
    let action = h.create_and_apply(NAME, from_backup()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let store = h.store(NAME);
    assert_eq!(store.status.as_ref().unwrap().phase, Some(Phase::Degraded));
    assert_eq!(
        condition(&store, "Degraded"),
        ("True".into(), "RestoreBackupNotFound".into())
    );
    let message = &condition_of(&store, "Degraded").message;
    assert!(
        message.contains(BACKUP) && message.contains(NS),
        "{message}"
    );
    assert_eq!(condition(&store, "Progressing").1, "Stalled");
    assert_eq!(store.status.as_ref().unwrap().restored_from, None);
    assert_nothing_applied(&h);
    assert!(h.event_reasons().contains(&"Degraded".to_string()));
    h.assert_rbac_covers_every_request();

    // Once the backup exists and is Completed, the store is created.
    add_backup(&h, completed());
    add_credentials(&h, NAME);
    h.reconcile(NAME).await.expect("reconcile");
    assert!(statefulset(&h).is_some());
    assert_eq!(condition(&h.store(NAME), "Degraded").0, "False");
}

#[tokio::test]
async fn an_unfinished_backup_is_waited_for_then_restored_from() {
    let h = Harness::new();
    add_backup(&h, json!({ "phase": "Running", "reason": "JobRunning" }));
    add_credentials(&h, NAME);
    let action = h.create_and_apply(NAME, from_backup()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let store = h.store(NAME);
    assert_eq!(
        store.status.as_ref().unwrap().phase,
        Some(Phase::Provisioning)
    );
    assert_eq!(
        condition(&store, "Progressing"),
        ("True".into(), "RestoreBackupNotCompleted".into())
    );
    let message = &condition_of(&store, "Progressing").message;
    assert!(
        message.contains(BACKUP) && message.contains("Running"),
        "{message}"
    );
    assert_eq!(condition(&store, "Degraded").0, "False");
    assert_nothing_applied(&h);
    // The wait is announced once, not on every poll.
    h.reconcile(NAME).await.expect("reconcile");
    assert_eq!(count(&h.event_reasons(), "RestoreWaiting"), 1);
    assert_nothing_applied(&h);

    // Completed: created with the init container, restoredFrom recorded.
    h.server
        .update(&backup_path(BACKUP), |b| b["status"] = completed());
    let action = h.reconcile(NAME).await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let sts = statefulset(&h).expect("StatefulSet created");
    let init = init_containers(&sts);
    assert_eq!(init.len(), 1);
    assert_eq!(init[0]["name"], "restore");
    assert_eq!(
        init[0]["args"],
        json!([
            "restore",
            "--input",
            LOCATION,
            "--data-dir",
            "/data",
            "--if-empty"
        ])
    );
    assert_eq!(init[0]["image"], SERVER_IMAGE);
    let store = h.store(NAME);
    let from = store
        .status
        .as_ref()
        .unwrap()
        .restored_from
        .clone()
        .expect("restoredFrom recorded");
    assert_eq!(from.backup.as_deref(), Some(BACKUP));
    assert_eq!(from.location, LOCATION);
    assert_eq!(
        from.object_store.unwrap().credentials_secret.as_deref(),
        Some(CREDS)
    );
    assert_eq!(
        condition(&store, "Progressing"),
        ("True".into(), "RollingOut".into())
    );
    assert_eq!(count(&h.event_reasons(), "Restoring"), 1);
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn once_restored_later_passes_change_nothing_even_without_the_backup() {
    let h = Harness::new();
    add_backup(&h, completed());
    add_credentials(&h, NAME);
    h.create_and_apply(NAME, from_backup()).await;
    h.mark_statefulset_ready(NAME);
    h.reconcile(NAME).await.expect("reconcile");
    let store = h.store(NAME);
    assert_eq!(store.status.as_ref().unwrap().phase, Some(Phase::Ready));
    let before = statefulset(&h).unwrap();

    // The backup and the credentials Secret are deleted, as users do once
    // the store runs: the store neither notices nor restarts.
    let client = h.ctx.client.clone();
    Api::<DrasiStateStoreBackup>::namespaced(client.clone(), NS)
        .delete(BACKUP, &DeleteParams::default())
        .await
        .expect("deleting the backup");
    Api::<Secret>::namespaced(client, NS)
        .delete(CREDS, &DeleteParams::default())
        .await
        .expect("deleting the credentials");
    assert!(h.server.get(&backup_path(BACKUP)).is_none());
    h.server.clear_requests();
    let action = h.reconcile(NAME).await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let after = statefulset(&h).unwrap();
    assert_eq!(
        after["spec"]["template"], before["spec"]["template"],
        "the pod template changed"
    );
    assert!(
        !h.writes().iter().any(|r| r.path.ends_with("/status")),
        "status rewritten although nothing changed"
    );
    assert!(
        !h.server
            .requests()
            .iter()
            .any(|r| r.path.contains("drasistatestorebackups") || r.path.ends_with(CREDS)),
        "a recorded restore is not looked up again"
    );
    assert_eq!(
        h.store(NAME).status.unwrap().restored_from,
        store.status.unwrap().restored_from
    );
    assert!(!h.event_reasons().contains(&"Restoring".to_string()));
}

#[tokio::test]
async fn a_failed_backup_needs_a_human() {
    let h = Harness::new();
    add_backup(
        &h,
        json!({ "phase": "Failed", "reason": "BackupFailed", "message": "connection refused" }),
    );
    h.create_and_apply(NAME, from_backup()).await;
    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "Degraded"),
        ("True".into(), "RestoreBackupFailed".into())
    );
    assert!(
        condition_of(&store, "Degraded")
            .message
            .contains("connection refused")
    );
    assert_nothing_applied(&h);
}

#[tokio::test]
async fn credentials_must_opt_in_to_the_new_store_and_reach_only_the_init_container() {
    let h = Harness::new();
    add_backup(&h, completed());
    h.create_and_apply(NAME, from_backup()).await;
    assert_eq!(
        condition(&h.store(NAME), "Degraded"),
        ("True".into(), "RestoreCredentialsSecretMissing".into())
    );
    assert_nothing_applied(&h);

    // Labelled for the backed-up store only: not for this one.
    add_credentials(&h, "orders");
    h.reconcile(NAME).await.expect("reconcile");
    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "Degraded"),
        ("True".into(), "SecretNotOptedIn".into())
    );
    let message = &condition_of(&store, "Degraded").message;
    assert!(
        message.contains(&format!("drasi.io/state-store-access={NAME}")),
        "{message}"
    );
    assert_nothing_applied(&h);

    add_credentials(&h, NAME);
    h.reconcile(NAME).await.expect("reconcile");
    let sts = statefulset(&h).expect("StatefulSet created");
    let init = &init_containers(&sts)[0];
    let refs: Vec<&Value> = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("valueFrom"))
        .collect();
    assert_eq!(refs.len(), 3, "{init}");
    for r in refs {
        assert_eq!(r["secretKeyRef"]["name"], CREDS);
        assert_eq!(r["secretKeyRef"]["optional"], true);
    }
    let server = &sts["spec"]["template"]["spec"]["containers"][0];
    assert!(server.get("env").is_none(), "{server}");
    let text = sts.to_string();
    assert!(
        !text.contains(SECRET_KEY),
        "a credential value in the pod spec"
    );
}

#[tokio::test]
async fn a_volume_source_is_created_right_away_with_the_claim_read_only() {
    let h = Harness::new();
    let source = "pvc://drasi-backups/stores/apps/orders/orders-1.snap";
    h.create_and_apply(NAME, json!({ "restore": { "source": source } }))
        .await;
    let sts = statefulset(&h).expect("StatefulSet created");
    let init = &init_containers(&sts)[0];
    assert_eq!(
        init["args"][2],
        "/var/run/drasi-store/restore-source/stores/apps/orders/orders-1.snap"
    );
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let claim = volumes
        .iter()
        .find(|v| v["name"] == "restore-source")
        .expect("the source claim volume");
    assert_eq!(
        claim["persistentVolumeClaim"],
        json!({ "claimName": "drasi-backups", "readOnly": true })
    );
    let from = h.store(NAME).status.unwrap().restored_from.unwrap();
    assert_eq!(from.backup, None);
    assert_eq!(from.location, source);
    assert!(h.event_reasons().contains(&"Restoring".to_string()));
    h.assert_rbac_covers_every_request();
}

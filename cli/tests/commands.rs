//! Each command's effect on the cluster, against the operator's SIMULATED
//! API server (no cluster): the objects created or patched, the refusals
//! (which must change nothing), and `status` in all three formats.

mod support;

use std::time::Duration;

use drasi_store_cli::args::{Command, OutputFormat};
use drasi_store_cli::{backup, pause, restore, rotate, run, status};
use serde_json::json;
use support::*;

fn err_text(err: anyhow::Error) -> String {
    format!("{err:#}")
}

#[tokio::test]
async fn status_shows_phase_conditions_pods_volumes_metrics_and_the_last_backup() {
    let server = start_server().await;
    server.set("app-a", "k1", b"v").await;
    server.set("app-a", "k2", b"v").await;
    server.set("app-b", "k1", b"v").await;
    let (fake, cluster) = cluster(&server.url);
    put_healthy_store(&fake, "orders");
    put_backup(
        &fake,
        "orders-20240101-000000-0001",
        "orders",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed", "completionTime": "2024-01-01T00:02:00Z",
                "sizeBytes": 1536, "records": 3, "location": "s3://backups/apps/orders/a.snap" }),
    );
    put_backup(
        &fake,
        "orders-20240102-000000-0002",
        "orders",
        "2024-01-02T00:00:00Z",
        json!({ "phase": "Failed", "reason": "BackupFailed", "message": "disk full",
                "startTime": "2024-01-02T00:00:05Z" }),
    );
    // Another store's newer backup is not this store's last backup.
    put_backup(
        &fake,
        "other-1",
        "other",
        "2024-02-01T00:00:00Z",
        json!({ "phase": "Completed" }),
    );

    let report = status::collect(&cluster, "orders").await.unwrap();
    assert_eq!(report.metrics.keys, Some(3));
    assert_eq!(report.metrics.stores, Some(2));
    assert_eq!(
        report.last_backup.as_ref().map(|b| b.name.as_str()),
        Some("orders-20240102-000000-0002")
    );
    insta::assert_snapshot!(
        "status_table",
        status::render(&report, OutputFormat::Table).unwrap()
    );
    insta::assert_snapshot!(
        "status_json",
        status::render(&report, OutputFormat::Json).unwrap()
    );
    insta::assert_snapshot!(
        "status_yaml",
        status::render(&report, OutputFormat::Yaml).unwrap()
    );
    assert!(writes(&fake).is_empty(), "status only reads");
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_says_why_metrics_are_missing_and_shows_the_rest() {
    let (fake, cluster) = cluster(NOWHERE);
    put_healthy_store(&fake, "orders");
    put_pod(&fake, "orders-0", "orders", false, 0);
    let report = status::collect(&cluster, "orders").await.unwrap();
    assert_eq!(report.metrics.keys, None);
    let error = report.metrics.error.clone().unwrap();
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert!(
        !error.contains(TOKEN),
        "errors never carry the token: {error}"
    );
    assert!(report.last_backup.is_none());
    let table = status::render(&report, OutputFormat::Table).unwrap();
    assert!(table.contains("Keys:       unavailable: "), "{table}");
    assert!(table.contains("orders-0   0/1     Running   0"), "{table}");
}

#[tokio::test]
async fn status_of_a_replicated_store_shows_the_leader_and_each_replica() {
    let (fake, cluster) = cluster(NOWHERE);
    let mut status = ready_status("orders");
    status["replication"] = json!({
        "leader": "orders-1", "term": 7, "commitIndex": 420,
        "observedAt": "2024-01-01T00:05:00Z",
        "members": [
            { "name": "orders-0", "nodeId": 0, "role": "Follower", "appliedIndex": 418,
              "lag": 2, "reachable": true },
            { "name": "orders-1", "nodeId": 1, "role": "Leader", "appliedIndex": 420,
              "lag": 0, "reachable": true },
            { "name": "orders-2", "reachable": false, "message": "no answer within 2 s" },
        ],
    });
    put_store(&fake, "orders", json!({ "replicas": 3 }), status);
    let report = status::collect(&cluster, "orders").await.unwrap();
    let replication = report.replication.clone().expect("a replication block");
    assert_eq!(replication.leader.as_deref(), Some("orders-1"));
    assert_eq!(replication.replicas.len(), 3);
    insta::assert_snapshot!(
        "status_replicated_table",
        status::render(&report, OutputFormat::Table).unwrap()
    );
    let json: serde_json::Value =
        serde_json::from_str(&status::render(&report, OutputFormat::Json).unwrap()).unwrap();
    assert_eq!(json["replication"]["replicas"][2]["reachable"], false);
    assert_eq!(json["replication"]["term"], 7);
}

#[tokio::test]
async fn status_of_a_missing_store_is_a_clear_error() {
    let (_fake, cluster) = cluster(NOWHERE);
    let err = err_text(status::collect(&cluster, "ghost").await.unwrap_err());
    assert_eq!(err, "DrasiStateStore ghost not found in namespace apps");
}

#[tokio::test]
async fn backup_creates_a_named_backup_of_the_store() {
    let (fake, cluster) = cluster(NOWHERE);
    put_healthy_store(&fake, "orders");
    let created = backup::create(&cluster, "orders", Some("local"))
        .await
        .unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("orders-") && name.len() == "orders-".len() + 20,
        "{name}"
    );
    let stored = fake.get(&backup_path(&name)).expect("backup created");
    assert_eq!(
        stored["spec"],
        json!({ "store": "orders", "destination": "local" })
    );
    let posts: Vec<_> = writes(&fake);
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].method, "POST");
    assert_eq!(posts[0].path, backups_path());

    // Without --destination the field stays unset: the operator picks the first.
    let created = backup::create(&cluster, "orders", None).await.unwrap();
    let stored = fake
        .get(&backup_path(&created.metadata.name.unwrap()))
        .unwrap();
    assert_eq!(stored["spec"], json!({ "store": "orders" }));
}

#[tokio::test]
async fn backup_refuses_what_the_operator_would_fail_and_creates_nothing() {
    let (fake, cluster) = cluster(NOWHERE);
    put_healthy_store(&fake, "orders");
    put_store(&fake, "bare", json!({}), json!({}));
    let cases = [
        (
            "ghost",
            None,
            "DrasiStateStore ghost not found in namespace apps",
        ),
        (
            "bare",
            None,
            "DrasiStateStore bare declares no spec.backup.destinations",
        ),
        (
            "orders",
            Some("tape"),
            "DrasiStateStore orders has no backup destination named tape (it has: s3, local)",
        ),
    ];
    for (store, destination, expected) in cases {
        let err = err_text(
            backup::create(&cluster, store, destination)
                .await
                .unwrap_err(),
        );
        assert!(err.starts_with(expected), "{err}");
    }
    assert!(writes(&fake).is_empty());
}

async fn created_backup(
    fake: &FakeApiServer,
    cluster: &drasi_store_cli::cluster::Cluster,
) -> String {
    put_healthy_store(fake, "orders");
    backup::create(cluster, "orders", None)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap()
}

#[tokio::test]
async fn backup_wait_follows_the_phases_to_completed() {
    let (fake, cluster) = cluster(NOWHERE);
    let name = created_backup(&fake, &cluster).await;
    let path = backup_path(&name);
    let updater = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        updater.update(&path, |b| b["status"] = json!({ "phase": "Running" }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        updater.update(&path, |b| {
            b["status"] = json!({ "phase": "Completed", "records": 10, "sizeBytes": 2048,
                                  "location": "s3://backups/x.snap" })
        });
    });
    let mut seen = Vec::new();
    let done = backup::wait(
        &cluster,
        &name,
        Duration::from_secs(10),
        Duration::from_millis(10),
        |b| seen.push(backup::describe(b)),
    )
    .await
    .unwrap();
    assert_eq!(done.status.unwrap().records, Some(10));
    assert_eq!(
        seen,
        [
            format!("{name}: Pending"),
            format!("{name}: Running"),
            format!("{name}: Completed, 10 records, 2.0 KiB at s3://backups/x.snap"),
        ]
    );
}

#[tokio::test]
async fn backup_wait_fails_with_the_status_error_and_times_out() {
    let (fake, cluster) = cluster(NOWHERE);
    let name = created_backup(&fake, &cluster).await;
    let err = backup::wait(
        &cluster,
        &name,
        Duration::from_millis(50),
        Duration::from_millis(10),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        err_text(err).contains("is still without a phase after"),
        "times out"
    );

    fake.update(
        &backup_path(&name),
        |b| {
            b["status"] =
                json!({ "phase": "Failed", "reason": "BackupFailed", "message": "bucket missing" })
        },
    );
    let err = backup::wait(
        &cluster,
        &name,
        Duration::from_secs(5),
        Duration::from_millis(10),
        |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(
        err_text(err),
        format!("backup {name} failed (BackupFailed): bucket missing")
    );
}

#[tokio::test]
async fn backup_wait_through_the_command_prints_each_phase_and_fails_on_failed() {
    let (fake, cluster) = cluster(NOWHERE);
    put_healthy_store(&fake, "orders");
    // The simulated server lets the test fail every backup as it appears.
    let watcher = fake.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let created = watcher
                .requests()
                .into_iter()
                .find(|r| r.method == "POST")
                .and_then(|r| r.body)
                .and_then(|b| b["metadata"]["name"].as_str().map(str::to_string));
            if let Some(name) = created {
                watcher.update(&backup_path(&name), |b| {
                    b["status"] = json!({ "phase": "Failed", "message": "no space" })
                });
                return;
            }
        }
    });
    let mut out = Vec::new();
    let command = Command::Backup {
        store: "orders".into(),
        destination: None,
        wait: true,
        timeout: Duration::from_secs(30),
    };
    let err = run::execute(&cluster, command, &mut out).await.unwrap_err();
    let out = String::from_utf8(out).unwrap();
    assert!(err_text(err).ends_with("(no reason given): no space"));
    assert!(
        out.starts_with("drasistatestorebackup.drasi.io/orders-"),
        "{out}"
    );
    assert!(out.trim_end().ends_with(": Failed"), "{out}");
}

#[tokio::test]
async fn restore_copies_the_backed_up_spec_and_sets_from_backup() {
    let (fake, cluster) = cluster(NOWHERE);
    put_store(
        &fake,
        "orders",
        json!({ "storage": { "size": "5Gi", "storageClassName": "fast" }, "durability": "Eventual",
                "paused": true, "backup": destinations(), "someNewerField": { "kept": true } }),
        ready_status("orders"),
    );
    put_backup(
        &fake,
        "b1",
        "orders",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed" }),
    );
    let restored = restore::restore(&cluster, "b1", "orders-restored")
        .await
        .unwrap();
    assert_eq!(restored.spec_from.as_deref(), Some("orders"));
    let created = fake
        .get(&store_path("orders-restored"))
        .expect("store created");
    assert_eq!(
        created["spec"],
        json!({ "storage": { "size": "5Gi", "storageClassName": "fast" }, "durability": "Eventual",
                "backup": destinations(), "someNewerField": { "kept": true },
                "restore": { "fromBackup": "b1" } })
    );
    assert_eq!(created["kind"], "DrasiStateStore");
    let writes = writes(&fake);
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].path, stores_path());
}

#[tokio::test]
async fn restore_without_the_original_store_uses_a_minimal_spec() {
    let (fake, cluster) = cluster(NOWHERE);
    put_backup(
        &fake,
        "b1",
        "gone",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed" }),
    );
    let mut out = Vec::new();
    let command = Command::Restore {
        backup: "b1".into(),
        to: "fresh".into(),
    };
    run::execute(&cluster, command, &mut out).await.unwrap();
    assert!(String::from_utf8(out).unwrap().contains("no longer exists"));
    let created = fake.get(&store_path("fresh")).unwrap();
    assert_eq!(
        created["spec"],
        json!({ "restore": { "fromBackup": "b1" } })
    );
}

#[tokio::test]
async fn restore_refuses_and_creates_nothing() {
    let (fake, cluster) = cluster(NOWHERE);
    put_healthy_store(&fake, "orders");
    put_backup(
        &fake,
        "done",
        "orders",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed" }),
    );
    put_backup(
        &fake,
        "running",
        "orders",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Running" }),
    );
    put_backup(&fake, "new", "orders", "2024-01-01T00:00:00Z", json!({}));
    let cases = [
        (
            "done",
            "orders",
            "DrasiStateStore orders already exists in namespace apps",
        ),
        ("running", "x", "backup running is Running, not Completed"),
        (
            "new",
            "x",
            "backup new is without a phase yet, not Completed",
        ),
        (
            "ghost",
            "x",
            "DrasiStateStoreBackup ghost not found in namespace apps",
        ),
        ("done", "Bad_Name", "\"Bad_Name\" is not a valid store name"),
    ];
    for (backup, to, expected) in cases {
        let err = err_text(restore::restore(&cluster, backup, to).await.unwrap_err());
        assert!(err.starts_with(expected), "{err}");
    }
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn pause_and_resume_merge_patch_spec_paused_once() {
    let (fake, cluster) = cluster(NOWHERE);
    put_healthy_store(&fake, "orders");
    assert!(pause::set_paused(&cluster, "orders", true).await.unwrap());
    assert_eq!(
        fake.get(&store_path("orders")).unwrap()["spec"]["paused"],
        true
    );
    assert!(
        !pause::set_paused(&cluster, "orders", true).await.unwrap(),
        "already paused"
    );
    assert!(pause::set_paused(&cluster, "orders", false).await.unwrap());
    let store = fake.get(&store_path("orders")).unwrap();
    assert_eq!(store["spec"]["paused"], false);
    assert_eq!(
        store["spec"]["storage"]["size"], "1Gi",
        "the rest of the spec stays"
    );
    let writes = writes(&fake);
    assert_eq!(writes.len(), 2, "a no-op writes nothing");
    for w in &writes {
        assert_eq!(w.method, "PATCH");
        assert_eq!(
            w.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
    }
    assert_eq!(writes[0].body, Some(json!({ "spec": { "paused": true } })));

    let mut out = Vec::new();
    run::execute(
        &cluster,
        Command::Resume {
            store: "orders".into(),
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "drasistatestore.drasi.io/orders was not paused\n"
    );
    let err = pause::set_paused(&cluster, "ghost", true)
        .await
        .unwrap_err();
    assert_eq!(
        err_text(err),
        "DrasiStateStore ghost not found in namespace apps"
    );
}

#[tokio::test]
async fn rotate_token_sets_a_new_trigger_and_keeps_the_grace_period() {
    let (fake, cluster) = cluster(NOWHERE);
    put_store(
        &fake,
        "orders",
        json!({ "auth": { "rotation": { "trigger": "first", "gracePeriodSeconds": 600 } } }),
        json!({}),
    );
    put_secrets(&fake, "orders", TOKEN);
    fake.update(
        &format!("/api/v1/namespaces/{NS}/secrets/orders-auth"),
        |s| s["metadata"]["annotations"] = json!({ "drasi.io/token-rotation-stage": "Switched" }),
    );
    let request = rotate::request(&cluster, "orders").await.unwrap();
    assert_eq!(request.in_flight.as_deref(), Some("Switched"));
    let rotation = &fake.get(&store_path("orders")).unwrap()["spec"]["auth"]["rotation"];
    assert_eq!(rotation["gracePeriodSeconds"], 600);
    assert_eq!(rotation["trigger"], request.trigger.as_str());
    assert_ne!(request.trigger, "first");

    assert!(!request.paused);

    pause::set_paused(&cluster, "orders", true).await.unwrap();
    let mut out = Vec::new();
    let command = Command::RotateToken {
        store: "orders".into(),
    };
    run::execute(&cluster, command, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    let second = fake.get(&store_path("orders")).unwrap()["spec"]["auth"]["rotation"]["trigger"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        second, request.trigger,
        "a second request is a new rotation"
    );
    assert!(
        out.starts_with(&format!(
            "token rotation of orders requested (trigger {second})\n"
        )),
        "{out}"
    );
    assert!(out.contains("the store is paused (spec.paused)"), "{out}");
    assert!(
        out.contains("a rotation is in flight (stage Switched)"),
        "{out}"
    );
}

#[tokio::test]
async fn rotate_token_refuses_a_users_secret() {
    let (fake, cluster) = cluster(NOWHERE);
    put_store(
        &fake,
        "orders",
        json!({ "auth": { "existingSecret": "my-tokens" } }),
        json!({}),
    );
    let err = err_text(rotate::request(&cluster, "orders").await.unwrap_err());
    assert!(
        err.contains("uses spec.auth.existingSecret (my-tokens)"),
        "{err}"
    );
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn restore_refuses_when_the_installed_crd_would_drop_spec_restore() {
    let (fake, cluster) = cluster_with(NOWHERE, CrdFields::WithoutRestore);
    put_healthy_store(&fake, "orders");
    put_backup(
        &fake,
        "b1",
        "orders",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed" }),
    );
    let err = err_text(
        restore::restore(&cluster, "b1", "orders-2")
            .await
            .unwrap_err(),
    );
    assert!(
        err.starts_with("the DrasiStateStore CRD installed in this cluster has no spec.restore"),
        "{err}"
    );
    assert!(err.ends_with("Nothing was created"), "{err}");
    assert!(fake.get(&store_path("orders-2")).is_none());
    assert!(writes(&fake).is_empty());
}

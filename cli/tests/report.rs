//! `report`: the archive's contents, that no Secret is in it, and that
//! every token value (known or token-shaped) is redacted.

mod support;

use std::collections::BTreeMap;
use std::io::Read as _;

use drasi_store_cli::report;
use serde_json::json;
use support::*;

/// The archive's files by path, decompressed.
fn read_archive(path: &std::path::Path) -> BTreeMap<String, String> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        files.insert(name, text);
    }
    files
}

/// A second accepted token, as during a rotation.
const OLD_TOKEN: &str = "old-token-fedcba9876543210";

fn base64(s: &str) -> String {
    serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn event(name: &str, object: &str, message: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": name, "namespace": NS },
        "involvedObject": { "kind": "Pod", "name": object, "namespace": NS },
        "reason": "Test", "message": message, "type": "Normal",
        "lastTimestamp": "2024-01-01T00:00:00Z",
    })
}

#[tokio::test]
async fn the_archive_holds_the_store_its_objects_logs_events_and_metrics_with_tokens_redacted() {
    let server = start_server().await;
    server.set("app-a", "k", b"v").await;
    let (fake, cluster) = cluster(&server.url);
    put_healthy_store(&fake, "orders");
    // The token in places a careless user or component might put it.
    fake.update(&store_path("orders"), |s| {
        s["metadata"]["annotations"] = json!({ "note": format!("debug with {TOKEN}") })
    });
    // A rotation in flight: the server accepts a second token, which is
    // known only from `<store>-auth` (a comment line is not a token).
    fake.update(
        &format!("/api/v1/namespaces/{NS}/secrets/orders-auth"),
        |s| s["data"]["token"] = json!(base64(&format!("# staged\n{TOKEN}\n{OLD_TOKEN}\n"))),
    );
    fake.set_log(
        &pod_path("orders-0"),
        &format!(
            "INFO listening addr=0.0.0.0:7070\nDEBUG request Authorization: Bearer {TOKEN}\n\
             WARN env DRASI_STATE_STORE_TOKEN={TOKEN}\nWARN b64 {}\n\
             WARN client sent {OLD_TOKEN} # staged\n",
            base64(TOKEN)
        ),
    );
    put_backup(
        &fake,
        "orders-b1",
        "orders",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed", "jobName": "orders-b1" }),
    );
    put_backup(
        &fake,
        "other-b1",
        "other",
        "2024-01-01T00:00:00Z",
        json!({ "phase": "Completed" }),
    );
    fake.put(
        "events",
        event("e1", "orders-0", &format!("probe sent bearer {TOKEN}")),
    );
    fake.put("events", event("e2", "orders-b1", "backup job started"));
    fake.put(
        "events",
        event("e3", "unrelated-pod", "not about this store"),
    );
    fake.put(
        "statefulsets",
        json!({ "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": { "name": "orders", "namespace": NS, "managedFields": [{ "manager": "x" }] },
                "spec": { "serviceName": "orders-headless" } }),
    );
    fake.put(
        "services",
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "orders", "namespace": NS } }),
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.tar.gz");
    let written = report::write(&cluster, "orders", 500, &out).await.unwrap();
    // No headless Service in this fixture: its absence is not an error.
    assert!(written.errors.is_empty(), "{:?}", written.errors);
    let files = read_archive(&out);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "orders-report/backups.yaml",
            "orders-report/events.yaml",
            "orders-report/logs/orders-0/store-server.log",
            "orders-report/logs/orders-0/store-server.previous.log",
            "orders-report/metrics.txt",
            "orders-report/pods.yaml",
            "orders-report/pvcs.yaml",
            "orders-report/services.yaml",
            "orders-report/statefulset.yaml",
            "orders-report/store.yaml",
        ]
    );
    for (name, text) in &files {
        assert!(!text.contains(TOKEN), "{name} holds the token:\n{text}");
        assert!(
            !text.contains(OLD_TOKEN),
            "{name} holds the second token:\n{text}"
        );
        assert!(
            !text.contains(&base64(TOKEN)),
            "{name} holds the token in base64"
        );
        assert!(!text.contains("kind: Secret"), "{name} holds a Secret");
        assert!(
            !text.contains("managedFields"),
            "{name} keeps managedFields"
        );
    }
    let log = &files["orders-report/logs/orders-0/store-server.log"];
    assert_eq!(
        log,
        "INFO listening addr=0.0.0.0:7070\nDEBUG request Authorization: [REDACTED]\n\
         WARN env DRASI_STATE_STORE_TOKEN=[REDACTED]\nWARN b64 [REDACTED]\n\
         WARN client sent [REDACTED] # staged\n"
    );
    let events = &files["orders-report/events.yaml"];
    assert!(
        events.contains("probe sent bearer [REDACTED]") && events.contains("backup job started")
    );
    assert!(!events.contains("unrelated-pod"), "{events}");
    let backups = &files["orders-report/backups.yaml"];
    assert!(backups.contains("orders-b1") && !backups.contains("other-b1"));
    assert!(files["orders-report/store.yaml"].contains("note: debug with [REDACTED]"));
    assert!(files["orders-report/metrics.txt"].contains("drasi_store_keys 1"));
    assert!(files["orders-report/pvcs.yaml"].contains("data-orders-0"));

    // The report only reads, and never an existing file.
    assert!(writes(&fake).is_empty());
    let err = report::write(&cluster, "orders", 500, &out)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("refusing to overwrite"));
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn parts_that_cannot_be_read_are_listed_and_the_rest_is_written() {
    let (fake, cluster) = cluster(NOWHERE);
    put_store(&fake, "orders", json!({}), json!({}));
    fake.fail("GET", &format!("/api/v1/namespaces/{NS}/events"), 500, 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.tgz");
    let written = report::write(&cluster, "orders", 10, &out).await.unwrap();
    let files = read_archive(&out);
    let errors = &files["orders-report/errors.txt"];
    assert_eq!(written.errors.len(), errors.lines().count());
    assert!(
        errors.contains("connection Secret (for redaction)"),
        "{errors}"
    );
    assert!(errors.contains("events: "), "{errors}");
    assert!(errors.contains("metrics: "), "{errors}");
    assert!(files.contains_key("orders-report/store.yaml"));
    assert!(!files.contains_key("orders-report/events.yaml"));

    let err = report::write(&cluster, "ghost", 10, &dir.path().join("g.tgz"))
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "DrasiStateStore ghost not found in namespace apps"
    );
    assert!(!dir.path().join("g.tgz").exists() && !dir.path().join("g.tgz.partial").exists());
}

//! Selective export and import: `export` of some store_ids from one server,
//! `import` into another, which replaces exactly those stores in one commit
//! and refuses anything damaged without changing a thing.

mod common;

use std::path::Path;
use std::process::Output;

use common::{TestServer, run_bin, server_bin, start_server, stderr};
use drasi_store_protocol::snapshot::{CONTENT_TYPE, IMPORT_PATH, SnapshotHeader, SnapshotWriter};
use reqwest::Method;

async fn cli(args: &[&str]) -> Output {
    let mut cmd = server_bin();
    cmd.args(args);
    run_bin(cmd).await
}

async fn put_all(t: &TestServer, entries: &[(&str, &str, &str)]) {
    for (s, k, v) in entries {
        assert_eq!(t.put(s, k, v.as_bytes()).await.status(), 204);
    }
}

fn spool_files(data: &Path) -> Vec<String> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".spool"))
        .collect()
}

async fn post_import(t: &TestServer, body: Vec<u8>, content_type: &str) -> reqwest::Response {
    t.authed(Method::POST, &format!("{}{IMPORT_PATH}", t.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn export_then_import_replaces_exactly_the_selected_stores() {
    let source = start_server(&[]).await;
    put_all(
        &source,
        &[
            ("app", "k1", "new1"),
            ("app", "k2", "new2"),
            ("other", "x", "src"),
        ],
    )
    .await;
    let target = start_server(&[]).await;
    put_all(
        &target,
        &[
            ("app", "k1", "old1"),
            ("app", "stale", "old"),
            ("emptied", "e", "old"),
            ("untouched", "u", "keep"),
            ("other", "x", "target"),
        ],
    )
    .await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("app.snap");
    let token = source.token_file.display().to_string();
    let out = cli(&[
        "export",
        "--url",
        &source.base,
        "--token-file",
        &token,
        "--store",
        "app",
        "--store",
        "emptied",
        "--output",
        &file.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let token = target.token_file.display().to_string();
    let out = cli(&[
        "import",
        "--url",
        &target.base,
        "--token-file",
        &token,
        "--input",
        &file.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["records"], 2);
    assert_eq!(answer["stores"], serde_json::json!(["app", "emptied"]));

    assert_eq!(
        target.snapshot("app").await,
        (true, 2, vec!["k1".to_string(), "k2".to_string()])
    );
    assert_eq!(target.get("app", "k1").await.as_deref(), Some(&b"new1"[..]));
    assert_eq!(target.snapshot("emptied").await, (false, 0, vec![]));
    assert_eq!(
        target.get("untouched", "u").await.as_deref(),
        Some(&b"keep"[..])
    );
    assert_eq!(
        target.get("other", "x").await.as_deref(),
        Some(&b"target"[..])
    );
    let metrics = target.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("drasi_store_keys") && l.ends_with(" 4")),
        "keys gauge after import:\n{metrics}"
    );
    assert!(spool_files(&target.dir.path().join("data")).is_empty());
}

#[tokio::test]
async fn damaged_or_oversized_imports_change_nothing() {
    let t = start_server(&["--max-value-bytes", "8"]).await;
    put_all(&t, &[("app", "k", "before")]).await;
    let mut w = SnapshotWriter::new(Vec::new(), &SnapshotHeader::default()).unwrap();
    w.write_record("app", "k", b"after").unwrap();
    w.write_record("app", "new", b"x").unwrap();
    let (_, good) = w.finish().unwrap();

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x20;
    let r = post_import(&t, flipped, CONTENT_TYPE).await;
    common::expect_error(r, 400, "malformed_body").await;
    let r = post_import(&t, good[..good.len() - 1].to_vec(), CONTENT_TYPE).await;
    common::expect_error(r, 400, "malformed_body").await;
    let r = post_import(&t, good.clone(), "application/octet-stream").await;
    common::expect_error(r, 415, "unsupported_media_type").await;
    let r = t
        .client
        .post(format!("{}{IMPORT_PATH}", t.base))
        .header("content-type", CONTENT_TYPE)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    common::expect_error(r, 401, "unauthorized").await;

    let mut w = SnapshotWriter::new(Vec::new(), &SnapshotHeader::default()).unwrap();
    w.write_record("app", "k", b"far too long for the limit")
        .unwrap();
    let (_, oversized) = w.finish().unwrap();
    let r = post_import(&t, oversized, CONTENT_TYPE).await;
    assert_eq!(r.status(), 400);
    let body = common::json(r).await;
    assert!(
        body["message"].as_str().unwrap().contains("limit of 8"),
        "{body}"
    );

    assert_eq!(t.snapshot("app").await, (true, 1, vec!["k".to_string()]));
    assert_eq!(t.get("app", "k").await.as_deref(), Some(&b"before"[..]));
    assert!(spool_files(&t.dir.path().join("data")).is_empty());

    let r = post_import(&t, good, CONTENT_TYPE).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.snapshot("app").await.1, 2);
    assert_eq!(t.get("app", "k").await.as_deref(), Some(&b"after"[..]));
}

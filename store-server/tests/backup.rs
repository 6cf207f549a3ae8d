//! Snapshot endpoint and the backup / verify / restore subcommands against
//! an in-process server and the real binary, on real files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TOKEN, TestServer, server_bin, start_server, start_server_in, stderr};
use drasi_store_protocol::snapshot::{
    CONTENT_TYPE, SNAPSHOT_PATH, SnapshotReader, encode_selection,
};
use reqwest::Method;

/// Runs a subcommand with a clean environment for the data dir flag.
async fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("DRASI_STORE_DATA_DIR");
    common::run_bin(std::mem::replace(cmd, server_bin())).await
}

async fn seeded() -> TestServer {
    let t = start_server(&[]).await;
    for (store, key, value) in [
        ("alpha", "a", &b"1"[..]),
        ("alpha", "b", b"\x00\xff"),
        ("beta", "", b""),
        ("beta", "x/y?z", b"v"),
        ("", "empty-store-id", b"e"),
    ] {
        assert_eq!(t.put(store, key, value).await.status(), 204);
    }
    t
}

async fn backup(t: &TestServer, output: &Path) -> Output {
    run(server_bin()
        .arg("backup")
        .arg("--url")
        .arg(&t.base)
        .arg("--token-file")
        .arg(&t.token_file)
        .arg("--output")
        .arg(output))
    .await
}

async fn restore(input: &Path, data_dir: &Path) -> Output {
    run(server_bin()
        .arg("restore")
        .arg("--input")
        .arg(input)
        .arg("--data-dir")
        .arg(data_dir))
    .await
}

async fn verify(input: &Path) -> Output {
    run(server_bin().arg("verify").arg("--input").arg(input)).await
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn snapshot_needs_a_token() {
    let t = seeded().await;
    let url = format!("{}{SNAPSHOT_PATH}", t.base);
    let r = t.client.get(&url).send().await.unwrap();
    common::expect_error(r, 401, "unauthorized").await;
    let r = t
        .client
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn snapshot_streams_every_record_in_order_and_selects_stores() {
    let t = seeded().await;
    let r = t
        .authed(Method::GET, &format!("{}{SNAPSHOT_PATH}", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
    let body = r.bytes().await.unwrap();
    let mut reader = SnapshotReader::new(&body[..]).unwrap();
    assert!(!reader.header().is_selective());
    assert!(reader.header().created_at_unix_ms.is_some());
    let mut got = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        got.push((rec.store_id, rec.key, rec.value));
    }
    let s = |a: &str, b: &str, c: &[u8]| (a.to_string(), b.to_string(), c.to_vec());
    assert_eq!(
        got,
        vec![
            s("", "empty-store-id", b"e"),
            s("alpha", "a", b"1"),
            s("alpha", "b", b"\x00\xff"),
            s("beta", "", b""),
            s("beta", "x/y?z", b"v"),
        ]
    );
    let summary = reader.summary().unwrap();
    assert_eq!((summary.records, summary.stores), (5, 3));
    assert_eq!(summary.bytes, body.len() as u64);

    let url = format!(
        "{}{SNAPSHOT_PATH}?{}",
        t.base,
        encode_selection(&["beta", "", "missing"])
    );
    let body = t
        .authed(Method::GET, &url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut reader = SnapshotReader::new(&body[..]).unwrap();
    assert_eq!(reader.header().selected_stores, ["", "beta", "missing"]);
    let mut stores = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        stores.push(rec.store_id);
    }
    assert_eq!(stores, ["", "beta", "beta"]);

    let r = t
        .authed(Method::GET, &format!("{}{SNAPSHOT_PATH}?key=a", t.base))
        .send()
        .await
        .unwrap();
    common::expect_error(r, 400, "invalid_query").await;
}

#[tokio::test]
async fn backup_verify_restore_round_trip() {
    let t = seeded().await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("b.snap");
    let out = backup(&t, &file).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("records: 5"), "{printed}");
    assert_eq!(entries(work.path()), ["b.snap"]);

    let out = verify(&file).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("stores:  3") && printed.contains("sha256:"),
        "{printed}"
    );

    // The server keeps serving and writing after the snapshot.
    assert_eq!(t.put("alpha", "later", b"x").await.status(), 204);

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let out = restore(&file, &data).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&data), ["state.redb"]);
    // The server serves `<target>/data`, where the restore went.
    let r = start_server_in(target, &[]).await;
    assert_eq!(r.get("alpha", "b").await.as_deref(), Some(&b"\x00\xff"[..]));
    assert_eq!(r.get("beta", "x/y?z").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(
        r.get("", "empty-store-id").await.as_deref(),
        Some(&b"e"[..])
    );
    assert_eq!(r.get("alpha", "later").await, None);
    assert_eq!(
        r.snapshot("alpha").await,
        (true, 2, vec!["a".to_string(), "b".to_string()])
    );
    // Counters and fresh partitions work on the restored database.
    assert_eq!(r.put("gamma", "g", b"1").await.status(), 204);
    assert_eq!(r.snapshot("gamma").await.1, 1);
    r.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn backup_refuses_an_existing_output_and_a_bad_token_and_leaves_nothing() {
    let t = seeded().await;
    let work = tempfile::tempdir().unwrap();
    let existing = work.path().join("old.snap");
    std::fs::write(&existing, b"keep me").unwrap();
    let out = backup(&t, &existing).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing to overwrite"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let bad_token = work.path().join("bad-token");
    std::fs::write(&bad_token, "nope\n").unwrap();
    let out = run(server_bin()
        .args(["backup", "--url", &t.base, "--output"])
        .arg(work.path().join("new.snap"))
        .arg("--token-file")
        .arg(&bad_token))
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    assert_eq!(entries(work.path()), ["bad-token", "old.snap"]);
}

/// Every way of damaging a backup file is refused by `verify` and by
/// `restore`, and a refused restore leaves an empty data dir.
#[tokio::test]
async fn damaged_snapshots_fail_verify_and_restore_cleanly() {
    let t = seeded().await;
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.snap");
    assert!(backup(&t, &good).await.status.success());
    let bytes = std::fs::read(&good).unwrap();

    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() - 7].to_vec(), "truncated"),
        (
            "no trailer",
            bytes[..bytes.len() - 41].to_vec(),
            "trailer is missing",
        ),
        ("empty", Vec::new(), "truncated"),
    ];
    let mut flipped = bytes.clone();
    // Inside the value of ("alpha", "b"): that record's checksum fails.
    let value_at = bytes
        .windows(2)
        .position(|w| w == b"\x00\xff")
        .expect("value present");
    flipped[value_at] ^= 0x04;
    cases.push(("flipped", flipped, "corrupt"));
    let mut checksum = bytes.clone();
    let last = checksum.len() - 1;
    checksum[last] ^= 0x01;
    cases.push(("bad checksum", checksum, "checksum mismatch"));
    let mut version = bytes.clone();
    version[8..10].copy_from_slice(&7u16.to_be_bytes());
    cases.push((
        "future version",
        version,
        "format version 7 is not supported",
    ));

    for (name, content, message) in cases {
        let file = work.path().join(format!("{name}.snap"));
        std::fs::write(&file, &content).unwrap();
        let out = verify(&file).await;
        assert!(!out.status.success(), "verify accepted {name}");
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));

        let data = work.path().join(format!("{name}-data"));
        let out = restore(&file, &data).await;
        assert!(!out.status.success(), "restore accepted {name}");
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
        assert_eq!(
            entries(&data),
            Vec::<String>::new(),
            "{name} left files behind"
        );
    }
}

#[tokio::test]
async fn restore_refuses_a_non_empty_data_dir_and_changes_nothing() {
    let t = seeded().await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("b.snap");
    assert!(backup(&t, &file).await.status.success());
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("state.redb"), b"not mine to replace").unwrap();
    let out = restore(&file, &data).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(entries(&data), ["state.redb"]);
    assert_eq!(
        std::fs::read(data.join("state.redb")).unwrap(),
        b"not mine to replace"
    );
}

/// A restore killed midway leaves only its temporary file: the server
/// refuses to start next to it, and the next restore replaces it.
#[tokio::test]
async fn an_interrupted_restore_is_not_served_and_is_redone() {
    let t = seeded().await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("b.snap");
    assert!(backup(&t, &file).await.status.success());
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("state.redb.restoring"), b"half a database").unwrap();

    let token_file = work.path().join("tokens");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let err = drasi_store_server::start(common::config(&work, &token_file, &[]))
        .await
        .err()
        .expect("server must refuse the leftover")
        .to_string();
    assert!(err.contains("interrupted restore"), "{err}");
    assert_eq!(entries(&data), ["state.redb.restoring"]);

    let out = restore(&file, &data).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&data), ["state.redb"]);
}

#[tokio::test]
async fn verify_reports_a_missing_file_and_bad_locations() {
    let out = verify(&PathBuf::from("/nonexistent/backup.snap")).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/backup.snap"),
        "{}",
        stderr(&out)
    );
    let out = run(server_bin().args(["verify", "--input", "gs://bucket/key"])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unsupported location"),
        "{}",
        stderr(&out)
    );
}

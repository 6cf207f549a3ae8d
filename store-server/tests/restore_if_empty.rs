//! `restore --if-empty`, as the operator's init container runs it before
//! every server start: the real binary on real files fills a fresh volume
//! once, then leaves the database alone on every later start, restored or
//! written to since.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{server_bin, start_server, start_server_in, stderr};

async fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("DRASI_STORE_DATA_DIR");
    common::run_bin(std::mem::replace(cmd, server_bin())).await
}

async fn restore_if_empty(input: &Path, data_dir: &Path) -> Output {
    run(server_bin()
        .arg("restore")
        .arg("--input")
        .arg(input)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--if-empty"))
    .await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A backup of a server holding `alpha/a = 1` and `alpha/b = 2`.
async fn backup_file(work: &Path) -> std::path::PathBuf {
    let t = start_server(&[]).await;
    assert_eq!(t.put("alpha", "a", b"1").await.status(), 204);
    assert_eq!(t.put("alpha", "b", b"2").await.status(), 204);
    let file = work.join("b.snap");
    let out = run(server_bin()
        .arg("backup")
        .arg("--url")
        .arg(&t.base)
        .arg("--token-file")
        .arg(&t.token_file)
        .arg("--output")
        .arg(&file))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    t.server.shutdown().await.unwrap();
    file
}

#[tokio::test]
async fn a_fresh_volume_is_restored_once_and_then_left_alone() {
    let work = tempfile::tempdir().unwrap();
    let file = backup_file(work.path()).await;
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    // What a freshly formatted ext4 volume holds.
    std::fs::create_dir_all(data.join("lost+found")).unwrap();

    let out = restore_if_empty(&file, &data).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("restored into"), "{}", stdout(&out));

    // The server writes to the restored database.
    let t = start_server_in(target, &[]).await;
    assert_eq!(t.get("alpha", "a").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(t.put("alpha", "a", b"changed").await.status(), 204);
    assert_eq!(t.put("alpha", "c", b"new").await.status(), 204);
    t.server.shutdown().await.unwrap();
    let target = t.dir;
    let written = std::fs::read(data.join("state.redb")).unwrap();

    // The next start skips, without even reading the input.
    for input in [file.as_path(), Path::new("/nonexistent/backup.snap")] {
        let out = restore_if_empty(input, &data).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("restore skipped"), "{}", stdout(&out));
        assert_eq!(std::fs::read(data.join("state.redb")).unwrap(), written);
    }

    let t = start_server_in(target, &[]).await;
    assert_eq!(t.get("alpha", "a").await.as_deref(), Some(&b"changed"[..]));
    assert_eq!(t.get("alpha", "b").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(t.get("alpha", "c").await.as_deref(), Some(&b"new"[..]));
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn if_empty_redoes_an_interrupted_restore() {
    let work = tempfile::tempdir().unwrap();
    let file = backup_file(work.path()).await;
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    std::fs::create_dir_all(data.join("lost+found")).unwrap();
    std::fs::write(data.join("state.redb.restoring"), b"half a database").unwrap();

    let out = restore_if_empty(&file, &data).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("restored into"), "{}", stdout(&out));
    let t = start_server_in(target, &[]).await;
    assert_eq!(t.get("alpha", "b").await.as_deref(), Some(&b"2"[..]));
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn if_empty_still_refuses_a_dir_with_other_files() {
    let work = tempfile::tempdir().unwrap();
    let file = backup_file(work.path()).await;
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("notes.txt"), b"someone else's").unwrap();

    let out = restore_if_empty(&file, &data).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(data.join("notes.txt")).unwrap(),
        b"someone else's"
    );
    assert!(!data.join("state.redb").exists());
}

#[tokio::test]
async fn without_if_empty_a_database_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let file = backup_file(work.path()).await;
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("state.redb"), b"live data").unwrap();
    let out = run(server_bin()
        .arg("restore")
        .arg("--input")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data))
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(data.join("state.redb")).unwrap(),
        b"live data"
    );
}

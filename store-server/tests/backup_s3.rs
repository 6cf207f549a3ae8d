//! Backup -> verify -> restore through a real S3-compatible server (moto)
//! started on loopback, via the standard `AWS_*` variables.
//!
//! `common/moto.rs` says where moto comes from.

mod common;

use common::moto::{create_bucket, run, start_moto};
use common::{start_server, start_server_in, stderr};

#[tokio::test]
async fn backup_and_restore_through_a_local_s3_server() {
    let Some(moto) = start_moto() else { return };
    create_bucket(&moto, "backups").await;

    let t = start_server(&[]).await;
    // Large enough for several multipart parts (8 MiB each).
    let value = vec![7u8; 1024 * 1024];
    for i in 0..20 {
        assert_eq!(
            t.put("big", &format!("k{i:02}"), &value).await.status(),
            204
        );
    }
    assert_eq!(t.put("small", "a", b"1").await.status(), 204);
    let token = t.token_file.display().to_string();

    let url = "s3://backups/nightly/one.snap";
    let out = run(
        &moto,
        &[
            "backup",
            "--url",
            &t.base,
            "--token-file",
            &token,
            "--output",
            url,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &moto,
        &[
            "backup",
            "--url",
            &t.base,
            "--token-file",
            &token,
            "--output",
            url,
        ],
    )
    .await;
    assert!(!out.status.success(), "overwrote an existing backup");
    assert!(
        stderr(&out).contains("refusing to overwrite"),
        "{}",
        stderr(&out)
    );

    let out = run(&moto, &["verify", "--input", url, "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["records"], 21);
    assert_eq!(summary["stores"], 2);

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let out = run(
        &moto,
        &[
            "restore",
            "--input",
            url,
            "--data-dir",
            &data.display().to_string(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r = start_server_in(target, &[]).await;
    assert_eq!(r.get("big", "k19").await.as_deref(), Some(&value[..]));
    assert_eq!(r.snapshot("big").await.1, 20);
    assert_eq!(r.get("small", "a").await.as_deref(), Some(&b"1"[..]));

    let out = run(&moto, &["verify", "--input", "s3://backups/missing.snap"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("s3://backups/missing.snap"),
        "{}",
        stderr(&out)
    );
}

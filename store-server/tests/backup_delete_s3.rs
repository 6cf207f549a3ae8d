//! `drasi-store-server delete` against a real S3-compatible server (moto)
//! started on loopback, via the standard `AWS_*` variables: a snapshot
//! written by `backup` is gone afterwards, its neighbour is not, and a
//! second delete of the same snapshot still succeeds.
//!
//! `common/moto.rs` says where moto comes from.

mod common;

use std::process::Output;

use common::moto::{create_bucket, run, start_moto};
use common::{run_bin, server_bin, start_server, stderr};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn delete_removes_one_snapshot_from_a_local_s3_server() {
    let Some(moto) = start_moto() else { return };
    create_bucket(&moto, "backups").await;

    let t = start_server(&[]).await;
    assert_eq!(t.put("orders", "a", b"1").await.status(), 204);
    let token = t.token_file.display().to_string();
    let old = "s3://backups/apps/orders/nightly-202401010200.snap";
    let new = "s3://backups/apps/orders/nightly-202401020200.snap";
    for url in [old, new] {
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
    }

    let out = run(&moto, &["delete", "--location", old]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("deleted: {old}"));
    let out = run(&moto, &["verify", "--input", old]).await;
    assert!(
        !out.status.success(),
        "the deleted snapshot is still readable"
    );
    let out = run(&moto, &["verify", "--input", new]).await;
    assert!(out.status.success(), "the other snapshot: {}", stderr(&out));

    // A retried deletion (e.g. the Job's pod ran twice) succeeds.
    let out = run(&moto, &["delete", "--location", old]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("already absent: {old}"));

    // Only snapshots: nothing else in the bucket can be deleted with it.
    let out = run(
        &moto,
        &["delete", "--location", "s3://backups/apps/orders/"],
    )
    .await;
    assert!(!out.status.success());
    let out = run(&moto, &["delete", "--location", "s3://backups/apps/orders"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));

    // Bad credentials are an error, not "already absent".
    let mut cmd = server_bin();
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_REGION", "us-east-1")
        .args(["delete", "--location", new]);
    let out = run_bin(cmd).await;
    assert!(
        !out.status.success(),
        "an unreachable endpoint reported success"
    );
    assert!(stderr(&out).contains(new), "{}", stderr(&out));
    let out = run(&moto, &["verify", "--input", new]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

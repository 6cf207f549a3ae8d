//! `drasi-store-server delete` against a real S3-compatible server (moto)
//! started on loopback, via the standard `AWS_*` variables: a snapshot
//! written by `backup` is gone afterwards, its neighbour is not, and a
//! second delete of the same snapshot still succeeds.
//!
//! moto comes from `scripts/install-tools.sh` (`.tools/bin/moto_server`);
//! `MOTO_SERVER` may point at another executable. Without it the test is
//! skipped locally but fails under CI (`CI=true`).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{run_bin, server_bin, start_server, stderr};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_executable() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/moto_server");
    if tools.exists() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

fn start_moto() -> Option<Moto> {
    let Some(exe) = moto_executable() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "moto_server not found: run scripts/install-tools.sh or set MOTO_SERVER"
        );
        eprintln!("skipping: moto_server not found (run scripts/install-tools.sh)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

async fn run(moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = server_bin();
    cmd.env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .args(args);
    run_bin(cmd).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn delete_removes_one_snapshot_from_a_local_s3_server() {
    let Some(moto) = start_moto() else { return };
    let r = reqwest::Client::new()
        .put(format!("{}/backups", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());

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

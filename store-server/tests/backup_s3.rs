//! Backup -> verify -> restore through a real S3-compatible server (moto)
//! started on loopback, via the standard `AWS_*` variables.
//!
//! moto comes from `scripts/install-tools.sh` (`.tools/bin/moto_server`);
//! `MOTO_SERVER` may point at another executable. Without it the test is
//! skipped locally but fails under CI (`CI=true`).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TOKEN, run_bin, server_bin, start_server, stderr};

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

fn with_aws_env<'c>(cmd: &'c mut Command, moto: &Moto) -> &'c mut Command {
    cmd.env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
}

async fn run(moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = server_bin();
    with_aws_env(&mut cmd, moto).args(args);
    run_bin(cmd).await
}

#[tokio::test]
async fn backup_and_restore_through_a_local_s3_server() {
    let Some(moto) = start_moto() else { return };
    // moto accepts unsigned bucket creation.
    let r = reqwest::Client::new()
        .put(format!("{}/backups", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());

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
    let token_file = target.path().join("tokens");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let restored = drasi_store_server::start(common::config(&target, &token_file, &[]))
        .await
        .unwrap();
    let r = common::TestServer {
        base: format!("http://{}", restored.local_addr()),
        server: restored,
        dir: tempfile::tempdir().unwrap(),
        token_file,
        client: reqwest::Client::new(),
    };
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

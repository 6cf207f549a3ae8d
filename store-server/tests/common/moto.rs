//! A real S3-compatible server (moto) on loopback for the object-storage
//! tests, and the `AWS_*` environment that points the server binary at it.
//!
//! moto comes from `scripts/install-tools.sh` (`.tools/bin/moto_server`);
//! `MOTO_SERVER` may point at another executable. Without it a test is
//! skipped locally but fails under CI (`CI=true`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{run_bin, server_bin};

pub struct Moto {
    child: Child,
    pub endpoint: String,
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

pub fn start_moto() -> Option<Moto> {
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

pub fn with_aws_env<'c>(cmd: &'c mut Command, moto: &Moto) -> &'c mut Command {
    cmd.env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
}

/// Runs the server binary with `args` against `moto`.
pub async fn run(moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = server_bin();
    with_aws_env(&mut cmd, moto).args(args);
    run_bin(cmd).await
}

/// Creates `bucket` (moto accepts unsigned bucket creation).
pub async fn create_bucket(moto: &Moto, bucket: &str) {
    let r = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
}

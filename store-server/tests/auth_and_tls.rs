//! Token rotation without restart, refusal to start without auth, TLS.

mod common;

use std::time::{Duration, Instant};

use clap::Parser as _;
use common::{TOKEN, start_server};
use drasi_store_server::{Config, start};

async fn status_with(t: &common::TestServer, token: &str) -> u16 {
    t.client
        .get(t.url("/v1/store", "s", None))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_token_file_takes_effect_without_restart() {
    let t = start_server(&[]).await;
    assert_eq!(status_with(&t, TOKEN).await, 200);
    assert_eq!(status_with(&t, "next-token-0123456789").await, 401);

    // Kubernetes swaps Secret files atomically: write aside, rename over.
    let staged = t.dir.path().join("tokens.new");
    std::fs::write(
        &staged,
        "next-token-0123456789\n\n  # a comment is not a token\n  second-token-0123456789  \n",
    )
    .unwrap();
    std::fs::rename(&staged, &t.token_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_with(&t, "next-token-0123456789").await != 200 {
        assert!(Instant::now() < deadline, "rotated token never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_with(&t, "second-token-0123456789").await, 200);
    assert_eq!(
        status_with(&t, "# a comment is not a token").await,
        401,
        "a comment line was accepted as a token"
    );
    assert_eq!(
        status_with(&t, TOKEN).await,
        401,
        "old token still accepted"
    );

    // An emptied file keeps the last good tokens.
    std::fs::write(&t.token_file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status_with(&t, "next-token-0123456789").await, 200);
}

#[tokio::test]
async fn refuses_to_start_without_auth_or_with_empty_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let config = Config::parse_from(["x", "--listen", "127.0.0.1:0", "--data-dir", &data]);
    let err = start(config).await.err().expect("must refuse").to_string();
    assert!(err.contains("--insecure-no-auth"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n  \n").unwrap();
    let config = common::config(&dir, &empty, &[]);
    let err = format!("{:#}", start(config).await.err().expect("must refuse"));
    assert!(err.contains("no tokens"), "{err}");

    let short = dir.path().join("short");
    std::fs::write(&short, "# tokens\nshort-one\n").unwrap();
    let config = common::config(&dir, &short, &[]);
    let err = format!("{:#}", start(config).await.err().expect("must refuse"));
    assert!(err.contains("shorter than the minimum of 16"), "{err}");
    assert!(!err.contains("short-one"), "{err}");

    let config = Config::parse_from([
        "x",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--insecure-no-auth",
    ]);
    let server = start(config).await.unwrap();
    let r = reqwest::get(format!("http://{}/v1/store?store=s", server.local_addr()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();
}

#[test]
fn binary_exits_non_zero_without_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drasi-store-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("DRASI_STORE_AUTH_TOKEN_FILE")
        .env_remove("DRASI_STORE_INSECURE_NO_AUTH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, TOKEN).unwrap();
    let config = common::config(
        &dir,
        &tokens,
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
    );
    let server = start(config).await.unwrap();
    let port = server.local_addr().port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/v1/kv?store=s&key=k");
    let r = client
        .put(&url)
        .bearer_auth(TOKEN)
        .body("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"secret"[..]);

    // Plain HTTP to the TLS port fails rather than being served.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.shutdown().await.unwrap();
}

/// A Secret volume the way the kubelet writes it: the files are symlinks
/// through `..data`, and an update swaps `..data` to a new directory.
struct SecretVolume {
    dir: std::path::PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn new(dir: std::path::PathBuf, cert: &str, key: &str) -> SecretVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = SecretVolume { dir, generation: 0 };
        volume.update(cert, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.join(name)).unwrap();
        }
        volume
    }

    fn update(&mut self, cert: &str, key: &str) {
        self.generation += 1;
        let version = format!("..gen_{}", self.generation);
        let data = self.dir.join(&version);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), cert).unwrap();
        std::fs::write(data.join("tls.key"), key).unwrap();
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// The leaf certificate a brand-new TLS connection is served. A fresh
/// client config each time, so no session is resumed.
async fn served_cert(port: u16, trusted: &[&rcgen::CertifiedKey]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.cert.der().clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let gen_cert = || rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (a, b) = (gen_cert(), gen_cert());
    let mut volume = SecretVolume::new(
        dir.path().join("tls"),
        &a.cert.pem(),
        &a.key_pair.serialize_pem(),
    );
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, TOKEN).unwrap();
    let (cert_file, key_file) = (volume.path("tls.crt"), volume.path("tls.key"));
    let config = common::config(
        &dir,
        &tokens,
        &["--tls-cert-file", &cert_file, "--tls-key-file", &key_file],
    );
    let server = start(config).await.unwrap();
    let port = server.local_addr().port();
    let both = [&a, &b];
    assert_eq!(served_cert(port, &both).await, a.cert.der().to_vec());

    // cert-manager renews: the kubelet swaps in the new pair.
    volume.update(&b.cert.pem(), &b.key_pair.serialize_pem());
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_cert(port, &both).await != b.cert.der().to_vec() {
        assert!(
            Instant::now() < deadline,
            "renewed certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken update (garbage certificate; then a certificate whose key
    // is missing) keeps serving B.
    volume.update(
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
        &b.key_pair.serialize_pem(),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served_cert(port, &both).await, b.cert.der().to_vec());
    volume.update(&a.cert.pem(), "");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served_cert(port, &both).await, b.cert.der().to_vec());
    server.shutdown().await.unwrap();
}

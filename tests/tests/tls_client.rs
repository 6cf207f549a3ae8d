//! The remote provider against a server with `--tls-cert-file` and
//! `--tls-key-file`: trusted through the CA it is given, and refused, with a
//! clear message, without it.

use std::time::Duration;

use drasi_lib::{StateStoreError, StateStoreProvider};
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::test_ca::TestCa;
use tempfile::TempDir;

const TOKEN: &str = "tls-test-token-0123456789";

/// A server certificate for localhost/127.0.0.1 issued by `ca`, the way the
/// operator's TLS Secret is laid out.
fn tls_server(ca: &TestCa) -> (ServerProcess, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.leaf();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, leaf.cert_pem).unwrap();
    std::fs::write(&key_file, leaf.key_pem).unwrap();
    let server = ServerProcess::builder(
        env!("CARGO_BIN_EXE_store-server-under-test"),
        dir.path().join("data"),
    )
    .token(TOKEN)
    .arg("--tls-cert-file")
    .arg(cert_file.to_str().unwrap())
    .arg("--tls-key-file")
    .arg(key_file.to_str().unwrap())
    .start()
    .unwrap();
    (server, dir)
}

fn https_url(server: &ServerProcess) -> String {
    format!("https://127.0.0.1:{}", server.addr().port())
}

async fn round_trip(p: &dyn StateStoreProvider) {
    p.set("tls", "k", b"secret value".to_vec()).await.unwrap();
    assert_eq!(
        p.get("tls", "k").await.unwrap(),
        Some(b"secret value".to_vec())
    );
    p.set_many("tls", &[("a", b"1"), ("b", b"2")])
        .await
        .unwrap();
    assert_eq!(p.key_count("tls").await.unwrap(), 3);
    assert_eq!(p.delete_many("tls", &["a", "b"]).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusts_the_server_through_the_given_ca() {
    let ca = TestCa::new("drasi test CA");
    let (server, dir) = tls_server(&ca);
    let inline = RemoteStateStoreProvider::builder(https_url(&server))
        .token(TOKEN)
        .ca_cert_pem(ca.pem.clone())
        .build()
        .unwrap();
    round_trip(&inline).await;

    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let from_file =
        RemoteStateStoreProvider::builder(format!("https://localhost:{}/", server.addr().port()))
            .token(TOKEN)
            .ca_file(&ca_file)
            .build()
            .unwrap();
    assert_eq!(
        from_file.get("tls", "k").await.unwrap(),
        Some(b"secret value".to_vec())
    );
    from_file.sync().await.unwrap();
}

fn assert_tls_failure(err: &StateStoreError, server: &ServerProcess) {
    let text = err.to_string();
    assert!(matches!(err, StateStoreError::StorageError(_)), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(text.contains(&https_url(server)), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_server_it_cannot_verify() {
    let ca_pair = TestCa::new("drasi test CA");
    let (server, _dir) = tls_server(&ca_pair);

    // No CA: the public roots do not know the operator's CA.
    let no_ca = RemoteStateStoreProvider::builder(https_url(&server))
        .token(TOKEN)
        .max_retries(0)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = no_ca.get("tls", "k").await.unwrap_err();
    assert_tls_failure(&err, &server);

    // Some other CA: still refused.
    let other = TestCa::new("someone else's CA");
    let wrong_ca = RemoteStateStoreProvider::builder(https_url(&server))
        .token(TOKEN)
        .ca_cert_pem(other.pem)
        .max_retries(0)
        .build()
        .unwrap();
    let err = wrong_ca.set("tls", "k", b"v".to_vec()).await.unwrap_err();
    assert_tls_failure(&err, &server);

    // Plain HTTP to a TLS port fails instead of hanging or succeeding.
    let plain = RemoteStateStoreProvider::builder(server.url())
        .token(TOKEN)
        .max_retries(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(plain.get("tls", "k").await.is_err());

    // Nothing was written by the refused attempts.
    let good = RemoteStateStoreProvider::builder(https_url(&server))
        .token(TOKEN)
        .ca_cert_pem(ca_pair.pem)
        .build()
        .unwrap();
    assert_eq!(good.get("tls", "k").await.unwrap(), None);
}

#[test]
fn rejects_a_ca_that_is_not_pem() {
    let err = RemoteStateStoreProvider::builder("https://127.0.0.1:1")
        .ca_cert_pem(b"-----BEGIN NONSENSE-----".to_vec())
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("CA certificate") && text.contains("PEM"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.crt");
    let err = RemoteStateStoreProvider::builder("https://127.0.0.1:1")
        .ca_file(&missing)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

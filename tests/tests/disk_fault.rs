//! A real storage fault: the server process gets a file size limit
//! (`RLIMIT_FSIZE`, set from outside with util-linux `prlimit`, a stand-in
//! for a full disk), so a large write fails with `EFBIG` and redb wedges
//! the database with its sticky I/O error. The server must notice, reopen
//! the database by itself once the limit is lifted, and lose no
//! acknowledged write, across the fault and across a `kill -9` afterwards.
//! The write-ahead log tables live in the same database and must come
//! through the reopen the same way.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use drasi_core::models::SourceChange;
use drasi_lib::StateStoreProvider;
use drasi_lib::wal::{WalProvider, WriteAheadLogConfig};
use drasi_state_store_remote::{RemoteStateStoreProvider, RemoteWalProvider};
use drasi_store_protocol::routes;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::order_change;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "disk-fault-token-0123456789";
const STORE: &str = "fault";
const BIG: usize = 1024 * 1024;
const SOURCE: &str = "fault-src";

/// A WAL client with the source registered, as a restarted app does.
async fn wal_client(url: &str) -> RemoteWalProvider {
    let wal = RemoteWalProvider::builder(url)
        .token(TOKEN)
        .timeout(Duration::from_secs(10))
        .max_retries(0)
        .build()
        .unwrap();
    wal.register(SOURCE, WriteAheadLogConfig::default())
        .await
        .unwrap();
    wal
}

/// Every acknowledged event is in the log at the sequence it was given.
async fn check_wal(wal: &RemoteWalProvider, acked: &[(u64, SourceChange)]) {
    let events = wal.read_from(SOURCE, 1).await.unwrap();
    assert_eq!(events, acked, "acknowledged WAL events lost or moved");
}

fn prlimit_fsize(pid: u32, soft: &str) {
    // Only the soft limit: lowering and raising it needs no privilege.
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:"))
        .status()
        .expect("prlimit (util-linux) must be installed");
    assert!(status.success(), "prlimit --fsize={soft}: failed");
}

async fn probe(url: &str, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn client(url: &str) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(url)
        .token(TOKEN)
        .timeout(Duration::from_secs(10))
        .max_retries(0)
        .build()
        .unwrap()
}

async fn check_all(provider: &RemoteStateStoreProvider, acked: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in acked {
        let got = provider.get(STORE, key).await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some(value.as_slice()),
            "acknowledged write of {key} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_recovered_without_losing_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::builder(SERVER, &data)
        .token(TOKEN)
        .arg("--db-recovery-timeout-ms")
        .arg("2000")
        .start()
        .unwrap();
    let url = server.url();
    let provider = client(&url);
    let mut acked = BTreeMap::new();
    for i in 0..50 {
        let (key, value) = (format!("small-{i}"), format!("v{i}").into_bytes());
        provider.set(STORE, &key, value.clone()).await.unwrap();
        acked.insert(key, value);
    }
    let wal = wal_client(&url).await;
    let mut wal_acked = Vec::new();
    for n in 0..10 {
        let change = order_change(SOURCE, n);
        let seq = wal.append(SOURCE, &change).await.unwrap();
        wal_acked.push((seq, change));
    }

    // The file may not grow any more: the next large commit fails.
    let size = std::fs::metadata(data.join("state.redb")).unwrap().len();
    prlimit_fsize(server.pid(), &size.to_string());
    let mut failed = false;
    for i in 0..8 {
        let (key, value) = (format!("big-{i}"), vec![i as u8; BIG]);
        match provider.set(STORE, &key, value.clone()).await {
            Ok(()) => {
                acked.insert(key, value);
            }
            Err(err) => {
                let text = err.to_string();
                assert!(text.contains("500") || text.contains("503"), "{text}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "no write failed under the file size limit");
    // Still alive: SIGXFSZ is ignored, so the write failed with EFBIG.
    assert_eq!(
        probe(&url, routes::HEALTHZ).await.0,
        200,
        "{}",
        server.log()
    );

    // While the limit holds, the database cannot take large writes; the
    // server keeps reopening it and readiness reports the trouble.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = provider.set(STORE, "big-retry", vec![9; BIG]).await;
        let (status, body) = probe(&url, routes::READYZ).await;
        if status == 503 {
            assert!(
                body.contains("database_reopening") || body.contains("commit_failing"),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "readyz never failed; {body}");
    }
    assert!(
        server.log().contains("closing it to reopen it"),
        "the wedged database was not noticed:\n{}",
        server.log()
    );

    // The cause goes away: the server recovers by itself.
    prlimit_fsize(server.pid(), "unlimited");
    let deadline = Instant::now() + Duration::from_secs(20);
    let value = vec![0xAB; BIG];
    loop {
        if provider.set(STORE, "after", value.clone()).await.is_ok() {
            acked.insert("after".to_string(), value);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not recover after the limit was lifted:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(probe(&url, routes::READYZ).await.0, 200);
    assert_eq!(probe(&url, routes::HEALTHZ).await.0, 200);
    for i in 0..20 {
        let (key, value) = (format!("later-{i}"), format!("l{i}").into_bytes());
        provider.set(STORE, &key, value.clone()).await.unwrap();
        acked.insert(key, value);
    }
    check_all(&provider, &acked).await;
    // The reopened database serves the logs too, and numbering goes on.
    check_wal(&wal, &wal_acked).await;
    for n in 10..15 {
        let change = order_change(SOURCE, n);
        let seq = wal.append(SOURCE, &change).await.unwrap();
        wal_acked.push((seq, change));
    }
    check_wal(&wal, &wal_acked).await;
    let seqs: Vec<u64> = wal_acked.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());

    // And everything acknowledged survives kill -9.
    drop(provider);
    drop(wal);
    server.kill9().unwrap();
    let server = ServerProcess::builder(SERVER, &data)
        .token(TOKEN)
        .start()
        .unwrap();
    check_all(&client(&server.url()), &acked).await;
    check_wal(&wal_client(&server.url()).await, &wal_acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_fails_when_the_database_cannot_be_reopened_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::builder(SERVER, &data)
        .token(TOKEN)
        .arg("--db-recovery-timeout-ms")
        .arg("1000")
        .start()
        .unwrap();
    let url = server.url();
    let provider = client(&url);
    provider.set(STORE, "k", b"v".to_vec()).await.unwrap();
    // Not even the existing file may be written past its first page, so
    // reopening (which must write) keeps failing.
    prlimit_fsize(server.pid(), "4096");
    let _ = provider.set(STORE, "big", vec![1; BIG]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = probe(&url, routes::HEALTHZ).await;
        if status == 503 {
            assert!(body.contains("database_reopen_stuck"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "liveness stayed green on a database that cannot be reopened:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Lifting the limit still heals it in place.
    prlimit_fsize(server.pid(), "unlimited");
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe(&url, routes::HEALTHZ).await.0 != 200 {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        provider.get(STORE, "k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

//! A backup taken while 32 writers run is a consistent cut: after
//! restoring it into a fresh data dir and serving it, every write that was
//! acknowledged before the backup started is there, each writer's writes
//! form a gap-free prefix of what it did, and no `set_many` is torn.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;

const WRITERS: usize = 32;
const BATCH: usize = 4;
const BIN: &str = env!("CARGO_BIN_EXE_store-server-under-test");

fn provider(server: &ServerProcess) -> Arc<RemoteStateStoreProvider> {
    Arc::new(
        RemoteStateStoreProvider::builder(server.url())
            .token(server.token().unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
}

fn single_value(w: usize, i: u64) -> Vec<u8> {
    format!("single-{w}-{i}").into_bytes()
}

fn batch_value(w: usize, i: u64) -> Vec<u8> {
    format!("batch-{w}-{i}").into_bytes()
}

/// Writer `w`'s op `i`: even ops are one `set`, odd ops a `set_many` of
/// [`BATCH`] keys sharing one value.
async fn write_op(p: &RemoteStateStoreProvider, w: usize, i: u64) {
    let store = format!("writer-{w}");
    if i.is_multiple_of(2) {
        p.set(&store, &format!("op{i:06}"), single_value(w, i))
            .await
            .unwrap();
    } else {
        let keys: Vec<String> = (0..BATCH).map(|j| format!("op{i:06}-{j}")).collect();
        let value = batch_value(w, i);
        let entries: Vec<(&str, &[u8])> = keys
            .iter()
            .map(|k| (k.as_str(), value.as_slice()))
            .collect();
        p.set_many(&store, &entries).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_32_writers_restores_a_consistent_cut() {
    let work = tempfile::tempdir().unwrap();
    let source = ServerProcess::builder(BIN, work.path().join("source"))
        .token("consistency-token")
        .start()
        .unwrap();
    let client = provider(&source);
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (p, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded: the test stops the writers long before this.
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                write_op(&p, w, i).await;
                i += 1;
                acked[w].store(i, Ordering::Release);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.iter().any(|a| a.load(Ordering::Acquire) < 10) {
        assert!(Instant::now() < deadline, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything counted here was acknowledged before the backup started.
    let floor: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
    let snapshot = work.path().join("live.snap");
    let token_file = source.data_dir().with_extension("token");
    let args = [
        "backup".to_string(),
        "--url".into(),
        source.url(),
        "--token-file".into(),
        token_file.display().to_string(),
        "--output".into(),
        snapshot.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(args).output())
        .await
        .unwrap()
        .unwrap();
    let after: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let restored_dir = work.path().join("restored");
    let out = Command::new(BIN)
        .args(["restore", "--input"])
        .arg(&snapshot)
        .arg("--data-dir")
        .arg(&restored_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(source);
    let restored = ServerProcess::builder(BIN, &restored_dir)
        .token("consistency-token")
        .start()
        .unwrap();
    let p = provider(&restored);

    let mut writes_during_backup = 0;
    for w in 0..WRITERS {
        let store = format!("writer-{w}");
        let keys: BTreeSet<String> = p.list_keys(&store).await.unwrap().into_iter().collect();
        let ops: BTreeSet<u64> = keys.iter().map(|k| k[2..8].parse().unwrap()).collect();
        let n = ops.len() as u64;
        assert!(
            ops.iter().copied().eq(0..n),
            "writer {w}: the snapshot holds a non-prefix set of its ops"
        );
        assert!(
            n >= floor[w],
            "writer {w}: {} ops were acknowledged before the backup, only {n} restored",
            floor[w]
        );
        assert!(
            n <= after[w] + 1,
            "writer {w}: more ops restored than were ever sent"
        );
        writes_during_backup += after[w] - floor[w];
        for i in 0..n {
            if i.is_multiple_of(2) {
                let got = p.get(&store, &format!("op{i:06}")).await.unwrap();
                assert_eq!(got, Some(single_value(w, i)), "writer {w} op {i}");
            } else {
                let batch: Vec<String> = (0..BATCH).map(|j| format!("op{i:06}-{j}")).collect();
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                let got = p.get_many(&store, &refs).await.unwrap();
                assert_eq!(got.len(), BATCH, "writer {w}: set_many op {i} is torn");
                assert!(got.values().all(|v| *v == batch_value(w, i)));
            }
        }
    }
    // The point of the test is a snapshot of a moving target.
    eprintln!("writes acknowledged while the backup ran: {writes_during_backup}");
}

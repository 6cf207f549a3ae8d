//! DrasiLib's bridge for dynamically loaded plugins polls each state store
//! call on a brand-new current-thread runtime and drops it afterwards. A
//! client whose pooled connections are driven by the caller's runtime breaks
//! there ("dispatch task is gone"); the remote provider must not. Callers on
//! multi-thread runtimes send their requests over connections of their own
//! runtime: those runtimes may end too, while others keep using the same
//! provider.

use std::sync::Arc;
use std::time::Duration;

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;
use tempfile::TempDir;

fn server() -> (ServerProcess, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::builder(
        env!("CARGO_BIN_EXE_store-server-under-test"),
        dir.path().join("data"),
    )
    .token("fresh-runtime-token")
    .arg("--durability")
    .arg("eventual")
    .start()
    .unwrap();
    (server, dir)
}

fn provider(server: &ServerProcess) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(server.url())
        .token(server.token().unwrap())
        .timeout(Duration::from_secs(10))
        // Retries would hide exactly the failures this test looks for.
        .max_retries(0)
        .build()
        .unwrap()
}

/// Writes `n` to `store`/`key` and checks that it reads straight back.
async fn set_and_read_back(p: &dyn StateStoreProvider, store: &str, key: &str, n: u32) {
    p.set(store, key, n.to_be_bytes().to_vec()).await.unwrap();
    assert_eq!(
        p.get(store, key).await.unwrap(),
        Some(n.to_be_bytes().to_vec()),
        "{store}/{key}"
    );
}

fn fresh_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn thousands_of_calls_each_on_a_fresh_runtime() {
    let (server, _dir) = server();
    // Built inside a runtime that is gone before the first call.
    let p = fresh_runtime().block_on(async { provider(&server) });
    for i in 0..3000u32 {
        let rt = fresh_runtime();
        // Groups of four calls on one key: set, overwrite, contains, get.
        let key = format!("k{}", (i / 4) % 50);
        let value = i.to_be_bytes().to_vec();
        rt.block_on(async {
            match i % 4 {
                0 | 1 => p.set("fresh", &key, value.clone()).await.unwrap(),
                2 => assert!(p.contains_key("fresh", &key).await.unwrap(), "call {i}"),
                _ => {
                    let got = p.get("fresh", &key).await.unwrap().unwrap();
                    assert_eq!(got, (i - 2).to_be_bytes(), "call {i}");
                }
            }
        });
        // The runtime, and anything it owned, dies here.
        drop(rt);
    }
    let count = fresh_runtime().block_on(p.key_count("fresh")).unwrap();
    assert_eq!(count, 50);
}

#[test]
fn fresh_runtimes_on_many_threads_share_one_provider() {
    let (server, _dir) = server();
    let p = Arc::new(provider(&server));
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    let store = format!("thread-{t}");
                    fresh_runtime().block_on(set_and_read_back(&*p, &store, "k", i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_on_a_multi_thread_runtime() {
    let (server, _dir) = server();
    let p: Arc<dyn StateStoreProvider> = Arc::new(provider(&server));
    let tasks: Vec<_> = (0..64u32)
        .map(|c| {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                for i in 0..20u32 {
                    let key = format!("caller-{c}");
                    set_and_read_back(&*p, "multi", &key, i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(p.key_count("multi").await.unwrap(), 64);
}

#[tokio::test(flavor = "current_thread")]
async fn calls_from_a_current_thread_runtime_and_drop_inside_it() {
    let (server, _dir) = server();
    let p = provider(&server);
    for i in 0..200u32 {
        p.set("current", "k", i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    assert_eq!(
        p.get("current", "k").await.unwrap(),
        Some(199u32.to_be_bytes().to_vec())
    );
    let clone = p.clone();
    drop(p);
    clone.sync().await.unwrap();
    // The last clone is dropped inside this async context: its runtime is
    // shut down on the provider's own thread, so this must not panic.
    drop(clone);
    // A new provider works after the old one's runtime is gone.
    let again = provider(&server);
    assert_eq!(
        again.get("current", "k").await.unwrap(),
        Some(199u32.to_be_bytes().to_vec())
    );
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn short_lived_multi_thread_runtimes_while_a_long_lived_one_keeps_calling() {
    let (server, _dir) = server();
    let p = Arc::new(provider(&server));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A long-lived runtime keeps calling the whole time.
    let steady = {
        let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
        std::thread::spawn(move || {
            multi_thread_runtime().block_on(async {
                let mut calls = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || calls < 100 {
                    set_and_read_back(&*p, "steady", "k", calls).await;
                    calls += 1;
                }
                calls
            })
        })
    };
    // Meanwhile runtimes come and go, each opening (and taking along) its
    // own connections; runtime ids are reused after a runtime ends.
    for i in 0..200u32 {
        let rt = multi_thread_runtime();
        rt.block_on(set_and_read_back(&*p, "short", &format!("k{}", i % 10), i));
        drop(rt);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(steady.join().unwrap() >= 100);
    let count = fresh_runtime().block_on(p.key_count("short")).unwrap();
    assert_eq!(count, 10);
}

#[test]
fn a_multi_thread_runtime_without_io_or_timers_still_gets_answers() {
    let (server, _dir) = server();
    let p = provider(&server);
    // No enable_io/enable_time: the request cannot run here, so it runs on
    // the provider's runtime.
    let bare = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    bare.block_on(async {
        p.set("bare", "k", b"v".to_vec()).await.unwrap();
        assert_eq!(p.get("bare", "k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(p.key_count("bare").await.unwrap(), 1);
    });
}

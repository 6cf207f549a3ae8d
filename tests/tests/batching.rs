//! Opportunistic batching in `RemoteStateStoreProvider`, against a real
//! server: calls that pile up behind requests in flight share `POST
//! /v1/batch` requests, and each still gets exactly its own answer, its own
//! error, and its own guarantee.

use std::sync::Arc;
use std::time::Duration;

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::bench::server_metrics::MetricsProbe;
use tempfile::TempDir;

const TOKEN: &str = "batching-token-0123456789";
const MAX_KEY_BYTES: usize = 64;
const MAX_VALUE_BYTES: usize = 1024;

fn server() -> (ServerProcess, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::builder(
        env!("CARGO_BIN_EXE_store-server-under-test"),
        dir.path().join("data"),
    )
    .token(TOKEN)
    .arg("--max-key-bytes")
    .arg(MAX_KEY_BYTES.to_string())
    .arg("--max-value-bytes")
    .arg(MAX_VALUE_BYTES.to_string())
    .start()
    .unwrap();
    (server, dir)
}

fn provider(server: &ServerProcess) -> Arc<RemoteStateStoreProvider> {
    Arc::new(
        RemoteStateStoreProvider::builder(server.url())
            .token(TOKEN)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    )
}

async fn batch_requests(server: &ServerProcess) -> f64 {
    MetricsProbe::new(&server.url(), TOKEN)
        .unwrap()
        .requests("batch")
        .await
        .unwrap()
}

/// 64 tasks on one provider, each running set/get/contains/delete cycles on
/// keys of its own: every answer must be the one a lone caller would get,
/// and the server must have seen batch requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_batches_and_get_their_own_answers() {
    let (server, _dir) = server();
    let p = provider(&server);
    let mut tasks = Vec::new();
    for task in 0..64u32 {
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            let store = format!("batch/{}", task % 4);
            for round in 0..12u32 {
                let key = format!("t{task} k{}", round % 3);
                let v1 = format!("{task}-{round}-a").into_bytes();
                let v2 = format!("{task}-{round}-b").into_bytes();
                p.set(&store, &key, v1.clone()).await.unwrap();
                assert_eq!(p.get(&store, &key).await.unwrap(), Some(v1));
                assert!(p.contains_key(&store, &key).await.unwrap());
                p.set(&store, &key, v2.clone()).await.unwrap();
                assert_eq!(p.get(&store, &key).await.unwrap(), Some(v2));
                assert!(p.delete(&store, &key).await.unwrap());
                assert!(!p.delete(&store, &key).await.unwrap());
                assert_eq!(p.get(&store, &key).await.unwrap(), None);
                assert!(!p.contains_key(&store, &key).await.unwrap());
                p.set(&store, &key, format!("{task}-final").into_bytes())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for task in 0..64u32 {
        let store = format!("batch/{}", task % 4);
        for k in 0..3 {
            let key = format!("t{task} k{k}");
            assert_eq!(
                p.get(&store, &key).await.unwrap(),
                Some(format!("{task}-final").into_bytes()),
                "{store}/{key}"
            );
        }
    }
    let total: usize = total_keys(&*p).await;
    assert_eq!(total, 64 * 3);
    assert!(
        batch_requests(&server).await > 0.0,
        "64 concurrent callers never produced a batch request"
    );
}

async fn total_keys(p: &dyn StateStoreProvider) -> usize {
    let mut total = 0;
    for s in 0..4 {
        total += p.key_count(&format!("batch/{s}")).await.unwrap();
    }
    total
}

/// Calls with a key or value over the server's limits, queued together with
/// good calls: each bad call fails with its own clear error and changes
/// nothing, every good call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_only_its_own_call() {
    let (server, _dir) = server();
    let p = provider(&server);
    let long_key = "k".repeat(MAX_KEY_BYTES + 36);
    let big_value = vec![7u8; MAX_VALUE_BYTES + 1];
    let mut calls = Vec::new();
    for i in 0..48usize {
        let p = Arc::clone(&p);
        let long_key = long_key.clone();
        let big_value = big_value.clone();
        calls.push(async move {
            let key = format!("good-{i}");
            match i % 4 {
                0 => (i, p.set("limits", &long_key, b"v".to_vec()).await),
                1 => (i, p.set("limits", &key, big_value).await),
                2 => (i, p.get("limits", &long_key).await.map(drop)),
                _ => (i, p.set("limits", &key, key.clone().into_bytes()).await),
            }
        });
    }
    let results = futures::future::join_all(calls).await;
    for (i, result) in results {
        match i % 4 {
            0 | 2 => {
                let err = result
                    .expect_err("a key over the limit must fail")
                    .to_string();
                assert!(
                    err.contains("key_too_large")
                        && err.contains(&format!("limit of {MAX_KEY_BYTES}"))
                        && err.contains("\"limits\""),
                    "call {i}: {err}"
                );
            }
            1 => {
                let err = result
                    .expect_err("a value over the limit must fail")
                    .to_string();
                assert!(
                    err.contains("value_too_large")
                        && err.contains(&format!("limit of {MAX_VALUE_BYTES}")),
                    "call {i}: {err}"
                );
            }
            _ => result.unwrap_or_else(|e| panic!("call {i}: {e}")),
        }
    }
    // Nothing of the rejected calls was applied.
    for i in 0..48usize {
        let key = format!("good-{i}");
        let expected = (i % 4 == 3).then(|| key.clone().into_bytes());
        assert_eq!(p.get("limits", &key).await.unwrap(), expected, "{key}");
    }
    assert_eq!(p.key_count("limits").await.unwrap(), 12);
    assert!(
        batch_requests(&server).await > 0.0,
        "48 concurrent calls never produced a batch request"
    );
}

/// The batch route itself rejects a malformed frame whole: nothing in it
/// is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batch_frames_change_nothing() {
    use drasi_store_protocol::{MixedKind, MixedOp, encode_mixed_ops, routes};
    let (server, _dir) = server();
    let ops = [
        MixedOp {
            kind: MixedKind::Set,
            store: "frames",
            key: "a",
            value: b"1",
        },
        MixedOp {
            kind: MixedKind::Set,
            store: "frames",
            key: "b",
            value: b"2",
        },
    ];
    let good = encode_mixed_ops(&ops);
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        client
            .post(format!("{}{}", server.url(), routes::BATCH))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
    };
    let truncated = good[..good.len() - 1].to_vec();
    let answer = post(truncated).await.unwrap();
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], "malformed_body", "{body}");
    let mut unknown_op = good.clone();
    unknown_op[4] = 42;
    assert_eq!(post(unknown_op).await.unwrap().status(), 400);
    let p = provider(&server);
    assert!(!p.store_exists("frames").await.unwrap());
    // The well-formed frame applies both calls.
    let answer = post(good).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(p.key_count("frames").await.unwrap(), 2);
}

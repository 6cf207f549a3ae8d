//! `/healthz`, `/readyz` and `/metrics` need no token (the kubelet and
//! Prometheus call them, and a NetworkPolicy cannot tell paths on port 7070
//! apart), so they must not carry anything sensitive: no token (the valid
//! one or one a caller tried), no store id, key or value, and no data path.
//! Checked against the real server binary after authorized and refused
//! traffic of every kind.

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "tok-6f1d0c2a9b8e47d3a5c4b3a2f1e0d9c8";
const WRONG_TOKEN: &str = "tok-wrong-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const STORE_ID: &str = "tenant-secret-store-7731";
const KEY: &str = "customer-key-4452";
const VALUE: &str = "value-payload-9981";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answers_hold_no_token_store_id_key_value_or_path() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data-dir-marker-5521");
    let server = ServerProcess::builder(BIN, &data_dir)
        .token(TOKEN)
        .start()
        .unwrap();
    let url = server.url();

    let provider = RemoteStateStoreProvider::builder(url.clone())
        .token(TOKEN)
        .build()
        .unwrap();
    provider
        .set(STORE_ID, KEY, VALUE.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(
        provider.get(STORE_ID, KEY).await.unwrap(),
        Some(VALUE.as_bytes().to_vec())
    );
    provider.sync().await.unwrap();
    // Refused and failing requests are counted too: they must not drag
    // what the caller sent into the answers.
    let http = reqwest::Client::new();
    let refused = http
        .get(format!("{url}/v1/kv?store={STORE_ID}&key={KEY}"))
        .bearer_auth(WRONG_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let unknown = http
        .get(format!("{url}/v1/{STORE_ID}/{KEY}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let too_long = http
        .put(format!(
            "{url}/v1/kv?store={STORE_ID}&key={}",
            "k".repeat(5000)
        ))
        .bearer_auth(TOKEN)
        .body(VALUE)
        .send()
        .await
        .unwrap();
    assert!(too_long.status().is_client_error());

    let secrets = [
        TOKEN,
        WRONG_TOKEN,
        STORE_ID,
        KEY,
        VALUE,
        "data-dir-marker-5521",
    ];
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} without a token");
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap();
        for secret in secrets {
            assert!(
                !body.contains(secret) && !headers.contains(secret),
                "{path} reveals {secret:?}:\n{headers}\n{body}"
            );
        }
        if path == "/metrics" {
            // The traffic above is there, just not its content.
            assert!(body.contains("drasi_store_requests_total"), "{body}");
            assert!(body.contains("status=\"401\""), "{body}");
        }
    }
    // Nor does the server's log name a token or a value.
    let log = server.log();
    for secret in [TOKEN, WRONG_TOKEN, VALUE] {
        assert!(!log.contains(secret), "the log reveals {secret:?}:\n{log}");
    }
}

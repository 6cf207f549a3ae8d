//! The server advertises its durability mode (`GET /v1/info` and a header
//! on every answer), and the client's `is_durable()` reports it truthfully,
//! so DrasiLib refuses durable reactions on an `--durability eventual`
//! store.

use std::net::TcpListener;
use std::time::Duration;

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_protocol::routes;
use drasi_store_tests::ServerProcess;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "durability-token-0123456789";

fn client(url: &str) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(url)
        .token(TOKEN)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_are_advertised_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, durable) in [("immediate", true), ("eventual", false)] {
        let server = ServerProcess::builder(SERVER, dir.path().join(mode))
            .token(TOKEN)
            .arg("--durability")
            .arg(mode)
            .start()
            .unwrap();
        let http = reqwest::Client::new();
        let info = http
            .get(format!("{}{}", server.url(), routes::INFO))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(info.status(), 200);
        assert_eq!(info.headers()[routes::DURABILITY_HEADER], mode);
        let body: serde_json::Value = serde_json::from_slice(&info.bytes().await.unwrap()).unwrap();
        assert_eq!(body["durability"], mode, "{body}");
        // The header is on every answer, public ones and errors included.
        let health = http
            .get(format!("{}{}", server.url(), routes::HEALTHZ))
            .send()
            .await
            .unwrap();
        assert_eq!(health.headers()[routes::DURABILITY_HEADER], mode);

        // A fresh client, asked before any other call.
        let provider = client(&server.url());
        assert_eq!(provider.is_durable(), durable, "{mode}");
        // And one that learnt it from an ordinary call's header.
        let provider = client(&server.url());
        provider.set("s", "k", b"v".to_vec()).await.unwrap();
        assert_eq!(provider.is_durable(), durable, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_not_reported_durable() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let provider = RemoteStateStoreProvider::builder(format!("http://127.0.0.1:{port}"))
        .token(TOKEN)
        .timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .max_retries(0)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    assert!(!provider.is_durable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

//! No client error message reveals a key or a token, whatever failed:
//! errors end up in logs and traces, and keys can carry business
//! identifiers. They do name the store (a plugin id, chosen by the app's
//! author), which says where to look. reqwest appends `for url (...)`, query
//! string included, to its own messages, so every kind of failure is
//! provoked for real: a refused connection, a server that never answers, and
//! HTTP error answers from the real server.

use std::fmt::{Debug, Display};
use std::net::TcpListener;
use std::time::Duration;

use drasi_lib::wal::{WalError, WalProvider, WriteAheadLogConfig};
use drasi_lib::{StateStoreError, StateStoreProvider};
use drasi_state_store_remote::{RemoteStateStoreProvider, RemoteWalProvider};
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::order_change;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const STORE: &str = "tenant-4711-secret-store";
const KEY: &str = "customer-0815-secret-key";
const TOKENS: [&str; 2] = ["a-token-of-16-bytes!", "the-wrong-token-0123456789"];
const RIGHT_TOKEN: &str = "the-right-token-0123456789";

/// `err` names `names` in its message, and neither its message nor its
/// Debug form holds any of `hidden`.
fn assert_hides(what: &str, err: &(impl Display + Debug), names: &str, hidden: &[&str]) {
    let display = err.to_string();
    let debug = format!("{err:?}");
    assert!(
        display.contains(names),
        "{what}: error does not name {names}:\n  {display}"
    );
    for needle in hidden {
        assert!(
            !display.contains(needle) && !debug.contains(needle),
            "{what}: error reveals {needle:?}:\n  {display}\n  {debug}"
        );
    }
}

fn assert_private(what: &str, err: &StateStoreError) {
    // The key also as its percent-encoded query form would show it.
    let hidden = [KEY, "customer-0815", TOKENS[0], TOKENS[1]];
    assert_hides(what, err, &format!("{STORE:?}"), &hidden);
}

/// Every call in `results` failed, with an error `check` accepts.
fn assert_each_failed<E>(
    what: &str,
    results: impl IntoIterator<Item = (&'static str, Option<E>)>,
    check: fn(&str, &E),
) {
    for (op, err) in results {
        let err = err.unwrap_or_else(|| panic!("{what}: {op} unexpectedly succeeded"));
        check(&format!("{what} / {op}"), &err);
    }
}

/// The URL of a loopback port nothing listens on (any more).
fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Accepts connections (the kernel completes the handshake) and never
/// answers, so every call runs into the client's timeout; silent only while
/// the listener lives.
fn silent_url() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// The real server, taking `RIGHT_TOKEN` and values of at most 8 bytes.
fn start_server(dir: &tempfile::TempDir) -> ServerProcess {
    ServerProcess::builder(SERVER, dir.path().join("data"))
        .token(RIGHT_TOKEN)
        .arg("--max-value-bytes")
        .arg("8")
        .start()
        .unwrap()
}

fn client(url: &str, token: &str) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(url)
        .token(token)
        .timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .max_retries(0)
        .build()
        .expect("client")
}

/// Every trait method that names a store (and a key where it takes one).
async fn every_error(what: &str, provider: &RemoteStateStoreProvider, value: Vec<u8>) {
    let keys = [KEY];
    let results = [
        ("get", provider.get(STORE, KEY).await.err()),
        ("set", provider.set(STORE, KEY, value.clone()).await.err()),
        ("delete", provider.delete(STORE, KEY).await.err()),
        (
            "contains_key",
            provider.contains_key(STORE, KEY).await.err(),
        ),
        ("get_many", provider.get_many(STORE, &keys).await.err()),
        (
            "set_many",
            provider
                .set_many(STORE, &[(KEY, value.as_slice())])
                .await
                .err(),
        ),
        (
            "delete_many",
            provider.delete_many(STORE, &keys).await.err(),
        ),
        ("clear_store", provider.clear_store(STORE).await.err()),
        ("list_keys", provider.list_keys(STORE).await.err()),
        ("store_exists", provider.store_exists(STORE).await.err()),
        ("key_count", provider.key_count(STORE).await.err()),
    ];
    assert_each_failed(what, results, assert_private);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_do_not_reveal_key_or_token() {
    let provider = client(&refused_url(), TOKENS[0]);
    every_error("connection refused", &provider, b"v".to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_do_not_reveal_key_or_token() {
    let (silent, url) = silent_url();
    let provider = client(&url, TOKENS[0]);
    every_error("timeout", &provider, b"v".to_vec()).await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_do_not_reveal_key_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir);
    // 401 on every call.
    let wrong = client(&server.url(), TOKENS[1]);
    every_error("401", &wrong, b"v".to_vec()).await;

    // 413 from the server's limits, on the calls that carry a value.
    let right = client(&server.url(), RIGHT_TOKEN);
    let big = vec![7u8; 64];
    let err = right.set(STORE, KEY, big.clone()).await.unwrap_err();
    assert_private("413 set", &err);
    let err = right
        .set_many(STORE, &[(KEY, big.as_slice())])
        .await
        .unwrap_err();
    assert_private("413 set_many", &err);
}

/// The WAL provider's errors name the source (a plugin id, like a store)
/// but never a token or the request's query string (which holds the
/// source and the append id).
fn assert_wal_private(what: &str, err: &WalError) {
    let hidden = [TOKENS[0], TOKENS[1], "source=", "appendId", "?"];
    assert_hides(what, err, SOURCE, &hidden);
}

const SOURCE: &str = "tenant-4711-source";

fn wal_client(url: &str, token: &str) -> RemoteWalProvider {
    RemoteWalProvider::builder(url)
        .token(token)
        .timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .max_retries(0)
        .build()
        .expect("WAL client")
}

/// The calls that reach the server without a registration first.
async fn every_wal_error(what: &str, wal: &RemoteWalProvider) {
    let register = wal.register(SOURCE, WriteAheadLogConfig::default()).await;
    let delete = wal.delete_wal(SOURCE).await;
    let results = [("register", register.err()), ("delete_wal", delete.err())];
    assert_each_failed(what, results, assert_wal_private);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_errors_do_not_reveal_token_or_query() {
    let refused = wal_client(&refused_url(), TOKENS[0]);
    every_wal_error("connection refused", &refused).await;

    let (silent, url) = silent_url();
    every_wal_error("timeout", &wal_client(&url, TOKENS[0])).await;
    drop(silent);

    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir);
    every_wal_error("401", &wal_client(&server.url(), TOKENS[1])).await;

    // 413 on an append, which carries an append id in its query.
    let right = wal_client(&server.url(), RIGHT_TOKEN);
    right
        .register(SOURCE, WriteAheadLogConfig::default())
        .await
        .unwrap();
    let err = right
        .append(SOURCE, &order_change(SOURCE, 1))
        .await
        .unwrap_err();
    assert_wal_private("413 append", &err);
}

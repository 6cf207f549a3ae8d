//! Client behaviour that a real server cannot be made to show on demand:
//! retries, timeouts, token rotation, error answers. A small axum app plays
//! the server; the store name in the query selects its behaviour.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use drasi_lib::{StateStoreError, StateStoreProvider};
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_protocol::{DeleteResponse, ErrorBody, ErrorCode, parse_query, routes};

const TOKEN: &str = "tok-3f9a1c";

#[derive(Default)]
struct Fake {
    /// (method, store) -> requests seen
    hits: Mutex<HashMap<(Method, String), u32>>,
    auth: Mutex<Vec<Option<String>>>,
    /// The token the fake accepts; `None` accepts anything.
    accept: Mutex<Option<String>>,
    values: Mutex<HashMap<(String, String), Vec<u8>>>,
}

impl Fake {
    fn hits(&self, method: Method, store: &str) -> u32 {
        *self
            .hits
            .lock()
            .unwrap()
            .get(&(method, store.to_string()))
            .unwrap_or(&0)
    }
}

fn error(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap();
    let body = serde_json::to_vec(&ErrorBody {
        code,
        message: message.to_string(),
    })
    .unwrap();
    (status, [(header::CONTENT_TYPE, routes::JSON)], body).into_response()
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string());
    // The client also asks `/v1/info` in the background (for `is_durable`);
    // only the data calls the tests make are recorded.
    if uri.path() == routes::KV {
        fake.auth.lock().unwrap().push(auth.clone());
    }
    let expected = fake.accept.lock().unwrap().clone();
    if let Some(expected) = expected
        && auth.as_deref() != Some(&format!("Bearer {expected}"))
    {
        return error(ErrorCode::Unauthorized, "bad token");
    }
    if uri.path() != routes::KV {
        return error(ErrorCode::RouteNotFound, "no such route");
    }
    let target = parse_query(uri.query(), true).unwrap();
    let (store, key) = (target.store, target.key.unwrap());
    let n = {
        let mut hits = fake.hits.lock().unwrap();
        let n = hits.entry((method.clone(), store.clone())).or_insert(0);
        *n += 1;
        *n
    };
    match store.as_str() {
        "flaky" if n <= 2 => return error(ErrorCode::Unavailable, "shutting down"),
        "down" => return error(ErrorCode::Unavailable, "shutting down"),
        "slow" => tokio::time::sleep(Duration::from_secs(2)).await,
        "limited" => return error(ErrorCode::KeyTooLarge, "key is 5000 bytes, limit 4096"),
        "broken" => return error(ErrorCode::StorageError, "disk full"),
        "html" => return (StatusCode::NOT_FOUND, "<html>nginx</html>").into_response(),
        _ => {}
    }
    let mut values = fake.values.lock().unwrap();
    let slot = (store, key);
    match method {
        Method::PUT => {
            values.insert(slot, body.to_vec());
            StatusCode::NO_CONTENT.into_response()
        }
        Method::GET | Method::HEAD => match values.get(&slot) {
            Some(v) => (StatusCode::OK, v.clone()).into_response(),
            None => (StatusCode::NOT_FOUND, [(routes::KEY_NOT_FOUND_HEADER, "1")]).into_response(),
        },
        Method::DELETE => {
            let existed = values.remove(&slot).is_some();
            axum::Json(DeleteResponse { existed }).into_response()
        }
        _ => error(ErrorCode::MethodNotAllowed, "method"),
    }
}

async fn start_fake() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let app = Router::new().fallback(handle).with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, addr)
}

fn provider(addr: SocketAddr) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(format!("http://{addr}"))
        .token(TOKEN)
        .timeout(Duration::from_millis(500))
        .max_retries(3)
        .build()
        .unwrap()
}

fn assert_names_context(err: &StateStoreError, op: &str, store: &str, addr: SocketAddr) {
    let text = err.to_string();
    assert!(text.contains(op), "{op} missing: {text}");
    assert!(
        text.contains(&format!("{store:?}")),
        "{store} missing: {text}"
    );
    assert!(text.contains(&addr.to_string()), "url missing: {text}");
    assert!(!text.contains(TOKEN), "token leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_absent_key() {
    let (fake, addr) = start_fake().await;
    let p = provider(addr);
    assert_eq!(p.get("s", "k").await.unwrap(), None);
    assert!(!p.contains_key("s", "k").await.unwrap());
    p.set("s", "k", b"v".to_vec()).await.unwrap();
    assert_eq!(p.get("s", "k").await.unwrap(), Some(b"v".to_vec()));
    assert!(p.contains_key("s", "k").await.unwrap());
    assert!(p.delete("s", "k").await.unwrap());
    assert!(!p.delete("s", "k").await.unwrap());
    let auth = fake.auth.lock().unwrap();
    assert!(
        auth.iter()
            .all(|a| a.as_deref() == Some(&*format!("Bearer {TOKEN}")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_until_success() {
    let (fake, addr) = start_fake().await;
    let p = provider(addr);
    p.set("flaky", "k", b"v".to_vec()).await.unwrap();
    assert_eq!(fake.hits(Method::PUT, "flaky"), 3);
    // 503 `unavailable` means nothing was applied: safe even for deletes.
    assert!(p.delete("flaky", "k").await.unwrap());
    assert_eq!(fake.hits(Method::DELETE, "flaky"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded() {
    let (fake, addr) = start_fake().await;
    let p = RemoteStateStoreProvider::builder(format!("http://{addr}"))
        .token(TOKEN)
        .max_retries(2)
        .build()
        .unwrap();
    let err = p.set("down", "k", b"v".to_vec()).await.unwrap_err();
    assert!(matches!(err, StateStoreError::StorageError(_)), "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert_names_context(&err, "set", "down", addr);
    assert_eq!(fake.hits(Method::PUT, "down"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_retry_reads_but_never_deletes() {
    let (fake, addr) = start_fake().await;
    let p = RemoteStateStoreProvider::builder(format!("http://{addr}"))
        .token(TOKEN)
        .timeout(Duration::from_millis(200))
        .max_retries(2)
        .build()
        .unwrap();
    let err = p.delete("slow", "k").await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_names_context(&err, "delete", "slow", addr);
    let err = p.get("slow", "k").await.unwrap_err();
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    // The handler counts a request when it starts, so every attempt that
    // reached the fake is visible by now.
    assert_eq!(fake.hits(Method::DELETE, "slow"), 1);
    assert_eq!(fake.hits(Method::GET, "slow"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried_and_are_explained() {
    let (fake, addr) = start_fake().await;
    let p = provider(addr);
    let err = p.set("limited", "k", b"v".to_vec()).await.unwrap_err();
    assert!(matches!(err, StateStoreError::Other(_)), "{err}");
    assert!(err.to_string().contains("too large"), "{err}");
    assert!(err.to_string().contains("key_too_large"), "{err}");
    assert_names_context(&err, "set", "limited", addr);
    assert_eq!(fake.hits(Method::PUT, "limited"), 1);

    let err = p.get("broken", "k").await.unwrap_err();
    assert!(matches!(err, StateStoreError::StorageError(_)), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(fake.hits(Method::GET, "broken"), 1);

    // A 404 without the key-not-found header is not an absent key.
    let err = p.get("html", "k").await.unwrap_err();
    assert!(err.to_string().contains("does not serve"), "{err}");
    let err = p.sync().await.unwrap_err();
    assert!(err.to_string().contains("sync at http://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_retried_and_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = RemoteStateStoreProvider::builder(format!("http://{addr}"))
        .token(TOKEN)
        .max_retries(1)
        .build()
        .unwrap();
    let err = p.clear_store("gone").await.unwrap_err();
    assert!(matches!(err, StateStoreError::StorageError(_)), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(err.to_string().contains("after 2 attempts"), "{err}");
    assert_names_context(&err, "clear_store", "gone", addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_rotation_takes_effect() {
    let (fake, addr) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "one\n").unwrap();
    let p = RemoteStateStoreProvider::builder(format!("http://{addr}"))
        .token_file(&path)
        .build()
        .unwrap();
    p.set("s", "k", b"1".to_vec()).await.unwrap();

    // Rotated file, server not yet: picked up within the refresh interval.
    std::fs::write(&path, "two\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    p.set("s", "k", b"2".to_vec()).await.unwrap();

    // Server rotated first and rejects the cached token: the 401 makes the
    // client re-read the file at once and retry.
    *fake.accept.lock().unwrap() = Some("three".to_string());
    std::fs::write(&path, "three\n").unwrap();
    p.set("s", "k", b"3".to_vec()).await.unwrap();

    let auth: Vec<String> = fake
        .auth
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.clone().unwrap())
        .collect();
    assert_eq!(
        auth,
        ["Bearer one", "Bearer two", "Bearer two", "Bearer three"]
    );

    // A token nobody accepts: 401 is final and explained.
    *fake.accept.lock().unwrap() = Some("four".to_string());
    let err = p.get("s", "k").await.unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
    assert!(!err.to_string().contains("three"), "{err}");
}

#[test]
fn works_from_short_lived_runtimes_and_drops_inside_async() {
    let server = tokio::runtime::Runtime::new().unwrap();
    let (_fake, addr) = server.block_on(start_fake());
    let p = provider(addr);
    for i in 0..200u32 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            p.set("s", "k", i.to_be_bytes().to_vec()).await.unwrap();
            assert_eq!(
                p.get("s", "k").await.unwrap(),
                Some(i.to_be_bytes().to_vec())
            );
        });
    }
    // The last clone dropped inside an async context must not panic (a
    // tokio Runtime dropped there would).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let clone = p.clone();
        drop(p);
        clone.sync().await.unwrap_err();
        drop(clone);
    });
}

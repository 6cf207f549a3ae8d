//! Bad input: each request gets the documented status and code, changes
//! nothing, and the server keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{TOKEN, TestServer, expect_error, start_server};
use drasi_store_protocol::{encode_entries, encode_keys};
use reqwest::Method;

const LIMITS: [&str; 10] = [
    "--max-key-bytes",
    "16",
    "--max-value-bytes",
    "64",
    "--max-batch-entries",
    "4",
    "--max-body-bytes",
    "256",
    "--request-body-timeout-ms",
    "1000",
];

async fn seeded() -> (TestServer, (bool, u64, Vec<String>)) {
    let t = start_server(&LIMITS).await;
    assert_eq!(t.put("s", "a", b"1").await.status(), 204);
    assert_eq!(t.put("s", "b", b"2").await.status(), 204);
    let snap = t.snapshot("s").await;
    (t, snap)
}

async fn unchanged(t: &TestServer, before: &(bool, u64, Vec<String>)) {
    assert_eq!(&t.snapshot("s").await, before, "state changed");
    assert_eq!(t.get("s", "a").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(t.get("s", "b").await.as_deref(), Some(&b"2"[..]));
    let r = t
        .client
        .get(format!("{}/readyz", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "server no longer ready");
}

async fn post(t: &TestServer, path: &str, body: Vec<u8>) -> reqwest::Response {
    t.authed(Method::POST, &t.url(path, "s", None))
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_are_413() {
    let (t, before) = seeded().await;
    let long = "k".repeat(17);
    expect_error(t.put("s", &long, b"v").await, 413, "key_too_large").await;
    expect_error(t.put(&long, "k", b"v").await, 413, "key_too_large").await;
    let r = t
        .authed(Method::GET, &t.url("/v1/store", &long, None))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "key_too_large").await;
    expect_error(t.put("s", "a", &[7; 65]).await, 413, "value_too_large").await;

    // Without Content-Length the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![1; 40]), Ok(vec![2; 40])];
    let r = t
        .authed(Method::PUT, &t.url("/v1/kv", "s", Some("a")))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "value_too_large").await;

    let five: Vec<(&str, &[u8])> = ["1", "2", "3", "4", "5"]
        .iter()
        .map(|k| (*k, &b"v"[..]))
        .collect();
    expect_error(
        post(&t, "/v1/kv/set-many", encode_entries(five)).await,
        413,
        "batch_too_large",
    )
    .await;
    let five_keys = encode_keys(&["a", "b", "c", "d", "e"]);
    expect_error(
        post(&t, "/v1/kv/delete-many", five_keys.clone()).await,
        413,
        "batch_too_large",
    )
    .await;
    expect_error(
        post(&t, "/v1/kv/get-many", five_keys).await,
        413,
        "batch_too_large",
    )
    .await;

    let big: Vec<(&str, &[u8])> = ["1", "2", "3", "4"]
        .iter()
        .map(|k| (*k, &[0u8; 60][..]))
        .collect();
    expect_error(
        post(&t, "/v1/kv/set-many", encode_entries(big)).await,
        413,
        "body_too_large",
    )
    .await;
    let one_big = encode_entries([("x", &[0u8; 65][..])]);
    expect_error(
        post(&t, "/v1/kv/set-many", one_big).await,
        413,
        "value_too_large",
    )
    .await;
    let long_key = encode_entries([("a", &b"v"[..]), (long.as_str(), &b"v"[..])]);
    expect_error(
        post(&t, "/v1/kv/set-many", long_key).await,
        413,
        "key_too_large",
    )
    .await;
    unchanged(&t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_queries_are_400() {
    let (t, before) = seeded().await;
    let good = encode_entries([("a", &b"X"[..]), ("new", &b"Y"[..])]);
    expect_error(
        post(&t, "/v1/kv/set-many", good[..good.len() - 1].to_vec()).await,
        400,
        "malformed_body",
    )
    .await;
    let mut trailing = good.clone();
    trailing.push(0);
    expect_error(
        post(&t, "/v1/kv/set-many", trailing).await,
        400,
        "malformed_body",
    )
    .await;
    expect_error(
        post(&t, "/v1/kv/delete-many", vec![0, 0]).await,
        400,
        "malformed_body",
    )
    .await;
    // "a" then an invalid UTF-8 key: the valid first entry must not land.
    let mut bad_utf8 = encode_entries([("a", &b"X"[..]), ("zz", &b"Y"[..])]);
    let at = bad_utf8.len() - 1 - 4 - 2;
    bad_utf8[at] = 0xff;
    expect_error(
        post(&t, "/v1/kv/set-many", bad_utf8).await,
        400,
        "invalid_utf8",
    )
    .await;

    for (query, code) in [
        ("store=s&key=%ff", "invalid_utf8"),
        ("store=%C3%28&key=a", "invalid_utf8"),
        ("store=s&key=%zz", "invalid_query"),
        ("store=s", "invalid_query"),
        ("key=a", "invalid_query"),
        ("store=s&key=a&key=b", "invalid_query"),
        ("store=s&key=a&x=1", "invalid_query"),
    ] {
        let r = t
            .authed(Method::PUT, &format!("{}/v1/kv?{query}", t.base))
            .body("v")
            .send()
            .await
            .unwrap();
        expect_error(r, 400, code).await;
    }
    unchanged(&t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_routes_and_methods() {
    let (t, before) = seeded().await;
    let url = t.url("/v1/kv", "s", Some("a"));
    let r = t.client.put(&url).body("x").send().await.unwrap();
    assert_eq!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("Bearer")
    );
    expect_error(r, 401, "unauthorized").await;
    let r = t
        .client
        .put(&url)
        .bearer_auth("wrong")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = t
        .client
        .put(&url)
        .header("authorization", format!("Basic {TOKEN}"))
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = t
        .client
        .delete(t.url("/v1/store", "s", None))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;

    let r = t
        .authed(Method::GET, &format!("{}/v1/nope", t.base))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "route_not_found").await;
    let r = t.authed(Method::PATCH, &url).send().await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let r = t
        .authed(Method::GET, &t.url("/v1/kv/set-many", "s", None))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    unchanged(&t, &before).await;
}

fn raw_request(t: &TestServer, head: &str, body: &[u8]) -> TcpStream {
    let addr = t.server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_gets_408() {
    let (t, before) = seeded().await;
    let head = format!(
        "PUT /v1/kv?store=s&key=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 10\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let response = tokio::task::spawn_blocking(move || {
        let mut s = raw_request(&t, &head, b"abc");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (t, String::from_utf8_lossy(&out).into_owned())
    });
    let (t, response) = response.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    unchanged(&t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_changes_nothing() {
    let (t, before) = seeded().await;
    let head = format!(
        "PUT /v1/kv?store=s&key=c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n"
    );
    let t = tokio::task::spawn_blocking(move || {
        let s = raw_request(&t, &head, &[1; 10]);
        s.shutdown(std::net::Shutdown::Both).unwrap();
        drop(s);
        t
    })
    .await
    .unwrap();
    let frame = encode_entries([("c", &b"x"[..]), ("d", &b"y"[..])]);
    let head = format!(
        "POST /v1/kv/set-many?store=s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        frame.len() + 50
    );
    let t = tokio::task::spawn_blocking(move || {
        let s = raw_request(&t, &head, &frame);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        drop(s);
        t
    })
    .await
    .unwrap();
    // Give the server time to notice the closed connections.
    tokio::time::sleep(Duration::from_millis(200)).await;
    unchanged(&t, &before).await;
    assert_eq!(t.put("s", "c", b"3").await.status(), 204);
}

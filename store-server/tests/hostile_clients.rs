//! Clients that try to exhaust the server: silent sockets, HTTP/2 preface
//! only, idle keep-alive connections, slow bodies that hold memory, and
//! small requests for huge answers. Each gets a bounded answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TOKEN, start_server};
use drasi_store_protocol::{encode_keys, encode_query, routes};

/// Waits until the server closes `stream` (EOF or reset), or panics after
/// `within`; answers how long after `started` it was closed.
fn assert_closed_within(
    mut stream: TcpStream,
    started: Instant,
    within: Duration,
    what: &str,
) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            // The server may answer (a 408, or a GOAWAY frame) before closing.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return started.elapsed(),
        }
        assert!(
            started.elapsed() < within,
            "{what}: still open after {within:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_connections_are_closed_after_the_deadline() {
    let t = start_server(&["--request-body-timeout-ms", "700"]).await;
    let addr = t.server.local_addr();
    let started = Instant::now();
    let silent = TcpStream::connect(addr).unwrap();
    let mut preface = TcpStream::connect(addr).unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    let (a, b) = tokio::task::spawn_blocking(move || {
        (
            assert_closed_within(silent, started, Duration::from_secs(10), "silent socket"),
            assert_closed_within(
                preface,
                started,
                Duration::from_secs(10),
                "HTTP/2 preface only",
            ),
        )
    })
    .await
    .unwrap();
    // Not before the deadline either: it is a deadline, not a race.
    assert!(a >= Duration::from_millis(500), "{a:?}");
    assert!(b >= Duration::from_millis(400), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let t = start_server(&["--idle-timeout-ms", "800"]).await;
    let mut conn = TcpStream::connect(t.server.local_addr()).unwrap();
    let started = Instant::now();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let elapsed = tokio::task::spawn_blocking(move || {
        assert_closed_within(
            conn,
            started,
            Duration::from_secs(10),
            "idle keep-alive connection",
        )
    })
    .await
    .unwrap();
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_cannot_hold_more_than_the_inflight_budget() {
    const MIB: usize = 1024 * 1024;
    let t = start_server(&[
        "--max-value-bytes",
        "1048576",
        "--max-body-bytes",
        "1048576",
        "--max-inflight-body-bytes",
        "1048576",
    ])
    .await;
    // A slow client declares 1 MiB and sends a little: the whole budget is
    // reserved for it.
    let path = format!("{}?{}", routes::KV, encode_query("s", Some("slow")));
    let addr = t.server.local_addr();
    let open_slow = || {
        let mut slow = TcpStream::connect(addr).unwrap();
        write!(
            slow,
            "PUT {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-length: {MIB}\r\n\r\n"
        )
        .unwrap();
        slow.write_all(&[1u8; 1024]).unwrap();
        slow.set_nonblocking(true).unwrap();
        slow
    };
    let mut slow = open_slow();
    // The server reserves as soon as it reads the headers. If a small put
    // held a few bytes of the budget at that moment, the slow request was
    // rightly refused: it is sent again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = t.put("s", "k", b"small").await;
        if r.status() == 503 {
            break r;
        }
        assert_eq!(r.status(), 204);
        assert!(Instant::now() < deadline, "the budget never filled");
        let mut answer = [0u8; 12];
        if let Ok(12) = slow.peek(&mut answer) {
            assert_eq!(&answer, b"HTTP/1.1 503", "the slow request was answered");
            slow = open_slow();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = common::json(refused).await;
    assert_eq!(body["code"], "unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--max-inflight-body-bytes"),
        "{body}"
    );
    // The slow client goes away: its reservation is returned.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.put("s", "k", b"small").await.status() != 204 {
        assert!(Instant::now() < deadline, "budget not returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_get_many_answer_is_refused_naming_the_limit() {
    let t = start_server(&["--max-response-bytes", "100000"]).await;
    for i in 0..4 {
        assert_eq!(
            t.put("s", &format!("k{i}"), &[7u8; 40_000]).await.status(),
            204
        );
    }
    let keys: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
    let ask = |keys: &[String]| {
        t.authed(reqwest::Method::POST, &t.url(routes::GET_MANY, "s", None))
            .body(encode_keys(
                &keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ))
            .send()
    };
    let r = ask(&keys).await.unwrap();
    let status = r.status().as_u16();
    let body = common::json(r).await;
    assert_eq!((status, &body["code"]), (413, &"response_too_large".into()));
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("100000") && message.contains("--max-response-bytes"),
        "{message}"
    );
    // Two values fit.
    let r = ask(&keys[..2]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().len() > 80_000);
    // And a missing store is still just empty.
    let r = t
        .authed(
            reqwest::Method::POST,
            &t.url(routes::GET_MANY, "none", None),
        )
        .body(encode_keys(
            &keys.iter().map(String::as_str).collect::<Vec<_>>(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_slow_reader_holds_count_against_the_inflight_budget() {
    const MIB: usize = 1024 * 1024;
    let t = start_server(&[
        "--max-value-bytes",
        &(8 * MIB).to_string(),
        "--max-body-bytes",
        &(8 * MIB).to_string(),
        "--max-response-bytes",
        &(17 * MIB).to_string(),
        "--max-inflight-body-bytes",
        &(24 * MIB).to_string(),
    ])
    .await;
    for key in ["k0", "k1"] {
        assert_eq!(t.put("s", key, &vec![1u8; 8 * MIB]).await.status(), 204);
    }
    assert_eq!(t.put("s", "tiny", b"t").await.status(), 204);
    let get_k0 = || {
        t.authed(reqwest::Method::GET, &t.url(routes::KV, "s", Some("k0")))
            .send()
    };
    let first = get_k0().await.unwrap();
    assert_eq!(first.status(), 200);
    // Read to the end, so its room is returned before the slow reader asks.
    assert_eq!(first.bytes().await.unwrap().len(), 8 * MIB);

    // Asks for a 16 MiB answer and never reads past its status line: more
    // than the socket buffers hold, so the rest waits in the server's write
    // queue. Nothing else runs until the answer has started, so it is
    // admitted into an idle budget (a concurrent 8 MiB answer plus this
    // one and its request would not fit, and the server would rightly
    // refuse it). An earlier answer's room comes back a moment after its
    // last byte, so a refusal is retried.
    let body = encode_keys(&["k0", "k1"]);
    let path = format!("{}?{}", routes::GET_MANY, encode_query("s", None));
    let addr = t.server.local_addr();
    let deadline = Instant::now() + Duration::from_secs(10);
    let slow = loop {
        let mut slow = TcpStream::connect(addr).unwrap();
        write!(
            slow,
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        slow.write_all(&body).unwrap();
        let (slow, status) = tokio::task::spawn_blocking(move || {
            let mut status = [0u8; 12];
            slow.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            slow.read_exact(&mut status).unwrap();
            (slow, status)
        })
        .await
        .unwrap();
        match &status {
            b"HTTP/1.1 200" => break slow,
            b"HTTP/1.1 503" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!(
                "the slow reader's request got {:?}",
                String::from_utf8_lossy(other)
            ),
        }
    };

    // Once that answer is built, another 8 MiB answer no longer fits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = get_k0().await.unwrap();
        if r.status() == 503 {
            break r;
        }
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 8 * MIB);
        assert!(
            Instant::now() < deadline,
            "an unread 16 MiB answer is not counted against the budget"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = common::json(refused).await;
    assert_eq!(body["code"], "unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--max-inflight-body-bytes"),
        "{body}"
    );
    // Small answers still fit in what is left.
    assert_eq!(t.get("s", "tiny").await.as_deref(), Some(&b"t"[..]));

    // The slow reader goes away: its answer's room is returned.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_k0().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "answer room not returned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

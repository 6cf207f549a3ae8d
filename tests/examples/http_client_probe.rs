//! What one `get` round trip costs at concurrency 1 through two HTTP clients
//! against a running store server: reqwest (what `RemoteStateStoreProvider`
//! uses) and hyper's bare connection API (one connection, no pool, no URL
//! handling). Prints p50/p99 latency and this process's CPU time per request
//! for three alternated rounds. Next to `wrk` (a C client) and
//! `redis-benchmark` against Redis, it tells the client's share of a round
//! trip from the server's (see docs/benchmarks.md).
//!
//! ```sh
//! target/release/drasi-store-server --insecure-no-auth --listen 127.0.0.1:7777 --data-dir /tmp/probe
//! cargo run --release -p drasi-store-tests --example http_client_probe -- http://127.0.0.1:7777 [requests]
//! ```

use std::time::Instant;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;

fn cpu_us() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec;
    let micros = usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    secs as f64 * 1e6 + micros as f64
}

fn report(client: &str, mut latencies: Vec<f64>, cpu: f64) {
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    println!(
        "{client:8} p50 {:6.1} µs  p99 {:7.1} µs  client CPU/request {:6.1} µs",
        latencies[n / 2],
        latencies[n * 99 / 100],
        cpu / n as f64
    );
}

/// Warms up, then times `requests` calls of `get` one after another.
async fn measure(
    client: &str,
    requests: usize,
    mut get: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for _ in 0..200 {
        get().await?;
    }
    let (started, mut latencies) = (cpu_us(), Vec::with_capacity(requests));
    for _ in 0..requests {
        let t = Instant::now();
        get().await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    report(client, latencies, cpu_us() - started);
    Ok(())
}

async fn with_reqwest(url: &str, requests: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()?;
    let url = reqwest::Url::parse(url)?;
    measure("reqwest", requests, async || {
        let response = client.get(url.clone()).send().await?.error_for_status()?;
        response.bytes().await?;
        Ok(())
    })
    .await
}

async fn with_hyper(url: &str, requests: usize) -> anyhow::Result<()> {
    let uri: hyper::Uri = url.parse()?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
    let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    measure("hyper", requests, async || {
        send.ready().await?;
        let request = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, addr.as_str())
            .body(Empty::<Bytes>::new())?;
        let response = send.send_request(request).await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
        response.into_body().collect().await?;
        Ok(())
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: http_client_probe BASE_URL [REQUESTS]"))?;
    let requests: usize = args.next().map_or(Ok(5000), |s| s.parse())?.max(100);
    let url = format!("{base}/v1/kv?store=probe&key=k");
    reqwest::Client::new()
        .put(&url)
        .body(&b"0123456789abcdef"[..])
        .send()
        .await?
        .error_for_status()?;
    for _ in 0..3 {
        with_reqwest(&url, requests).await?;
        with_hyper(&url, requests).await?;
    }
    Ok(())
}

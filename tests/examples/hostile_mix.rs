//! The server's resident-memory ceiling under a hostile mix of clients:
//! `cargo run --release -p drasi-store-tests --example hostile_mix`
//! (`-- --seconds N`, default 20). See `docs/server.md` ("Memory bounds").
//!
//! Against the real server (this executable re-run as the server, as the
//! benchmark does), with its default limits, all at once:
//! - silent TCP connections that never send a byte;
//! - uploads that declare 16 MiB and then stall;
//! - `get_many` requests for 64 MiB answers whose readers never read;
//! - clients reading and writing 16 MiB values as fast as they can;
//! - `list_keys` over a store of 100,000 keys;
//! - a probe of `/healthz` every 200 ms, whose slowest answer is reported.
//!
//! It prints the server's `VmRSS` before, and its peak (`VmHWM`) after, and
//! how many requests the server refused with `503` to stay in its budget.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drasi_store_protocol::{encode_entries, encode_keys, encode_query, routes};
use drasi_store_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHILD: &str = "DRASI_HOSTILE_MIX_SERVER_CHILD";
const TOKEN: &str = "hostile-mix-token-0123456789";
const MIB: usize = 1024 * 1024;
const BIG: usize = 16 * MIB;
const BIG_KEYS: usize = 8;

fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some_and(|v| v == "1") {
        return drasi_store_server::cli_main();
    }
    let seconds = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => 20,
        [flag, n] if flag == "--seconds" => match n.parse() {
            Ok(n) => n,
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(Duration::from_secs(seconds))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile mix failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: hostile_mix [--seconds N]");
    ExitCode::from(2)
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    fn record(&self, status: u16) {
        match status {
            200..=299 => &self.ok,
            503 => &self.refused,
            _ => &self.other,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

async fn run(duration: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(CHILD, "1")
        .env_remove("RUST_LOG")
        .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--auth-token-file")
        .arg(&token_file);
    let server = ServerProcess::spawn(cmd, data.clone(), Some(TOKEN.into()))?;
    let pid = server.pid();
    let url = server.url();
    let addr = server.addr();
    let http = reqwest::Client::new();
    let rss_start = status_kib(pid, "VmRSS:")?;

    // Preload: large values, and a store with many keys.
    for i in 0..BIG_KEYS {
        let r = http
            .put(format!(
                "{url}{}?{}",
                routes::KV,
                encode_query("big", Some(&format!("k{i}")))
            ))
            .bearer_auth(TOKEN)
            .body(vec![i as u8; BIG])
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("preload: {}", r.status());
        }
    }
    let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i:08}")).collect();
    for chunk in keys.chunks(10_000) {
        let body = encode_entries(chunk.iter().map(|k| (k.as_str(), &b"v"[..])));
        let r = http
            .post(format!(
                "{url}{}?{}",
                routes::SET_MANY,
                encode_query("many", None)
            ))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("preload set_many: {}", r.status());
        }
    }
    let rss_loaded = status_kib(pid, "VmRSS:")?;
    eprintln!("preloaded; running the mix for {duration:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();

    // Silent sockets, held until the server closes them, then reopened.
    for _ in 0..500 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect(addr).await {
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // Uploads that declare 16 MiB and stall.
    for i in 0..64 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!(
                "{}?{}",
                routes::KV,
                encode_query("slow", Some(&format!("u{i}")))
            );
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect(addr).await {
                    let head = format!(
                        "PUT {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
                         content-length: {BIG}\r\n\r\n"
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&[1u8; 1024]).await;
                    let mut buf = [0u8; 256];
                    let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // 64 MiB answers nobody reads.
    for _ in 0..32 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let names: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
            let body = encode_keys(&names.iter().map(String::as_str).collect::<Vec<_>>());
            let path = format!("{}?{}", routes::GET_MANY, encode_query("big", None));
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect(addr).await {
                    let head = format!(
                        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
                         content-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                    // Hold the connection without reading.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }));
    }
    // Honest heavy traffic: big reads and writes, and list_keys.
    for i in 0..12 {
        let (stop, counts, http, url) = (stop.clone(), counts.clone(), http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", i % BIG_KEYS);
                let request = match i % 3 {
                    0 => http.get(format!(
                        "{url}{}?{}",
                        routes::KV,
                        encode_query("big", Some(&key))
                    )),
                    1 => http
                        .put(format!(
                            "{url}{}?{}",
                            routes::KV,
                            encode_query("big", Some(&key))
                        ))
                        .body(vec![7u8; BIG]),
                    _ => http.get(format!(
                        "{url}{}?{}",
                        routes::STORE_KEYS,
                        encode_query("many", None)
                    )),
                };
                match request.bearer_auth(TOKEN).send().await {
                    Ok(r) => {
                        counts.record(r.status().as_u16());
                        let _ = r.bytes().await;
                    }
                    Err(_) => {
                        counts.other.fetch_add(1, Ordering::Relaxed);
                    }
                };
            }
        }));
    }
    // The kubelet's view.
    let worst_probe = {
        let (stop, http, url) = (stop.clone(), http.clone(), url.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut failed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = http
                    .get(format!("{url}{}", routes::HEALTHZ))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                worst = worst.max(t.elapsed());
                failed += u32::from(!ok);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (worst, failed)
        })
    };

    let started = Instant::now();
    let mut peak_sampled = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_sampled = peak_sampled.max(status_kib(pid, "VmRSS:")?);
    }
    stop.store(true, Ordering::Relaxed);
    let hwm = status_kib(pid, "VmHWM:")?;
    let (worst, failed_probes) = worst_probe.await?;
    for t in tasks {
        t.abort();
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| hostile mix ({duration:?}, default limits) | value |");
    println!("|---|---|");
    println!("| server RSS at start | {:.1} MiB |", mib(rss_start));
    println!(
        "| server RSS after preload (8 x 16 MiB values, 100,000 keys) | {:.1} MiB |",
        mib(rss_loaded)
    );
    println!(
        "| server RSS, highest sample during the mix | {:.1} MiB |",
        mib(peak_sampled)
    );
    println!("| server peak RSS (`VmHWM`) | **{:.1} MiB** |", mib(hwm));
    println!(
        "| honest requests: answered / refused 503 / other | {} / {} / {} |",
        counts.ok.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed)
    );
    println!(
        "| `/healthz`: slowest answer, failures | {:.0} ms, {failed_probes} |",
        worst.as_secs_f64() * 1000.0
    );
    drop(server);
    Ok(())
}

//! Measures the server's resident memory after N distinct store_ids were
//! each written once (docs/server.md quotes the result).
//!
//! ```text
//! cargo build --release -p drasi-store-server --bin drasi-store-server --example rss
//! target/release/examples/rss [STORES] [CONCURRENCY]
//! ```
//!
//! It starts the real `drasi-store-server` binary that sits next to this
//! example's directory (or `$DRASI_STORE_SERVER_BIN`), writes one 16-byte
//! value into each of STORES (default 100000) distinct store_ids from
//! CONCURRENCY (default 64) concurrent clients, and prints VmRSS/VmHWM of
//! the server process from /proc.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use drasi_store_protocol::encode_query;

fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let stores: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let bin = match std::env::var_os("DRASI_STORE_SERVER_BIN") {
        Some(p) => p.into(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("drasi-store-server"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate drasi-store-server"))?,
    };
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(&bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--data-dir",
        ])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let addr = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("server exited before listening"))??;
        if let Some(a) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
        {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    println!(
        "server pid {pid} at {addr}; RSS at start: {}",
        proc_status(pid, "VmRSS:")
    );

    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, addr) = (client.clone(), next.clone(), addr.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= stores {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let store = format!("reaction-{i:08}-checkpoint");
                    let url = format!(
                        "http://{addr}/v1/kv?{}",
                        encode_query(&store, Some("offset"))
                    );
                    let r = client.put(url).body(vec![7u8; 16]).send().await?;
                    anyhow::ensure!(r.status() == 204, "set answered {}", r.status());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "wrote {stores} distinct store_ids in {:.1} s ({:.0} sets/s, durable)",
        elapsed.as_secs_f64(),
        stores as f64 / elapsed.as_secs_f64()
    );
    println!(
        "server VmRSS: {}   VmHWM (peak): {}   database file: {} bytes",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:"),
        std::fs::metadata(dir.path().join("state.redb"))?.len()
    );
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "server exited with {status}");
    Ok(())
}

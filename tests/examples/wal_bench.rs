//! WAL append throughput: `RemoteWalProvider` (a real server process on
//! loopback, group commit) against DrasiLib's file-backed `drasi-wal-redb`
//! provider, on the same disk in the same run. See `docs/benchmarks.md`.
//!
//! ```sh
//! cargo run --release -p drasi-store-tests --example wal_bench
//! cargo run --release -p drasi-store-tests --example wal_bench -- --secs 5 --dir /mnt/disk
//! ```
//!
//! The server is this executable re-run with a marker variable set (an
//! example cannot use another package's binary).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use drasi_lib::wal::{CapacityPolicy, WalProvider, WriteAheadLogConfig};
use drasi_state_store_remote::RemoteWalProvider;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::order_change;
use drasi_wal_redb::RedbWalProvider;

const SERVER_CHILD_ENV: &str = "DRASI_WAL_BENCH_SERVER_CHILD";
const TOKEN: &str = "wal-bench-token-0123456789";
const SOURCE: &str = "bench-source";
const CONCURRENCY: [usize; 2] = [1, 16];
const USAGE: &str = "wal_bench [--secs S (default 3)] [--dir DIR (default: the temp dir)]";

struct Row {
    provider: &'static str,
    concurrency: usize,
    appends: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

fn main() -> ExitCode {
    if std::env::var_os(SERVER_CHILD_ENV).is_some_and(|v| v == "1") {
        return drasi_store_server::cli_main();
    }
    match parse_args().and_then(|(secs, dir)| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(secs, dir))
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wal_bench failed: {e:#}\nusage: {USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> anyhow::Result<(Duration, PathBuf)> {
    let mut secs = 3.0;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => secs = args.next().context("--secs needs a value")?.parse()?,
            "--dir" => dir = args.next().context("--dir needs a value")?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok((Duration::from_secs_f64(secs), dir))
}

async fn run(secs: Duration, dir: PathBuf) -> anyhow::Result<()> {
    let root =
        tempfile::tempdir_in(&dir).with_context(|| format!("temp dir in {}", dir.display()))?;
    let server_dir = root.path().join("server");
    std::fs::create_dir_all(&server_dir)?;
    let token_file = root.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(SERVER_CHILD_ENV, "1")
        .env_remove("RUST_LOG")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--durability",
            "immediate",
        ])
        .arg("--data-dir")
        .arg(&server_dir)
        .arg("--auth-token-file")
        .arg(&token_file);
    let server = ServerProcess::spawn(cmd, server_dir, Some(TOKEN.into()))?;
    let remote = RemoteWalProvider::builder(server.url())
        .token(TOKEN)
        .build()?;

    let mut rows = Vec::new();
    for concurrency in CONCURRENCY {
        // Fresh logs per measurement, so both start empty; the providers
        // take turns within a concurrency level.
        let redb_dir = root.path().join(format!("redb-{concurrency}"));
        let redb: Arc<dyn WalProvider> = Arc::new(RedbWalProvider::new(&redb_dir));
        rows.push(measure("drasi-wal-redb (embedded)", redb, concurrency, secs).await?);
        let remote: Arc<dyn WalProvider> = Arc::new(remote.clone());
        remote.delete_wal(SOURCE).await?;
        rows.push(measure("RemoteWalProvider (loopback)", remote, concurrency, secs).await?);
    }
    server.terminate(Duration::from_secs(30))?;

    println!(
        "WAL append throughput, {:.1} s per row, data under {}\n",
        secs.as_secs_f64(),
        dir.display()
    );
    println!("| provider | concurrency | appends/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms |",
            r.provider,
            r.concurrency,
            r.appends as f64 / r.secs,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

async fn measure(
    provider: &'static str,
    wal: Arc<dyn WalProvider>,
    concurrency: usize,
    secs: Duration,
) -> anyhow::Result<Row> {
    eprintln!("{provider}, concurrency {concurrency} ...");
    wal.register(
        SOURCE,
        WriteAheadLogConfig {
            max_events: 100_000_000,
            capacity_policy: CapacityPolicy::RejectIncoming,
        },
    )
    .await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let wal = wal.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = (task as u64) << 40;
                while started.elapsed() < secs {
                    let change = order_change(SOURCE, n);
                    n += 1;
                    let t = Instant::now();
                    wal.append(SOURCE, &change).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
    anyhow::ensure!(!all.is_empty(), "{provider}: no append finished");
    Ok(Row {
        provider,
        concurrency,
        appends: all.len() as u64,
        secs: elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

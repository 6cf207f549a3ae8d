//! Backup and restore throughput, and server memory while a large database
//! is snapshotted (docs/benchmarks.md quotes the result):
//!
//! ```text
//! cargo build --release -p drasi-store-server --example backup_bench
//! target/release/examples/backup_bench [--gib 1.1] [--value-bytes 1024] [--dir PATH]
//! ```
//!
//! Starts a real server (this executable re-run as `drasi-store-server`,
//! through the same `cli_main` entry point), fills it over HTTP with
//! `set-many` batches until the values add up to `--gib` GiB, then
//! measures `backup` to a file while sampling the server's RSS, `restore`
//! from that file, and a plain copy + fsync of the database file and of the
//! snapshot on the same disk as the physical ceiling. The work dir is
//! created under `--dir` (default: the system temp dir) and deleted
//! afterwards.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drasi_store_protocol::{encode_entries, encode_query};

const CHILD_ENV: &str = "DRASI_BACKUP_BENCH_CHILD";
const TOKEN: &str = "bench-token";
const STORES: u64 = 64;
const BATCH: usize = 512;
const WRITERS: usize = 16;

fn child() -> anyhow::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(CHILD_ENV, "1").env_remove("RUST_LOG");
    Ok(cmd)
}

fn run_child(args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = child()?.args(args).stdout(Stdio::null()).output()?;
    if !out.status.success() {
        bail!(
            "drasi-store-server {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed())
}

fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Incompressible-looking values without a random-number dependency.
fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn fill(base: &str, gib: f64, value_bytes: usize) -> anyhow::Result<u64> {
    let target = (gib * (1u64 << 30) as f64) as u64;
    let batches = target.div_ceil((BATCH * value_bytes) as u64);
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (next, client, base) = (next.clone(), client.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let store = format!("bench-store-{:03}", b % STORES);
                let keys: Vec<String> = (0..BATCH).map(|i| format!("key-{b:08}-{i:04}")).collect();
                let values: Vec<Vec<u8>> = (0..BATCH)
                    .map(|i| value(b * BATCH as u64 + i as u64, value_bytes))
                    .collect();
                let frame = encode_entries(
                    keys.iter()
                        .zip(&values)
                        .map(|(k, v)| (k.as_str(), v.as_slice()))
                        .collect::<Vec<_>>(),
                );
                let url = format!("{base}/v1/kv/set-many?{}", encode_query(&store, None));
                let r = client
                    .post(url)
                    .bearer_auth(TOKEN)
                    .body(frame)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("set-many answered {}", r.status());
                }
                if b.is_multiple_of(200) {
                    eprintln!("  filled {b}/{batches} batches");
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let r = client
        .post(format!("{base}/v1/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("sync answered {}", r.status());
    }
    Ok(batches * BATCH as u64)
}

fn copy_and_sync(from: &Path, to: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    Ok(started.elapsed())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Options {
    gib: f64,
    value_bytes: usize,
    dir: std::path::PathBuf,
}

fn parse() -> anyhow::Result<Options> {
    let mut o = Options {
        gib: 1.1,
        value_bytes: 1024,
        dir: std::env::temp_dir(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--gib" => o.gib = v.parse()?,
            "--value-bytes" => o.value_bytes = v.parse()?,
            "--dir" => o.dir = v.into(),
            other => bail!("unknown option {other}; options: --gib F, --value-bytes N, --dir PATH"),
        }
    }
    Ok(o)
}

/// The server child, its address taken from its `listening addr=...` log.
struct ServerChild(std::process::Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(data: &Path, token_file: &Path) -> anyhow::Result<(ServerChild, String)> {
    use std::io::{BufRead, BufReader};
    let mut child = child()?
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--durability",
            "eventual",
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--auth-token-file")
        .arg(token_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let server = ServerChild(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().context("server exited before listening")??;
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    // Keep draining so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((server, format!("http://{addr}")))
}

async fn bench(opts: Options) -> anyhow::Result<()> {
    let work = tempfile::tempdir_in(&opts.dir)?;
    let data = work.path().join("data");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let (server, base) = start_server(&data, &token_file)?;
    let pid = server.0.id();
    eprintln!(
        "filling {} GiB of {}-byte values ...",
        opts.gib, opts.value_bytes
    );
    let started = Instant::now();
    let entries = fill(&base, opts.gib, opts.value_bytes).await?;
    eprintln!("  {entries} entries in {:.1?}", started.elapsed());
    let db_bytes = std::fs::metadata(data.join("state.redb"))?.len();

    let rss_idle = vm_rss(pid);
    let peak = Arc::new(AtomicU64::new(rss_idle));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(vm_rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    eprintln!("backup ...");
    let snap = work.path().join("bench.snap");
    let (token, out) = (token_file.display().to_string(), snap.display().to_string());
    let url = base.clone();
    let backup = tokio::task::spawn_blocking(move || {
        run_child(&[
            "backup",
            "--url",
            &url,
            "--token-file",
            &token,
            "--output",
            &out,
        ])
    })
    .await??;
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler thread");
    let rss_peak = peak.load(Ordering::Relaxed);
    let snap_bytes = std::fs::metadata(&snap)?.len();
    drop(server);

    eprintln!("restore ...");
    let restored = work.path().join("restored");
    let restore = run_child(&[
        "restore",
        "--input",
        &snap.display().to_string(),
        "--data-dir",
        &restored.display().to_string(),
    ])?;
    let restored_bytes = std::fs::metadata(restored.join("state.redb"))?.len();
    eprintln!("plain copies ...");
    let copy_db = copy_and_sync(&data.join("state.redb"), &work.path().join("copy.redb"))?;
    let copy_snap = copy_and_sync(&snap, &work.path().join("copy.snap"))?;

    println!(
        "database: {entries} entries of {} bytes in {STORES} stores; state.redb {:.0} MiB, \
         snapshot {:.0} MiB, restored state.redb {:.0} MiB\n",
        opts.value_bytes,
        mib(db_bytes),
        mib(snap_bytes),
        mib(restored_bytes)
    );
    println!("| operation | bytes moved | time | throughput | entries/s |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, bytes: u64, t: Duration, per_entry: bool| {
        let s = t.as_secs_f64();
        let rate = if per_entry {
            format!("{:.0}", entries as f64 / s)
        } else {
            "—".to_string()
        };
        println!(
            "| {what} | {:.0} MiB | {s:.2} s | {:.0} MB/s | {rate} |",
            mib(bytes),
            bytes as f64 / 1e6 / s
        );
    };
    row(
        "backup: snapshot → HTTP → verified file, fsync",
        snap_bytes,
        backup,
        true,
    );
    row(
        "restore: file → verified new state.redb, fsync",
        snap_bytes,
        restore,
        true,
    );
    row("plain copy + fsync of state.redb", db_bytes, copy_db, false);
    row(
        "plain copy + fsync of the snapshot file",
        snap_bytes,
        copy_snap,
        false,
    );
    println!(
        "\nserver RSS: {:.0} MiB before the backup, {:.0} MiB peak while streaming it",
        mib(rss_idle),
        mib(rss_peak)
    );
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        return drasi_store_server::cli_main();
    }
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(bench(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backup benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

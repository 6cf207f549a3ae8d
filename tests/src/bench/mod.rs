//! The benchmark behind `cargo run --release -p drasi-store-tests --example
//! bench`: the same workloads, in one process and one run, against
//! `MemoryStateStoreProvider`, the embedded `RedbStateStoreProvider` and
//! `RemoteStateStoreProvider` over loopback to a real server process, plus
//! `redis-benchmark` against Redis when it is installed. It measures; it never
//! fails because something is slow (the report marks each target met or not).

pub mod cpu;
pub mod redis;
pub mod report;
pub mod rss;
pub mod server_metrics;
pub mod target;
pub mod workloads;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drasi_lib::{MemoryStateStoreProvider, StateStoreProvider};
use drasi_state_store_redb::RedbStateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;

use crate::ServerProcess;
use cpu::CpuMeter;
pub use report::{Measurement, Report, RssResult, Subject, TargetCheck, TargetStatus};
use target::{BenchTarget, ProviderTarget, RedisCrateTarget};
use workloads::{Op, RunBudget, Workload};

/// The number of distinct store_ids the RSS target is stated for.
pub const RSS_TARGET_STORE_IDS: usize = 100_000;
/// The RSS target itself.
pub const RSS_TARGET_BYTES: u64 = 64 * 1024 * 1024;

/// The bearer token of the servers [`start_server`] starts.
pub const TOKEN: &str = "drasi-bench-token";
const REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tiny op counts: proves every workload runs, measures nothing useful.
    pub quick: bool,
    /// Measured time per workload and subject.
    pub duration: Duration,
    /// Discarded warm-up per workload and subject.
    pub warmup: Duration,
    /// Upper bound on calls per measurement.
    pub max_ops: u64,
    /// Run Redis when it is installed.
    pub redis: bool,
    /// Distinct store_ids written before reading the server's RSS (0: skip).
    pub rss_store_ids: usize,
    /// Only workloads whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// Measure only the remote provider (for profiling it).
    pub remote_only: bool,
    /// Build the remote provider with batching turned off (every call its
    /// own request), for before/after comparisons.
    pub no_batching: bool,
    /// Start the server with `--journal false` (a durable redb commit per
    /// group), for before/after comparisons of the commit journal.
    pub no_journal: bool,
    /// Build the remote provider with `.requests_on_caller_runtime(false)`
    /// (every request handed to its own I/O runtime), for before/after
    /// comparisons.
    pub own_runtime: bool,
}

impl BenchOptions {
    /// The default run: about two to three minutes on two cores.
    pub fn full() -> Self {
        Self {
            quick: false,
            duration: Duration::from_millis(2500),
            warmup: Duration::from_millis(300),
            max_ops: 2_000_000,
            redis: true,
            rss_store_ids: RSS_TARGET_STORE_IDS,
            only: Vec::new(),
            remote_only: false,
            no_batching: false,
            no_journal: false,
            own_runtime: false,
        }
    }

    /// A smoke run for CI.
    pub fn quick() -> Self {
        Self {
            quick: true,
            duration: Duration::from_millis(150),
            warmup: Duration::ZERO,
            max_ops: 200,
            redis: true,
            rss_store_ids: 500,
            only: Vec::new(),
            remote_only: false,
            no_batching: false,
            no_journal: false,
            own_runtime: false,
        }
    }

    pub const USAGE: &'static str = "\
usage: bench [--quick] [--duration-secs S] [--warmup-secs S] [--ops N] [--no-redis] [--rss-stores N]
             [--only NAME]... [--remote-only] [--no-batching] [--no-journal] [--own-runtime]

  --quick            tiny smoke run (a few hundred calls per workload)
  --duration-secs S  measured seconds per workload and store (default 2.5)
  --warmup-secs S    discarded warm-up seconds per workload and store (default 0.3)
  --ops N            at most N calls per measurement (default 2000000)
  --no-redis         skip Redis even when redis-server and redis-benchmark are installed
  --rss-stores N     distinct store_ids written before reading server RSS (default 100000; 0 skips)
  --only NAME        only workloads whose name contains NAME, e.g. \"set c=64 16B\" (repeatable)
  --remote-only      measure only the remote provider (for profiling it with perf)
  --no-batching      remote provider without client-side batching (every call its own request)
  --no-journal       server without the commit journal (--journal false: a durable redb commit per group)
  --own-runtime      remote provider hands every request to its own I/O runtime (.requests_on_caller_runtime(false))";

    /// Parses the command line (without the program name). `--quick` first
    /// resets every option to the quick defaults; later flags override.
    pub fn parse_args<I, S>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let mut opts = if args.iter().any(|a| a == "--quick") {
            Self::quick()
        } else {
            Self::full()
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .with_context(|| format!("{name} needs a value\n{}", Self::USAGE))
            };
            match arg.as_str() {
                "--quick" => {}
                "--duration-secs" => opts.duration = seconds(&value("--duration-secs")?)?,
                "--warmup-secs" => opts.warmup = seconds(&value("--warmup-secs")?)?,
                "--ops" => {
                    opts.max_ops = value("--ops")?.parse().context("--ops")?;
                    if opts.max_ops == 0 {
                        bail!("--ops must be at least 1");
                    }
                }
                "--no-redis" => opts.redis = false,
                "--remote-only" => opts.remote_only = true,
                "--no-batching" => opts.no_batching = true,
                "--no-journal" => opts.no_journal = true,
                "--own-runtime" => opts.own_runtime = true,
                "--only" => opts.only.push(value("--only")?),
                "--rss-stores" => {
                    opts.rss_store_ids = value("--rss-stores")?.parse().context("--rss-stores")?
                }
                "-h" | "--help" => bail!("{}", Self::USAGE),
                other => bail!("unknown argument `{other}`\n{}", Self::USAGE),
            }
        }
        Ok(opts)
    }
}

fn seconds(s: &str) -> anyhow::Result<Duration> {
    let secs: f64 = s
        .parse()
        .with_context(|| format!("`{s}` is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        bail!("durations must be positive, got {s}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How to start the real server: a binary, or the benchmark's own
/// executable re-run with an environment marker (an example cannot depend on
/// another package's binary, but it links the server library).
#[derive(Debug, Clone)]
pub struct ServerCommand {
    program: PathBuf,
    envs: Vec<(OsString, OsString)>,
}

impl ServerCommand {
    /// A `drasi-store-server` executable.
    pub fn binary(path: impl Into<PathBuf>) -> Self {
        Self {
            program: path.into(),
            envs: Vec::new(),
        }
    }

    /// The current executable, with `marker=1` in its environment; its
    /// `main` must then run `drasi_store_server::cli_main()` (see
    /// [`is_server_child`]).
    pub fn reexec_current(marker: &str) -> anyhow::Result<Self> {
        Ok(Self {
            program: std::env::current_exe().context("locating the current executable")?,
            envs: vec![(marker.into(), "1".into())],
        })
    }

    fn command(&self, data_dir: &Path, token_file: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log-format")
            .arg("text")
            .arg("--auth-token-file")
            .arg(token_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }
}

/// True in a child started by [`ServerCommand::reexec_current`].
pub fn is_server_child(marker: &str) -> bool {
    std::env::var_os(marker).is_some_and(|v| v == "1")
}

/// Starts the server under `dir` (its data directory and token file) with
/// `extra` flags, and waits until it listens.
pub async fn start_server(
    server: &ServerCommand,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<ServerProcess> {
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let cmd = server.command(&data_dir, &token_file, extra);
    tokio::task::spawn_blocking(move || ServerProcess::spawn(cmd, data_dir, Some(TOKEN.into())))
        .await
        .context("server start task panicked")?
}

async fn stop_server(server: ServerProcess) -> anyhow::Result<()> {
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(30)))
        .await
        .context("server stop task panicked")??;
    if !status.success() {
        bail!("server exited with {status} after SIGTERM");
    }
    Ok(())
}

fn remote_provider(
    server: &ServerProcess,
    opts: &BenchOptions,
) -> anyhow::Result<Arc<dyn StateStoreProvider>> {
    let provider = RemoteStateStoreProvider::builder(server.url())
        .token(TOKEN)
        .timeout(REMOTE_TIMEOUT)
        .batching(!opts.no_batching)
        .requests_on_caller_runtime(!opts.own_runtime)
        .build()
        .context("building the remote provider")?;
    Ok(Arc::new(provider))
}

/// Runs everything and returns the report; progress goes to stderr.
pub async fn run(opts: &BenchOptions, server: &ServerCommand) -> anyhow::Result<Report> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("drasi-bench-").tempdir()?;
    let workloads = workloads::standard_workloads();
    let budget = RunBudget {
        warmup: opts.warmup,
        duration: opts.duration,
        max_ops: opts.max_ops,
    };
    let mut report = Report::new(opts.clone());
    report.environment = environment();
    if opts.no_batching {
        report
            .environment
            .push("remote provider built with .batching(false): every call its own request".into());
    }
    if opts.no_journal {
        report
            .environment
            .push("server started with --journal false: every group a durable redb commit".into());
    }
    if opts.own_runtime {
        report.environment.push(
            "remote provider built with .requests_on_caller_runtime(false): every request runs on its own I/O runtime".into(),
        );
    }
    let load_before = load_average();

    let workloads: Vec<Workload> = workloads
        .into_iter()
        .filter(|w| {
            let name = w.to_string();
            opts.only.is_empty() || opts.only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    if workloads.is_empty() {
        bail!("--only matched no workload");
    }

    let memory: Arc<dyn BenchTarget> =
        Arc::new(ProviderTarget(Arc::new(MemoryStateStoreProvider::new())));
    let embedded: Arc<dyn BenchTarget> = Arc::new(ProviderTarget(Arc::new(
        RedbStateStoreProvider::new(tmp.path().join("embedded.redb"))
            .context("opening the embedded redb provider")?,
    )));
    let journal = if opts.no_journal { "false" } else { "true" };
    let process = start_server(
        server,
        &tmp.path().join("remote"),
        &["--durability", "immediate", "--journal", journal],
    )
    .await?;
    let remote: Arc<dyn BenchTarget> = Arc::new(ProviderTarget(remote_provider(&process, opts)?));
    let probe = server_metrics::MetricsProbe::new(&process.url(), TOKEN)?;
    let redis_servers = if !opts.redis || opts.remote_only {
        report.redis_note = Some("skipped (--no-redis or --remote-only)".into());
        None
    } else if !redis::available() {
        report.redis_note = Some(
            "skipped: redis-server and redis-benchmark are not both on PATH \
             (Debian: apt-get install redis-server redis-tools)"
                .into(),
        );
        None
    } else {
        let in_memory =
            redis::RedisServer::start(redis::RedisMode::InMemory, &tmp.path().join("redis-mem"))?;
        let fsync_always = redis::RedisServer::start(
            redis::RedisMode::FsyncAlways,
            &tmp.path().join("redis-aof"),
        )?;
        let crate_in_memory: Arc<dyn BenchTarget> =
            Arc::new(RedisCrateTarget::connect(in_memory.port()).await?);
        let crate_fsync_always: Arc<dyn BenchTarget> =
            Arc::new(RedisCrateTarget::connect(fsync_always.port()).await?);
        Some(RedisAnchors {
            in_memory,
            fsync_always,
            crate_in_memory,
            crate_fsync_always,
        })
    };

    // Subjects take turns within each workload, so a burst of background
    // load on a shared machine skews one workload's rows together instead of
    // one subject's whole column, and the ratios stay comparable.
    for workload in &workloads {
        let mut subjects = vec![(Subject::Remote, &remote, Some(process.pid()))];
        if !opts.remote_only {
            subjects.insert(0, (Subject::Memory, &memory, None));
            subjects.insert(1, (Subject::Embedded, &embedded, None));
        }
        for (subject, target, pid) in subjects {
            let probe = (subject == Subject::Remote).then_some(&probe);
            let m = measure_target(subject, target, workload, &budget, pid, probe).await?;
            report.measurements.push(m);
        }
        if let Some(anchors) = &redis_servers {
            for m in measure_redis(opts, workload, &budget, anchors).await? {
                report.measurements.push(m);
            }
        }
    }
    drop((memory, embedded, remote, redis_servers));
    stop_server(process).await?;

    if opts.rss_store_ids > 0 {
        report.rss = Some(measure_rss(opts, server, &tmp.path().join("rss")).await?);
    }
    report.total = started.elapsed();
    report.environment.push(format!(
        "load average (1/5/15 min) at start: {load_before}; at end: {}",
        load_average()
    ));
    Ok(report)
}

/// Both Redis servers and a `redis` crate connection to each.
struct RedisAnchors {
    in_memory: redis::RedisServer,
    fsync_always: redis::RedisServer,
    crate_in_memory: Arc<dyn BenchTarget>,
    crate_fsync_always: Arc<dyn BenchTarget>,
}

/// CPU, core count and Redis version, so a pasted report says what ran it.
fn environment() -> Vec<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut lines = vec![format!(
        "{cores} CPUs ({cpu}) shared by the benchmark client, the server and Redis"
    )];
    if redis::available()
        && let Ok(out) = Command::new("redis-server").arg("--version").output()
    {
        let version = String::from_utf8_lossy(&out.stdout);
        lines.extend(version.lines().next().map(|l| l.trim().to_string()));
    }
    lines
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

async fn measure_target(
    subject: Subject,
    target: &Arc<dyn BenchTarget>,
    workload: &Workload,
    budget: &RunBudget,
    server_pid: Option<u32>,
    probe: Option<&server_metrics::MetricsProbe>,
) -> anyhow::Result<Measurement> {
    let probe = probe.filter(|_| workload.op != Op::Get);
    let before = match probe {
        Some(p) => Some(p.read().await?),
        None => None,
    };
    let sample = workloads::measure(target, workload, budget, server_pid)
        .await
        .with_context(|| format!("{subject}: {workload}"))?;
    let mut m = Measurement::from_sample(*workload, subject, &sample);
    if let (Some(p), Some(before)) = (probe, before) {
        m.commits = Some(p.read().await?.since(&before));
    }
    progress(&m);
    Ok(m)
}

fn progress(m: &Measurement) {
    eprintln!(
        "  {:<26} {:<22} {}",
        m.subject.to_string(),
        m.workload.to_string(),
        m.summary()
    );
}

/// Request count for one `redis-benchmark` run: enough for about
/// `opts.duration` at the rate such a run reaches on small machines, since
/// redis-benchmark takes a count, not a duration.
fn redis_requests(opts: &BenchOptions, mode: redis::RedisMode, clients: usize) -> u64 {
    let expected_rps = match (mode, clients) {
        (redis::RedisMode::InMemory, 1) => 15_000.0,
        (redis::RedisMode::InMemory, _) => 120_000.0,
        (redis::RedisMode::FsyncAlways, 1) => 1_500.0,
        (redis::RedisMode::FsyncAlways, _) => 50_000.0,
    };
    let n = (expected_rps * opts.duration.as_secs_f64()) as u64;
    n.clamp(clients as u64 * 10, opts.max_ops.max(clients as u64 * 10))
}

/// The Redis rows for one workload. `set` and `checkpoint` workloads: both
/// servers, through `redis-benchmark` (SET; not for checkpoints, which it
/// cannot shape) and through the `redis` crate. `get`: the in-memory server
/// (a durable store's reads are its in-memory reads); for redis-benchmark a
/// SET pass with this value size runs first, unmeasured. set_many: the
/// `redis` crate's MSET only.
async fn measure_redis(
    opts: &BenchOptions,
    workload: &Workload,
    budget: &RunBudget,
    anchors: &RedisAnchors,
) -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    let crate_runs: Vec<(Subject, &Arc<dyn BenchTarget>, u32)> = match workload.op {
        Op::Set | Op::Checkpoint | Op::SetMany => vec![
            (
                Subject::RedisCrateInMemory,
                &anchors.crate_in_memory,
                anchors.in_memory.pid(),
            ),
            (
                Subject::RedisCrateFsyncAlways,
                &anchors.crate_fsync_always,
                anchors.fsync_always.pid(),
            ),
        ],
        Op::Get => vec![(
            Subject::RedisCrateInMemory,
            &anchors.crate_in_memory,
            anchors.in_memory.pid(),
        )],
    };
    for (subject, target, pid) in crate_runs {
        out.push(measure_target(subject, target, workload, budget, Some(pid), None).await?);
    }
    let bench_runs: Vec<(&redis::RedisServer, redis::RedisMode, Subject, &str)> = match workload.op
    {
        Op::Set => vec![
            (
                &anchors.in_memory,
                redis::RedisMode::InMemory,
                Subject::RedisInMemory,
                "set",
            ),
            (
                &anchors.fsync_always,
                redis::RedisMode::FsyncAlways,
                Subject::RedisFsyncAlways,
                "set",
            ),
        ],
        Op::Get => vec![(
            &anchors.in_memory,
            redis::RedisMode::InMemory,
            Subject::RedisInMemory,
            "get",
        )],
        Op::SetMany | Op::Checkpoint => Vec::new(),
    };
    for (server, mode, subject, test) in bench_runs {
        let port = server.port();
        let (value_bytes, clients) = (workload.value_bytes, workload.concurrency);
        let requests = redis_requests(opts, mode, clients);
        if test == "get" {
            // Fill the keyspace with values of this size, unmeasured.
            let fill = requests.min(20_000);
            tokio::task::spawn_blocking(move || {
                redis::benchmark(port, &["set"], value_bytes, clients, fill)
            })
            .await
            .context("redis-benchmark task panicked")??;
        }
        let pid = server.pid();
        let (results, cpu) = tokio::task::spawn_blocking(move || {
            let meter = CpuMeter::start(true, Some(pid));
            let results = redis::benchmark(port, &[test], value_bytes, clients, requests);
            (results, meter.stop())
        })
        .await
        .context("redis-benchmark task panicked")?;
        let wanted = test.to_ascii_uppercase();
        let (_, result) = results?
            .into_iter()
            .find(|(name, _)| *name == wanted)
            .with_context(|| format!("redis-benchmark reported no {wanted}"))?;
        let m = Measurement::from_redis(*workload, subject, requests, &result, cpu);
        progress(&m);
        out.push(m);
    }
    Ok(out)
}

async fn measure_rss(
    opts: &BenchOptions,
    server: &ServerCommand,
    dir: &Path,
) -> anyhow::Result<RssResult> {
    let process = start_server(server, dir, &["--durability", "immediate"]).await?;
    let before = rss::vm_rss_bytes(process.pid())?;
    let provider = remote_provider(&process, opts)?;
    let t0 = Instant::now();
    rss::write_distinct_stores(Arc::clone(&provider), 0..opts.rss_store_ids, 64).await?;
    let write_time = t0.elapsed();
    let after = rss::vm_rss_bytes(process.pid())?;
    drop(provider);
    stop_server(process).await?;
    let result = RssResult {
        store_ids: opts.rss_store_ids,
        before,
        after,
        write_time,
    };
    eprintln!("  {result}");
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let o = BenchOptions::parse_args(Vec::<String>::new()).unwrap();
        assert!(!o.quick);
        assert_eq!(o.rss_store_ids, RSS_TARGET_STORE_IDS);

        let o = BenchOptions::parse_args([
            "--duration-secs",
            "0.5",
            "--quick",
            "--ops",
            "10",
            "--no-redis",
        ])
        .unwrap();
        assert!(o.quick && !o.redis);
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(o.max_ops, 10);

        for bad in [
            &["--ops"][..],
            &["--ops", "0"],
            &["--duration-secs", "-1"],
            &["--frobnicate"],
        ] {
            assert!(
                BenchOptions::parse_args(bad.iter().copied()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn redis_request_counts_follow_the_duration_and_cap() {
        let mut o = BenchOptions::full();
        assert_eq!(redis_requests(&o, redis::RedisMode::InMemory, 64), 300_000);
        o.max_ops = 1000;
        assert_eq!(redis_requests(&o, redis::RedisMode::InMemory, 64), 1000);
        o.max_ops = 1;
        assert_eq!(redis_requests(&o, redis::RedisMode::InMemory, 64), 640);
    }
}

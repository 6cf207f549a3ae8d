//! Replication benchmark: `cargo run --release -p drasi-store-tests
//! --example replication_bench` (`-- --help` for options). See
//! `docs/benchmarks.md`.
//!
//! Durable `set` and linearizable `get` through `RemoteStateStoreProvider`
//! against one server (a single-replica store, as today) and against three
//! real server processes replicating on loopback, reached through the
//! leader's URL first and through a follower's URL first (writes then take
//! the forwarding hop). Then failover: under 16 writers, `kill -9` the
//! leader and time how long until a write issued after the kill succeeds,
//! for several rounds; and the planned counterpart, a leadership hand-over
//! (`POST /v1/cluster/step-down`) before the leader restarts, as in a
//! rolling update. Like the main benchmark, the server processes are
//! this executable re-run with a marker variable.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drasi_lib::StateStoreProvider;
use drasi_state_store_redb::RedbStateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::bench::report::{latency, rate};
use drasi_store_tests::bench::target::{BenchTarget, ProviderTarget};
use drasi_store_tests::bench::workloads::{self, Op, RunBudget, Workload};
use drasi_store_tests::bench::{self, ServerCommand};
use drasi_store_tests::cluster::{CLIENT_TOKEN, Cluster};

const SERVER_CHILD_ENV: &str = "DRASI_REPLICATION_BENCH_SERVER_CHILD";
/// After a kill, writer answers that arrive sooner than this were already
/// on their way from the dead leader.
const ACK_IN_TRANSIT: Duration = Duration::from_millis(100);
const USAGE: &str = "usage: replication_bench [--duration-secs S] [--rounds N] [--quick]
  --duration-secs S  measured seconds per workload and subject (default 2.5)
  --rounds N         failover rounds, each a kill -9 of the leader (default 10)
  --quick            0.3 s per workload and 2 rounds: a smoke run
  --failover-only    only the failover rounds
  --hand-over-only   only the hand-over rounds (POST /v1/cluster/step-down)";

struct Options {
    duration: Duration,
    rounds: usize,
    failover_only: bool,
    hand_over_only: bool,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut opts = Options {
        duration: Duration::from_millis(2500),
        rounds: 10,
        failover_only: false,
        hand_over_only: false,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--duration-secs" => {
                let secs: f64 = value("--duration-secs")?.parse()?;
                if !(secs.is_finite() && secs > 0.0) {
                    bail!("--duration-secs must be positive");
                }
                opts.duration = Duration::from_secs_f64(secs);
            }
            "--rounds" => opts.rounds = value("--rounds")?.parse()?,
            "--failover-only" => opts.failover_only = true,
            "--hand-over-only" => opts.hand_over_only = true,
            "--quick" => {
                opts.duration = Duration::from_millis(300);
                opts.rounds = 2;
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    if bench::is_server_child(SERVER_CHILD_ENV) {
        return drasi_store_server::cli_main();
    }
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(&opts)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("replication benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn provider(urls: &str, token: &str) -> anyhow::Result<Arc<dyn BenchTarget>> {
    let provider = RemoteStateStoreProvider::builder(urls)
        .token(token)
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok(Arc::new(ProviderTarget(Arc::new(provider))))
}

/// Every URL of the cluster, node `first` first.
fn urls_from(cluster: &Cluster, first: usize) -> String {
    (0..cluster.len())
        .map(|i| cluster.url((first + i) % cluster.len()))
        .collect::<Vec<_>>()
        .join(",")
}

async fn run(opts: &Options) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("executable path")?;
    let env = [(SERVER_CHILD_ENV, "1")];
    let tmp = tempfile::Builder::new()
        .prefix("drasi-replication-bench-")
        .tempdir()?;
    let budget = RunBudget {
        warmup: Duration::from_millis(300),
        duration: opts.duration,
        max_ops: 2_000_000,
    };

    let embedded: Arc<dyn BenchTarget> = Arc::new(ProviderTarget(Arc::new(
        RedbStateStoreProvider::new(tmp.path().join("embedded.redb"))?,
    )));
    let server = ServerCommand::reexec_current(SERVER_CHILD_ENV)?;
    let single = bench::start_server(
        &server,
        &tmp.path().join("single"),
        &["--durability", "immediate"],
    )
    .await?;
    let one = provider(&single.url(), bench::TOKEN)?;

    let cluster_dir = tmp.path().join("cluster");
    std::fs::create_dir_all(&cluster_dir)?;
    let root = cluster_dir.clone();
    let exe_owned = exe.to_string();
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::start_with_env(&exe_owned, &env, &root, 3, &["--durability", "immediate"])
    })
    .await??;
    let cluster = Arc::new(cluster);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let follower = (leader + 1) % cluster.len();
    let via_leader = provider(&urls_from(&cluster, leader), CLIENT_TOKEN)?;
    let via_follower = provider(&urls_from(&cluster, follower), CLIENT_TOKEN)?;

    let workloads = [
        Workload {
            op: Op::Set,
            concurrency: 1,
            value_bytes: 16,
        },
        Workload {
            op: Op::Set,
            concurrency: 64,
            value_bytes: 16,
        },
        Workload {
            op: Op::Checkpoint,
            concurrency: workloads::CHECKPOINT_REACTIONS,
            value_bytes: workloads::CHECKPOINT_VALUE_BYTES,
        },
        Workload {
            op: Op::Get,
            concurrency: 1,
            value_bytes: 16,
        },
        Workload {
            op: Op::Get,
            concurrency: 64,
            value_bytes: 16,
        },
    ];
    let subjects: [(&str, &Arc<dyn BenchTarget>); 4] = [
        ("embedded redb", &embedded),
        ("1 replica", &one),
        ("3 replicas, leader URL first", &via_leader),
        ("3 replicas, follower URL first", &via_follower),
    ];
    let mut out = String::new();
    if opts.failover_only {
        out.push_str(&failover(&cluster, opts.rounds).await?);
        return Ok(out);
    }
    if opts.hand_over_only {
        out.push_str(&hand_over(&cluster, opts.rounds).await?);
        return Ok(out);
    }
    out.push_str(&format!(
        "{} CPUs; {} measured per workload and subject; durable (`--durability immediate`)\n\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        humantime(opts.duration)
    ));
    out.push_str("| workload | subject | ops/s | p50 | p99 | vs 1 replica |\n|---|---|---:|---:|---:|---:|\n");
    for workload in &workloads {
        let mut base = None;
        for (name, target) in subjects {
            // The embedded provider has no linearizable remote reads to
            // compare with; it is the write baseline.
            if workload.op == Op::Get && name == "embedded redb" {
                continue;
            }
            let sample = workloads::measure(target, workload, &budget, None)
                .await
                .with_context(|| format!("{name}: {workload}"))?;
            let ops = sample.ops_per_sec();
            if name == "1 replica" {
                base = Some(ops);
            }
            let ratio = match base {
                Some(b) if name != "1 replica" => format!("{:.2}x", ops / b),
                _ => "—".into(),
            };
            let line = format!(
                "| {workload} | {name} | {} | {} | {} | {ratio} |\n",
                rate(ops),
                latency(Some(sample.p50)),
                latency(Some(sample.p99)),
            );
            eprint!("{line}");
            out.push_str(&line);
        }
    }
    drop((one, via_leader, via_follower));
    single.terminate(Duration::from_secs(30))?;

    out.push('\n');
    out.push_str(&failover(&cluster, opts.rounds).await?);
    out.push('\n');
    out.push_str(&hand_over(&cluster, opts.rounds).await?);
    Ok(out)
}

fn humantime(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `rounds` times: under 16 writers (a provider given every URL, default
/// failover budget), `kill -9` the leader, and time from the kill to the
/// first successful write issued after it; then restart the node and let
/// it catch up.
async fn failover(cluster: &Arc<Cluster>, rounds: usize) -> anyhow::Result<String> {
    let writers = Writers::start(cluster)?;
    let mut table = String::from(
        "| round | killed (leader) | new leader | kill → first acknowledged write | kill → first writer ack (default client) | writer errors |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut times = Vec::new();
    for round in 1..=rounds {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let errors_before = writers.errors.load(Ordering::Relaxed);
        *writers.first_ack.lock().unwrap() = None;
        cluster.kill9(leader)?;
        let killed = Instant::now();
        *writers.killed_at.lock().unwrap() = Some(killed);
        // The server side of a failover: a write sent straight to each
        // surviving node in turn, every 20 ms, without client retries,
        // until one is acknowledged.
        let survivors: Vec<usize> = (0..cluster.len()).filter(|i| *i != leader).collect();
        let mut n = 0u64;
        let took = loop {
            n += 1;
            let node = survivors[n as usize % survivors.len()];
            if let Ok(r) = cluster
                .put(node, "failover", "probe", &n.to_le_bytes())
                .await
                && r.status().is_success()
            {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("round {round}: no write was acknowledged within 60 s of the kill");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while writers.first_ack.lock().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rejoin(cluster, leader, round).await?;
        let round_errors = writers.errors.load(Ordering::Relaxed) - errors_before;
        let line = format!(
            "| {round} | {leader} | {new_leader} | {} ms | {} | {round_errors} |\n",
            took.as_millis(),
            writers
                .first_ack
                .lock()
                .unwrap()
                .map_or("none".into(), |d| format!("{} ms", d.as_millis()))
        );
        eprint!("{line}");
        table.push_str(&line);
        times.push(took);
    }
    let (acked, errors) = writers.stop().await?;
    times.sort();
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        let median = times[times.len() / 2];
        table.push_str(&format!(
            "\nkill → first acknowledged write over {} rounds: min {} ms, median {} ms, max {} ms; \
             16 writers through the default client (10 s failover budget): {} writes \
             acknowledged, {} calls failed\n",
            times.len(),
            min.as_millis(),
            median.as_millis(),
            max.as_millis(),
            acked,
            errors,
        ));
    }
    Ok(table)
}

/// 16 writers calling `set` through one provider given every URL (the
/// default client settings: 10 s failover budget), counting what they see.
struct Writers {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    /// The longest call since the last reset, in microseconds.
    longest_us: Arc<AtomicU64>,
    /// When the current round's leader was killed, and how long after it a
    /// writer's call was first acknowledged again: what an application with
    /// the default client settings sees of a failover.
    killed_at: Arc<std::sync::Mutex<Option<Instant>>>,
    first_ack: Arc<std::sync::Mutex<Option<Duration>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(cluster: &Cluster) -> anyhow::Result<Writers> {
        let provider = Arc::new(
            RemoteStateStoreProvider::builder(cluster.urls())
                .token(CLIENT_TOKEN)
                .build()?,
        );
        let mut writers = Writers {
            stop: Arc::default(),
            errors: Arc::default(),
            acked: Arc::default(),
            longest_us: Arc::default(),
            killed_at: Arc::default(),
            first_ack: Arc::default(),
            tasks: Vec::new(),
        };
        for w in 0..16 {
            let p = provider.clone();
            let stop = writers.stop.clone();
            let errors = writers.errors.clone();
            let acked = writers.acked.clone();
            let longest_us = writers.longest_us.clone();
            let killed_at = writers.killed_at.clone();
            let first_ack = writers.first_ack.clone();
            writers.tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    let result = p
                        .set("failover", &format!("w{w}"), n.to_le_bytes().to_vec())
                        .await;
                    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    longest_us.fetch_max(took, Ordering::Relaxed);
                    match result {
                        Ok(()) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            // Answers already on their way when the leader
                            // died arrive within milliseconds; later ones
                            // went through the new leader.
                            let killed = *killed_at.lock().unwrap();
                            if let Some(k) = killed.filter(|k| k.elapsed() >= ACK_IN_TRANSIT) {
                                first_ack.lock().unwrap().get_or_insert(k.elapsed());
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Ok(writers)
    }

    /// Stops the writers; answers (acknowledged, failed) calls in all.
    async fn stop(self) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await?;
        }
        Ok((
            self.acked.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        ))
    }
}

/// Restarts the former leader and waits until it holds the whole log
/// again, so the next round starts from three healthy replicas.
async fn rejoin(cluster: &Cluster, node: usize, round: usize) -> anyhow::Result<()> {
    cluster.restart(node)?;
    cluster
        .caught_up(node, Duration::from_secs(60))
        .await
        .with_context(|| format!("round {round}"))
}

/// `rounds` times, as a rolling update restarts a leader: under the same
/// 16 writers, `POST /v1/cluster/step-down` on the leader, then stop it
/// (SIGTERM) and start it again. Reports the hand-over's own time (from
/// the answer), the longest writer call of the round (what an application
/// sees of it) and failed calls, next to the failover rounds above.
async fn hand_over(cluster: &Arc<Cluster>, rounds: usize) -> anyhow::Result<String> {
    let writers = Writers::start(cluster)?;
    let mut table = String::from(
        "| round | leader | new leader | step-down answered after | longest writer call | writer errors |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut times = Vec::new();
    let mut stalls = Vec::new();
    for round in 1..=rounds {
        // Past the new leader's first second (its own lease), as in a
        // rollout where the leader goes last.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let errors_before = writers.errors.load(Ordering::Relaxed);
        writers.longest_us.store(0, Ordering::Relaxed);
        let answer = cluster
            .step_down(leader)
            .await
            .with_context(|| format!("round {round}"))?;
        if !answer.stepped_down {
            bail!("round {round}: node {leader} did not step down: {answer:?}");
        }
        let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        // Writers held back by the hand-over finish within a round trip.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let longest = Duration::from_micros(writers.longest_us.load(Ordering::Relaxed));
        cluster.stop(leader)?;
        rejoin(cluster, leader, round).await?;
        let round_errors = writers.errors.load(Ordering::Relaxed) - errors_before;
        let line = format!(
            "| {round} | {leader} | {new_leader} | {} ms | {} ms | {round_errors} |\n",
            answer.took_ms,
            longest.as_millis(),
        );
        eprint!("{line}");
        table.push_str(&line);
        times.push(answer.took_ms);
        stalls.push(longest);
    }
    let (acked, errors) = writers.stop().await?;
    times.sort();
    stalls.sort();
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        table.push_str(&format!(
            "\nstep-down over {} rounds: min {min} ms, median {} ms, max {max} ms; longest writer \
             call per round: median {} ms, max {} ms; {acked} writes acknowledged, {errors} calls \
             failed (the stop and restart of the old leader included)\n",
            times.len(),
            times[times.len() / 2],
            stalls[stalls.len() / 2].as_millis(),
            stalls[stalls.len() - 1].as_millis(),
        ));
    }
    Ok(table)
}

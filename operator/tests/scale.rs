//! The operator at scale: the release operator binary against the SIMULATED
//! API server (`support/fake_api/`, served over loopback HTTP) with 1,000
//! `DrasiStateStore`s. The benchmark is not part of `cargo test`; run it with
//!
//! ```sh
//! cargo test --release -p drasi-store-operator --test scale -- --ignored --nocapture
//! ```
//!
//! (`SCALE_STORES=<n>` changes the number of stores). Results are recorded
//! in docs/benchmarks.md, "The operator at scale". The same scenario with 20
//! stores runs in every `cargo test` and asserts the property that must not
//! regress: a restarted operator whose stores are all up to date writes
//! nothing.
//!
//! The operator runs as its own process, so its resident memory
//! (`/proc/<pid>/status`) does not include the simulated API server, which
//! holds every object, every watch event and every request in this process.
//!
//! Phases:
//! 1. cold start: the stores exist, none of their objects do; the operator
//!    starts, adds finalizers, applies every store's objects and writes
//!    `Provisioning` (then this test plays the StatefulSet controller and
//!    every store goes `Ready`);
//! 2. steady state: the operator is restarted with every store `Ready` and
//!    up to date; its initial list reconciles every store once (the same
//!    `reconcile()` the 5-minute requeue runs): API requests per reconcile,
//!    split into reads and writes, must show zero writes;
//! 3. one no-op reconcile at a time, in this process (kube `Client` on the
//!    same simulated server): exact per-reconcile latency without the
//!    queueing of phase 1 and 2, where all stores are reconciled at once.

// The shared harness serves several test binaries; this one uses only part of it.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::*;

const OPERATOR: &str = env!("CARGO_BIN_EXE_drasi-store-operator");

/// Verbs that change something on the API server.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_with_up_to_date_stores_writes_nothing() {
    let report = scenario(20).await;
    assert_eq!(report.resync.writes(), 0, "{:#?}", report.resync.writes);
    assert_eq!(
        report.sequential.writes(),
        0,
        "{:#?}",
        report.sequential.writes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (about a minute in release): run it explicitly, see the module docs"]
async fn a_thousand_stores() {
    let stores = std::env::var("SCALE_STORES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let report = scenario(stores).await;
    report.print();
    assert_eq!(report.resync.writes(), 0, "{:#?}", report.resync.writes);
    assert_eq!(
        report.sequential.writes(),
        0,
        "{:#?}",
        report.sequential.writes
    );
}

struct Report {
    stores: usize,
    cold_applied: Duration,
    cold_ready: Duration,
    cold: Process,
    resync_time: Duration,
    resync: Requests,
    restarted: Process,
    sequential: Requests,
    sequential_latency: Vec<Duration>,
}

/// What one operator process did, from its /metrics and /proc.
struct Process {
    reconciles: u64,
    errors: u64,
    /// Cumulative histogram of `reconcile_duration_seconds`: (le, count).
    buckets: Vec<(f64, u64)>,
    duration_sum: f64,
    rss_kib: u64,
    hwm_kib: u64,
    cpu: Duration,
}

/// API requests by RBAC verb, and the reconciles that sent them.
struct Requests {
    counts: BTreeMap<String, usize>,
    reconciles: u64,
    /// The first few writes, to say what was written when there should be none.
    writes: Vec<String>,
}

impl Requests {
    fn writes(&self) -> usize {
        self.count(|verb| WRITE_VERBS.contains(&verb))
    }
    /// Reads of one object or a label-selected list by a reconcile; the
    /// controller's own list and watch calls are counted apart.
    fn reads(&self) -> usize {
        self.count(|verb| verb == "get")
    }
    fn controller_calls(&self) -> usize {
        self.count(|verb| verb == "list" || verb == "watch")
    }
    fn count(&self, pick: impl Fn(&str) -> bool) -> usize {
        self.counts
            .iter()
            .filter(|(verb, _)| pick(verb))
            .map(|(_, n)| n)
            .sum()
    }
    fn per_reconcile(&self, n: usize) -> f64 {
        n as f64 / self.reconciles.max(1) as f64
    }
}

async fn scenario(stores: usize) -> Report {
    let h = Harness::new();
    let addr = h.server.serve_http().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(addr)).expect("write kubeconfig");
    let names: Vec<String> = (0..stores).map(|i| format!("store-{i:04}")).collect();
    for name in &names {
        h.create_store(name, serde_json::json!({}));
    }

    // 1. Cold start.
    let started = Instant::now();
    let cold = Operator::start(&kubeconfig, dir.path(), "cold").await;
    wait_for_phase(&h, &names, "Provisioning", &cold).await;
    let cold_applied = started.elapsed();
    for name in &names {
        h.mark_statefulset_ready(name);
    }
    wait_for_phase(&h, &names, "Ready", &cold).await;
    let cold_ready = started.elapsed();
    cold.settle(&h).await;
    let cold_process = cold.process().await;
    cold.stop().await;

    // 2. Restart with everything up to date.
    h.server.clear_requests();
    let started = Instant::now();
    let restarted = Operator::start(&kubeconfig, dir.path(), "restarted").await;
    restarted.wait_for_reconciles(stores as u64).await;
    restarted.settle(&h).await;
    let resync_time = started.elapsed();
    let restarted_process = restarted.process().await;
    let resync = Requests {
        counts: h.server.request_counts(),
        reconciles: restarted_process.reconciles + restarted_process.errors,
        writes: first_writes(&h),
    };
    restarted.stop().await;

    // 3. One no-op reconcile at a time, in this process.
    h.server.clear_requests();
    let mut sequential_latency = Vec::with_capacity(stores);
    for name in &names {
        let t = Instant::now();
        h.reconcile(name).await.expect("no-op reconcile");
        sequential_latency.push(t.elapsed());
    }
    sequential_latency.sort();
    let sequential = Requests {
        counts: h.server.request_counts(),
        reconciles: stores as u64,
        writes: first_writes(&h),
    };

    Report {
        stores,
        cold_applied,
        cold_ready,
        cold: cold_process,
        resync_time,
        resync,
        restarted: restarted_process,
        sequential,
        sequential_latency,
    }
}

fn first_writes(h: &Harness) -> Vec<String> {
    h.server
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .take(5)
        .map(|r| format!("{} {}?{} {:?}", r.method, r.path, r.query, r.body))
        .collect()
}

fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: simulated
  cluster:
    server: http://{addr}
users:
- name: simulated
  user:
    token: simulated
contexts:
- name: simulated
  context:
    cluster: simulated
    user: simulated
    namespace: {NS}
current-context: simulated
"
    )
}

/// Waits until every store reports `phase`; panics after 10 minutes.
async fn wait_for_phase(h: &Harness, names: &[String], phase: &str, operator: &Operator) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut pending: Vec<&String> = names.iter().collect();
    while !pending.is_empty() {
        pending.retain(|name| {
            h.server
                .get(&store_path(name))
                .is_none_or(|store| store["status"]["phase"] != phase)
        });
        if Instant::now() > deadline {
            panic!(
                "{} stores not {phase} after 10 minutes; operator log:\n{}",
                pending.len(),
                operator.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The operator binary, as its own process.
struct Operator {
    child: Child,
    metrics: SocketAddr,
    log: std::path::PathBuf,
}

impl Operator {
    async fn start(kubeconfig: &std::path::Path, dir: &std::path::Path, name: &str) -> Self {
        let metrics = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("address")
        };
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(OPERATOR)
            // The image of the harness's own context, so that phase 3's
            // in-process reconciles desire the very same objects.
            .args([
                "run",
                "--watch-namespace",
                NS,
                "--server-image",
                SERVER_IMAGE,
            ])
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).expect("log file"))
            .spawn()
            .expect("start the operator binary");
        let operator = Self {
            child,
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while scrape(metrics).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "operator metrics never served; log:\n{}",
                operator.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        operator
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn metrics(&self) -> String {
        scrape(self.metrics).await.expect("operator metrics")
    }

    async fn wait_for_reconciles(&self, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while counter(
            &self.metrics().await,
            "reconciliations_total{result=\"success\"}",
        ) < at_least
        {
            assert!(
                Instant::now() < deadline,
                "fewer than {at_least} reconciles after 10 minutes; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until neither the reconcile count nor the API requests moved
    /// for a second (trailing reconciles triggered by owned-object events).
    async fn settle(&self, h: &Harness) {
        let mut last = (0, 0);
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(1) {
            let now = (
                counter(
                    &self.metrics().await,
                    "reconciliations_total{result=\"success\"}",
                ),
                h.server.request_counts().values().sum::<usize>(),
            );
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn process(&self) -> Process {
        let text = self.metrics().await;
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which is in parentheses): utime and
        // stime are the 12th and 13th, in clock ticks (100 per second).
        let after_comm: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| after_comm.get(i)?.parse::<u64>().ok())
            .sum();
        let prefix = "drasi_store_operator_reconcile_duration_seconds";
        let buckets = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{prefix}_bucket{{le=\"")))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        Process {
            reconciles: counter(&text, "reconciliations_total{result=\"success\"}"),
            errors: counter(&text, "reconciliations_total{result=\"error\"}"),
            buckets,
            duration_sum: text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{prefix}_sum ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN),
            rss_kib: kib("VmRSS:"),
            hwm_kib: kib("VmHWM:"),
            cpu: Duration::from_millis(ticks * 10),
        }
    }

    /// SIGTERM, as the kubelet would; the operator finishes in-flight
    /// reconciles and exits.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// GET /metrics over plain HTTP/1.0; `None` while nothing listens.
async fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// The value of `drasi_store_operator_<name>` (0 when absent).
fn counter(metrics: &str, name: &str) -> u64 {
    let prefix = format!("drasi_store_operator_{name} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

impl Process {
    /// The upper bound of the histogram bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> String {
        let total = self.buckets.last().map_or(0, |b| b.1);
        let rank = (total as f64 * q).ceil() as u64;
        match self.buckets.iter().find(|(_, count)| *count >= rank.max(1)) {
            Some((le, _)) if le.is_finite() => format!("<= {} ms", le * 1000.0),
            _ => "> 41 s".to_string(),
        }
    }

    fn summary(&self, label: &str) {
        let count = self.buckets.last().map_or(0, |b| b.1);
        println!(
            "{label}: {} reconciles ({} errors), p50 {}, p99 {}, mean {:.1} ms; \
             CPU {:.2} s ({:.2} ms per reconcile); VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            self.reconciles,
            self.errors,
            self.quantile(0.50),
            self.quantile(0.99),
            self.duration_sum / count.max(1) as f64 * 1000.0,
            self.cpu.as_secs_f64(),
            self.cpu.as_secs_f64() * 1000.0 / count.max(1) as f64,
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0,
        );
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Report {
    fn print(&self) {
        let n = self.stores;
        println!("== the operator at scale: {n} DrasiStateStores, simulated API server ==");
        println!(
            "cold start: all {n} applied (Provisioning) after {:.2} s, all Ready {:.2} s after start",
            self.cold_applied.as_secs_f64(),
            self.cold_ready.as_secs_f64()
        );
        self.cold.summary("cold start, operator metrics");
        println!(
            "restart with every store up to date: settled after {:.2} s",
            self.resync_time.as_secs_f64()
        );
        self.restarted.summary("restart resync, operator metrics");
        let r = &self.resync;
        println!(
            "restart resync: {} reconciles, {:.2} reads and {:.2} writes per reconcile \
             (+{} list/watch calls of the controller's caches); requests by verb {:?}",
            r.reconciles,
            r.per_reconcile(r.reads()),
            r.per_reconcile(r.writes()),
            r.controller_calls(),
            r.counts
        );
        let s = &self.sequential;
        let l = &self.sequential_latency;
        println!(
            "one no-op reconcile at a time ({n}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             {:.2} reads and {:.2} writes per reconcile; requests by verb {:?}",
            percentile(l, 0.50).as_secs_f64() * 1000.0,
            percentile(l, 0.99).as_secs_f64() * 1000.0,
            l.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            s.per_reconcile(s.reads()),
            s.per_reconcile(s.writes()),
            s.counts
        );
        let hwm = self.cold.hwm_kib.max(self.restarted.hwm_kib) as f64 / 1024.0;
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!("targets:");
        println!(
            "  operator resident memory < 64 MiB: peak VmHWM {hwm:.1} MiB: {}",
            met(hwm < 64.0)
        );
        println!(
            "  p99 per reconcile < 100 ms: cold start {}, restart {}, one at a time {:.2} ms",
            self.cold.quantile(0.99),
            self.restarted.quantile(0.99),
            percentile(l, 0.99).as_secs_f64() * 1000.0
        );
        println!(
            "  zero writes per no-op resync: {} writes (restart), {} (one at a time): {}",
            r.writes(),
            s.writes(),
            met(r.writes() == 0 && s.writes() == 0)
        );
    }
}

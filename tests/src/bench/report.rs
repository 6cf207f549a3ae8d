//! The results table, the ratios and the check of every target in the issue.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::cpu::CpuUse;
use super::redis::RedisResult;
use super::server_metrics::CommitCounters;
use super::workloads::{CHECKPOINT_REACTIONS, Op, SET_MANY_ENTRIES, Sample, Workload};
use super::{BenchOptions, RSS_TARGET_BYTES, RSS_TARGET_STORE_IDS};

/// What a measurement ran against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Memory,
    Embedded,
    Remote,
    /// `redis-benchmark` (C, one connection per client) against Redis
    /// without persistence.
    RedisInMemory,
    /// `redis-benchmark` against Redis with `appendfsync always`.
    RedisFsyncAlways,
    /// The `redis` crate, one multiplexed connection, no persistence.
    RedisCrateInMemory,
    /// The `redis` crate, one multiplexed connection, `appendfsync always`.
    RedisCrateFsyncAlways,
}

impl Subject {
    /// Every subject, in table order.
    pub const ALL: [Subject; 7] = [
        Subject::Memory,
        Subject::Embedded,
        Subject::Remote,
        Subject::RedisInMemory,
        Subject::RedisCrateInMemory,
        Subject::RedisFsyncAlways,
        Subject::RedisCrateFsyncAlways,
    ];

    /// The Redis anchors without persistence (for reads).
    pub const REDIS_IN_MEMORY: [Subject; 2] = [Subject::RedisInMemory, Subject::RedisCrateInMemory];
    /// The durable Redis anchors (for durable writes).
    pub const REDIS_DURABLE: [Subject; 2] =
        [Subject::RedisFsyncAlways, Subject::RedisCrateFsyncAlways];
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::Memory => "memory (in-process)",
            Subject::Embedded => "embedded redb",
            Subject::Remote => "remote (loopback)",
            Subject::RedisInMemory => "redis in-memory, redis-benchmark",
            Subject::RedisFsyncAlways => "redis appendfsync always, redis-benchmark",
            Subject::RedisCrateInMemory => "redis in-memory, redis crate",
            Subject::RedisCrateFsyncAlways => "redis appendfsync always, redis crate",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Measurement {
    pub workload: Workload,
    pub subject: Subject,
    /// Calls completed.
    pub ops: u64,
    /// Calls per second.
    pub ops_per_sec: f64,
    /// Entries per second (calls/s x entries per call).
    pub entries_per_sec: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Server commits during the measurement, warm-up and preparation
    /// included (remote write workloads only).
    pub commits: Option<CommitCounters>,
    /// CPU per call of the client side (this process, or the
    /// `redis-benchmark` child) over the measured phase.
    pub client_cpu_per_op: Option<Duration>,
    /// CPU per call of the server process (remote server, redis-server).
    pub server_cpu_per_op: Option<Duration>,
}

fn per_op(total: Duration, ops: u64) -> Duration {
    if ops == 0 {
        Duration::ZERO
    } else {
        total / u32::try_from(ops).unwrap_or(u32::MAX)
    }
}

impl Measurement {
    pub fn from_sample(workload: Workload, subject: Subject, sample: &Sample) -> Self {
        Self {
            workload,
            subject,
            ops: sample.ops,
            ops_per_sec: sample.ops_per_sec(),
            entries_per_sec: sample.entries_per_sec(),
            p50: Some(sample.p50),
            p99: Some(sample.p99),
            commits: None,
            client_cpu_per_op: Some(per_op(sample.cpu.client, sample.ops)),
            server_cpu_per_op: sample.cpu.server.map(|s| per_op(s, sample.ops)),
        }
    }

    pub fn from_redis(
        workload: Workload,
        subject: Subject,
        ops: u64,
        r: &RedisResult,
        cpu: CpuUse,
    ) -> Self {
        let ms = |v: Option<f64>| v.map(|ms| Duration::from_secs_f64(ms / 1000.0));
        Self {
            workload,
            subject,
            ops,
            ops_per_sec: r.rps,
            entries_per_sec: r.rps,
            p50: ms(r.p50_ms),
            p99: ms(r.p99_ms),
            commits: None,
            client_cpu_per_op: Some(per_op(cpu.client, ops)),
            server_cpu_per_op: cpu.server.map(|s| per_op(s, ops)),
        }
    }

    pub fn summary(&self) -> String {
        let mut line = format!(
            "{:>12} {:>10} {:>10}  cpu/op client {:>9} server {:>9}",
            rate(self.entries_per_sec),
            latency(self.p50),
            latency(self.p99),
            latency(self.client_cpu_per_op),
            latency(self.server_cpu_per_op),
        );
        if let Some(commits) = &self.commits {
            let _ = write!(line, "   server: {commits}");
        }
        line
    }
}

#[derive(Debug, Clone)]
pub struct RssResult {
    pub store_ids: usize,
    pub before: u64,
    pub after: u64,
    pub write_time: Duration,
}

impl fmt::Display for RssResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server RSS: {:.1} MiB at start, {:.1} MiB after {} distinct store_ids written once ({:.1} s, {} store_ids/s)",
            mib(self.before),
            mib(self.after),
            self.store_ids,
            self.write_time.as_secs_f64(),
            rate(self.store_ids as f64 / self.write_time.as_secs_f64().max(f64::EPSILON))
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetStatus {
    Met,
    NotMet,
    NotMeasured,
}

impl fmt::Display for TargetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetStatus::Met => "met",
            TargetStatus::NotMet => "NOT met",
            TargetStatus::NotMeasured => "not measured",
        })
    }
}

#[derive(Debug, Clone)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub status: TargetStatus,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub options: BenchOptions,
    pub measurements: Vec<Measurement>,
    pub redis_note: Option<String>,
    pub rss: Option<RssResult>,
    pub total: Duration,
    /// Machine facts worth printing next to the numbers (CPU, load, Redis).
    pub environment: Vec<String>,
}

impl Report {
    pub fn new(options: BenchOptions) -> Self {
        Self {
            options,
            measurements: Vec::new(),
            redis_note: None,
            rss: None,
            total: Duration::ZERO,
            environment: Vec::new(),
        }
    }

    pub fn find(&self, workload: &Workload, subject: Subject) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.workload == *workload && m.subject == subject)
    }

    /// `remote / subject` throughput for one workload.
    pub fn ratio(&self, workload: &Workload, subject: Subject) -> Option<f64> {
        let remote = self.find(workload, Subject::Remote)?;
        let other = self.find(workload, subject)?;
        (other.entries_per_sec > 0.0).then(|| remote.entries_per_sec / other.entries_per_sec)
    }

    /// The strongest of `anchors` for a workload: highest throughput, or
    /// lowest p50 when `by_p50`.
    pub fn strongest(
        &self,
        workload: &Workload,
        anchors: &[Subject],
        by_p50: bool,
    ) -> Option<&Measurement> {
        let found = anchors.iter().filter_map(|s| self.find(workload, *s));
        if by_p50 {
            found.filter(|m| m.p50.is_some()).min_by_key(|m| m.p50)
        } else {
            found.max_by(|a, b| a.entries_per_sec.total_cmp(&b.entries_per_sec))
        }
    }

    /// Every target from the issue, at both value sizes where the workload
    /// has two. Redis targets compare against the stronger of the two Redis
    /// clients (redis-benchmark, the redis crate).
    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut checks = Vec::new();
        let w = |op, concurrency, value_bytes| Workload {
            op,
            concurrency,
            value_bytes,
        };
        for size in [16, 256] {
            let set1 = w(Op::Set, 1, size);
            checks.push(self.ratio_target(
                format!("durable set c=1 {size}B: remote >= 0.8x embedded"),
                &set1,
                Some(Subject::Embedded),
                0.8,
            ));
            checks.push(self.latency_ratio_target(
                format!("durable set c=1 {size}B: remote p99 <= 1.5x embedded p99"),
                &set1,
                Some(Subject::Embedded),
                |m| m.p99,
                1.5,
            ));
        }
        for size in [16, 256] {
            let set64 = w(Op::Set, 64, size);
            checks.push(self.ratio_target(
                format!("durable set c=64 {size}B: remote >= 10x embedded"),
                &set64,
                Some(Subject::Embedded),
                10.0,
            ));
            let anchor = self
                .strongest(&set64, &Subject::REDIS_DURABLE, false)
                .map(|m| m.subject);
            checks.push(self.ratio_target(
                format!(
                    "durable set c=64 {size}B: remote >= 1.0x Redis appendfsync always (stronger client: {})",
                    anchor.map_or("—".to_string(), |s| s.to_string())
                ),
                &set64,
                anchor,
                1.0,
            ));
        }
        for size in [16, 256] {
            let get64 = w(Op::Get, 64, size);
            let anchor = self
                .strongest(&get64, &Subject::REDIS_IN_MEMORY, false)
                .map(|m| m.subject);
            checks.push(self.ratio_target(
                format!(
                    "get c=64 {size}B: remote >= 1.0x Redis in-memory (stronger client: {})",
                    anchor.map_or("—".to_string(), |s| s.to_string())
                ),
                &get64,
                anchor,
                1.0,
            ));
        }
        for size in [16, 256] {
            let get1 = w(Op::Get, 1, size);
            let anchor = self
                .strongest(&get1, &Subject::REDIS_IN_MEMORY, true)
                .map(|m| m.subject);
            checks.push(self.latency_ratio_target(
                format!(
                    "get c=1 {size}B: remote p50 <= 1.5x Redis p50 (lower-latency client: {})",
                    anchor.map_or("—".to_string(), |s| s.to_string())
                ),
                &get1,
                anchor,
                |m| m.p50,
                1.5,
            ));
            let target = format!("get c=1 {size}B: remote p99 <= 0.3 ms");
            checks.push(
                match self.find(&get1, Subject::Remote).and_then(|m| m.p99) {
                    Some(p99) => TargetCheck {
                        target,
                        measured: format!("p99 {}", latency(Some(p99))),
                        status: status(p99 <= Duration::from_micros(300)),
                    },
                    None => not_measured(target),
                },
            );
        }
        checks.push(self.ratio_target(
            format!("set_many({SET_MANY_ENTRIES}): remote >= 1.0x embedded entries/s"),
            &w(Op::SetMany, 1, super::workloads::SET_MANY_VALUE_BYTES),
            Some(Subject::Embedded),
            1.0,
        ));
        checks.push(self.ratio_target(
            format!(
                "DrasiLib-shaped, {CHECKPOINT_REACTIONS} reactions checkpointing at c=1 each: remote >= 2x embedded checkpoints/s"
            ),
            &w(
                Op::Checkpoint,
                CHECKPOINT_REACTIONS,
                super::workloads::CHECKPOINT_VALUE_BYTES,
            ),
            Some(Subject::Embedded),
            2.0,
        ));
        let target = format!(
            "server RSS after {RSS_TARGET_STORE_IDS} distinct store_ids < {} MiB",
            RSS_TARGET_BYTES / (1024 * 1024)
        );
        checks.push(match &self.rss {
            Some(rss) if rss.store_ids >= RSS_TARGET_STORE_IDS => TargetCheck {
                target,
                measured: format!("{:.1} MiB", mib(rss.after)),
                status: status(rss.after < RSS_TARGET_BYTES),
            },
            Some(rss) => TargetCheck {
                target,
                measured: format!(
                    "{:.1} MiB after only {} store_ids",
                    mib(rss.after),
                    rss.store_ids
                ),
                status: TargetStatus::NotMeasured,
            },
            None => not_measured(target),
        });
        checks
    }

    fn ratio_target(
        &self,
        target: String,
        workload: &Workload,
        baseline: Option<Subject>,
        required: f64,
    ) -> TargetCheck {
        match baseline.and_then(|b| Some((b, self.ratio(workload, b)?))) {
            Some((baseline, ratio)) => TargetCheck {
                target,
                measured: format!(
                    "{ratio:.2}x ({} vs {})",
                    rate(
                        self.find(workload, Subject::Remote)
                            .map_or(0.0, |m| m.entries_per_sec)
                    ),
                    rate(
                        self.find(workload, baseline)
                            .map_or(0.0, |m| m.entries_per_sec)
                    )
                ),
                status: status(ratio >= required),
            },
            None => not_measured(target),
        }
    }

    /// `remote latency <= max_ratio x baseline latency`, for the latency
    /// `pick` selects (p50 or p99).
    fn latency_ratio_target(
        &self,
        target: String,
        workload: &Workload,
        baseline: Option<Subject>,
        pick: impl Fn(&Measurement) -> Option<Duration>,
        max_ratio: f64,
    ) -> TargetCheck {
        let remote = self.find(workload, Subject::Remote).and_then(&pick);
        let base = baseline
            .and_then(|b| self.find(workload, b))
            .and_then(&pick);
        match (remote, base) {
            (Some(r), Some(b)) if !b.is_zero() => {
                let ratio = r.as_secs_f64() / b.as_secs_f64();
                TargetCheck {
                    target,
                    measured: format!("{ratio:.2}x ({} vs {})", latency(Some(r)), latency(Some(b))),
                    status: status(ratio <= max_ratio),
                }
            }
            _ => not_measured(target),
        }
    }

    /// The whole report as plain text (Markdown tables, so it can be pasted
    /// into `docs/benchmarks.md` unchanged).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "## Results ({}: {:.1} s measured + {:.1} s warm-up per workload, at most {} calls; total run {:.0} s)\n",
            if o.quick {
                "QUICK smoke run, numbers meaningless"
            } else {
                "full run"
            },
            o.duration.as_secs_f64(),
            o.warmup.as_secs_f64(),
            o.max_ops,
            self.total.as_secs_f64()
        );
        for line in &self.environment {
            let _ = writeln!(out, "- {line}");
        }
        if !self.environment.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "Throughput is entries/s (calls/s, except set_many: 1000 entries per call). Latency is per call. CPU/op is CPU time over the measured phase divided by calls: client = the benchmark process (getrusage; it hosts the in-process stores and every client) or the redis-benchmark child, server = the server process (/proc/<pid>/stat). `remote ÷` is the remote provider's throughput divided by that row's.\n"
        );
        let _ = writeln!(
            out,
            "| workload | store | throughput/s | p50 | p99 | client CPU/op | server CPU/op | remote ÷ |\n|---|---|---:|---:|---:|---:|---:|---:|"
        );
        let mut workloads: Vec<Workload> = Vec::new();
        for m in &self.measurements {
            if !workloads.contains(&m.workload) {
                workloads.push(m.workload);
            }
        }
        for workload in &workloads {
            for subject in Subject::ALL {
                let Some(m) = self.find(workload, subject) else {
                    continue;
                };
                let ratio = match subject {
                    Subject::Remote => "—".to_string(),
                    _ => self
                        .ratio(workload, subject)
                        .map_or("—".to_string(), ratio_text),
                };
                let _ = writeln!(
                    out,
                    "| {workload} | {subject} | {} | {} | {} | {} | {} | {ratio} |",
                    rate(m.entries_per_sec),
                    latency(m.p50),
                    latency(m.p99),
                    latency(m.client_cpu_per_op),
                    latency(m.server_cpu_per_op),
                );
            }
        }
        let commits: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.commits.is_some())
            .collect();
        if !commits.is_empty() {
            let _ = writeln!(
                out,
                "\nServer group commit during the remote write workloads (from its /metrics, warm-up included):\n\n| workload | commits | writes per commit | mean commit time |\n|---|---:|---:|---:|"
            );
            for m in commits {
                let c = m.commits.expect("filtered");
                let per = |x: f64| if c.groups > 0.0 { x / c.groups } else { 0.0 };
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.1} | {:.2} ms |",
                    m.workload,
                    c.groups,
                    per(c.writes),
                    per(c.commit_seconds) * 1000.0
                );
            }
        }
        if let Some(note) = &self.redis_note {
            let _ = writeln!(out, "\nRedis: {note}");
        }
        if let Some(rss) = &self.rss {
            let _ = writeln!(out, "\n{rss}");
        }
        let _ = writeln!(
            out,
            "\n## Targets\n\n| target | measured | status |\n|---|---|---|"
        );
        for check in self.targets() {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                check.target, check.measured, check.status
            );
        }
        out
    }
}

/// Two decimals, or three significant digits for the tiny ratios against
/// the in-process memory provider.
fn ratio_text(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{r:.3e}x")
    }
}

fn status(met: bool) -> TargetStatus {
    if met {
        TargetStatus::Met
    } else {
        TargetStatus::NotMet
    }
}

fn not_measured(target: String) -> TargetCheck {
    TargetCheck {
        target,
        measured: "—".into(),
        status: TargetStatus::NotMeasured,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `12.3k`-style rates keep the table narrow.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1_000_000.0 {
        format!("{:.2}M", per_sec / 1_000_000.0)
    } else if per_sec >= 10_000.0 {
        format!("{:.1}k", per_sec / 1000.0)
    } else {
        format!("{per_sec:.0}")
    }
}

pub fn latency(d: Option<Duration>) -> String {
    match d {
        None => "—".into(),
        Some(d) if d < Duration::from_millis(1) => format!("{:.1} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(workload: Workload, subject: Subject, per_sec: f64, p99_us: u64) -> Measurement {
        Measurement {
            workload,
            subject,
            ops: 100,
            ops_per_sec: per_sec,
            entries_per_sec: per_sec,
            p50: Some(Duration::from_micros(p99_us / 2)),
            p99: Some(Duration::from_micros(p99_us)),
            commits: None,
            client_cpu_per_op: None,
            server_cpu_per_op: None,
        }
    }

    #[test]
    fn targets_compare_the_right_rows() {
        let set64 = Workload {
            op: Op::Set,
            concurrency: 64,
            value_bytes: 16,
        };
        let get1 = Workload {
            op: Op::Get,
            concurrency: 1,
            value_bytes: 16,
        };
        let mut report = Report::new(BenchOptions::full());
        report.measurements = vec![
            m(set64, Subject::Embedded, 3_500.0, 20_000),
            m(set64, Subject::Remote, 70_000.0, 2_000),
            m(set64, Subject::RedisFsyncAlways, 60_000.0, 2_000),
            m(set64, Subject::RedisCrateFsyncAlways, 75_000.0, 2_000),
            m(get1, Subject::Remote, 10_000.0, 400),
        ];
        report.rss = Some(RssResult {
            store_ids: RSS_TARGET_STORE_IDS,
            before: 10 << 20,
            after: 70 << 20,
            write_time: Duration::from_secs(3),
        });
        let checks = report.targets();
        let get = |prefix: &str| {
            checks
                .iter()
                .find(|c| c.target.starts_with(prefix))
                .unwrap_or_else(|| panic!("no target {prefix}"))
        };
        assert_eq!(
            get("durable set c=64 16B: remote >= 10x").status,
            TargetStatus::Met
        );
        assert!(
            get("durable set c=64 16B: remote >= 10x")
                .measured
                .starts_with("20.00x")
        );
        // Against the stronger anchor, the redis crate: 70k vs 75k.
        let redis = get("durable set c=64 16B: remote >= 1.0x Redis");
        assert_eq!(redis.status, TargetStatus::NotMet);
        assert!(redis.target.contains("redis crate"), "{}", redis.target);
        assert!(redis.measured.starts_with("0.93x"), "{}", redis.measured);
        assert_eq!(
            get("durable set c=64 256B: remote >= 10x").status,
            TargetStatus::NotMeasured
        );
        assert_eq!(get("get c=1 16B: remote p99").status, TargetStatus::NotMet);
        assert_eq!(get("server RSS").status, TargetStatus::NotMet);
        let text = report.render();
        assert!(text.contains("| set c=64 16B | embedded redb | 3500 |"));
        assert!(text.contains("20.00x"));
    }
}

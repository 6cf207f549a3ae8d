//! The workloads and the driver that runs one of them against any
//! `StateStoreProvider` at a given concurrency.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::cpu::{CpuMeter, CpuUse};
use super::target::BenchTarget;

/// Keys each `get` workload reads from (written once before measuring).
pub const GET_KEYSPACE: usize = 1024;
/// Distinct keys each writer task cycles through in the `set` workloads, so
/// the database stays small and every run writes the same amount of data.
const SET_KEYS_PER_TASK: u64 = 1024;
/// Entries per call in the `set_many` workload (from the issue).
pub const SET_MANY_ENTRIES: usize = 1000;
/// Value size of the `set_many` workload: the checkpoint-sized hot path.
pub const SET_MANY_VALUE_BYTES: usize = 16;
/// Reactions in the DrasiLib-shaped workload, each checkpointing one call
/// at a time into a store of its own.
pub const CHECKPOINT_REACTIONS: usize = 16;
/// A reaction checkpoint: a sequence number and a little metadata.
pub const CHECKPOINT_VALUE_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Get,
    SetMany,
    /// DrasiLib-shaped: `concurrency` reactions, each overwriting its own
    /// checkpoint key in its own store_id after every result, sequentially.
    Checkpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub op: Op,
    pub concurrency: usize,
    pub value_bytes: usize,
}

impl Workload {
    /// Entries written or read per call.
    pub fn entries_per_op(&self) -> u64 {
        match self.op {
            Op::SetMany => SET_MANY_ENTRIES as u64,
            Op::Set | Op::Get | Op::Checkpoint => 1,
        }
    }

    /// A store_id of its own, so workloads never see each other's keys.
    fn store_id(&self) -> String {
        format!(
            "bench-{}-c{}-v{}",
            self.op_name(),
            self.concurrency,
            self.value_bytes
        )
    }

    pub fn op_name(&self) -> &'static str {
        match self.op {
            Op::Set => "set",
            Op::Get => "get",
            Op::SetMany => "set_many",
            Op::Checkpoint => "checkpoint",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::SetMany => write!(
                f,
                "set_many({SET_MANY_ENTRIES}) c={} {}B",
                self.concurrency, self.value_bytes
            ),
            Op::Checkpoint => write!(
                f,
                "checkpoint {} reactions x c=1 {}B",
                self.concurrency, self.value_bytes
            ),
            _ => write!(
                f,
                "{} c={} {}B",
                self.op_name(),
                self.concurrency,
                self.value_bytes
            ),
        }
    }
}

/// Every workload the issue asks for: set and get at concurrency 1 and 64
/// with 16- and 256-byte values, then set_many of 1000 entries.
pub fn standard_workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    for op in [Op::Set, Op::Get] {
        for concurrency in [1, 64] {
            for value_bytes in [16, 256] {
                all.push(Workload {
                    op,
                    concurrency,
                    value_bytes,
                });
            }
        }
    }
    all.push(Workload {
        op: Op::SetMany,
        concurrency: 1,
        value_bytes: SET_MANY_VALUE_BYTES,
    });
    all.push(Workload {
        op: Op::Checkpoint,
        concurrency: CHECKPOINT_REACTIONS,
        value_bytes: CHECKPOINT_VALUE_BYTES,
    });
    all
}

/// How long one measurement runs: until `duration` has passed or `max_ops`
/// calls were issued, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct RunBudget {
    pub warmup: Duration,
    pub duration: Duration,
    pub max_ops: u64,
}

/// Calls completed, wall time and per-call latencies of one measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ops: u64,
    pub entries: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// CPU over the measured phase only.
    pub cpu: CpuUse,
}

impl Sample {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Entries per second (equal to ops/s except for set_many).
    pub fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Writes the keys the `get` workloads read, so every measured get hits.
pub async fn prepare(provider: &Arc<dyn BenchTarget>, workload: &Workload) -> anyhow::Result<()> {
    if workload.op != Op::Get {
        return Ok(());
    }
    let keys: Vec<String> = (0..GET_KEYSPACE).map(get_key).collect();
    let value = value_of(workload.value_bytes, 0);
    let entries: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|k| (k.as_str(), value.as_slice()))
        .collect();
    provider
        .set_many(&workload.store_id(), &entries)
        .await
        .with_context(|| format!("preparing keys for {workload}"))?;
    Ok(())
}

/// Runs a warm-up (discarded: it opens pooled connections and fills caches)
/// and then the measured phase, whose CPU use (this process, and the
/// process `server_pid` when given) is recorded.
pub async fn measure(
    provider: &Arc<dyn BenchTarget>,
    workload: &Workload,
    budget: &RunBudget,
    server_pid: Option<u32>,
) -> anyhow::Result<Sample> {
    prepare(provider, workload).await?;
    if !budget.warmup.is_zero() {
        drive(provider, workload, budget.warmup, budget.max_ops, None).await?;
    }
    drive(
        provider,
        workload,
        budget.duration,
        budget.max_ops,
        Some(server_pid),
    )
    .await
}

async fn drive(
    provider: &Arc<dyn BenchTarget>,
    workload: &Workload,
    duration: Duration,
    max_ops: u64,
    meter_server: Option<Option<u32>>,
) -> anyhow::Result<Sample> {
    let meter = meter_server.map(|pid| CpuMeter::start(false, pid));
    let store_id: Arc<str> = workload.store_id().into();
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(workload.concurrency);
    for task in 0..workload.concurrency {
        let provider = Arc::clone(provider);
        let store_id = Arc::clone(&store_id);
        let issued = Arc::clone(&issued);
        let workload = *workload;
        tasks.push(tokio::spawn(async move {
            let batch = (workload.op == Op::SetMany).then(|| SetManyBatch::new(task));
            let mut latencies = Vec::new();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= max_ops {
                    break;
                }
                let t0 = Instant::now();
                one_op(&*provider, &store_id, &workload, task, n, batch.as_ref()).await?;
                latencies.push(t0.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("benchmark task panicked")??);
    }
    let elapsed = start.elapsed();
    let cpu = meter.map(CpuMeter::stop).unwrap_or_default();
    if latencies.is_empty() {
        bail!("{workload}: no call completed within {duration:?}");
    }
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    Ok(Sample {
        ops,
        entries: ops * workload.entries_per_op(),
        elapsed,
        p50: Duration::from_nanos(percentile(&latencies, 50.0)),
        p99: Duration::from_nanos(percentile(&latencies, 99.0)),
        cpu,
    })
}

async fn one_op(
    provider: &dyn BenchTarget,
    store_id: &str,
    workload: &Workload,
    task: usize,
    n: u64,
    batch: Option<&SetManyBatch>,
) -> anyhow::Result<()> {
    match workload.op {
        Op::Set => {
            let key = format!("t{task}-k{}", n % SET_KEYS_PER_TASK);
            provider
                .set(store_id, &key, value_of(workload.value_bytes, n))
                .await
                .with_context(|| format!("{workload}: set"))?;
        }
        Op::Get => {
            // Spread tasks over the keyspace so they do not read in lockstep.
            let key = get_key((task * 131 + n as usize) % GET_KEYSPACE);
            let value = provider
                .get(store_id, &key)
                .await
                .with_context(|| format!("{workload}: get"))?;
            match value {
                Some(v) if v.len() == workload.value_bytes => {}
                other => bail!(
                    "{workload}: get {key} returned {:?} bytes, expected {}",
                    other.map(|v| v.len()),
                    workload.value_bytes
                ),
            }
        }
        Op::SetMany => {
            let batch = batch.expect("set_many workloads carry a batch");
            provider
                .set_many(store_id, &batch.entries())
                .await
                .with_context(|| format!("{workload}: set_many"))?;
        }
        Op::Checkpoint => {
            // A reaction's checkpoint lives in the reaction's own store.
            let store = format!("{store_id}-reaction-{task}");
            provider
                .set(&store, "checkpoint", value_of(workload.value_bytes, n))
                .await
                .with_context(|| format!("{workload}: checkpoint"))?;
        }
    }
    Ok(())
}

/// The 1000 entries one set_many task writes over and over (built once, so
/// the measurement is the store's work, not the benchmark's allocations).
struct SetManyBatch {
    keys: Vec<String>,
    values: Vec<Vec<u8>>,
}

impl SetManyBatch {
    fn new(task: usize) -> Self {
        Self {
            keys: (0..SET_MANY_ENTRIES)
                .map(|i| format!("t{task}-e{i}"))
                .collect(),
            values: (0..SET_MANY_ENTRIES)
                .map(|i| value_of(SET_MANY_VALUE_BYTES, i as u64))
                .collect(),
        }
    }

    fn entries(&self) -> Vec<(&str, &[u8])> {
        self.keys
            .iter()
            .zip(&self.values)
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect()
    }
}

fn get_key(i: usize) -> String {
    format!("key-{i:05}")
}

/// A value of `len` bytes that differs from call to call, like a checkpoint.
pub fn value_of(len: usize, n: u64) -> Vec<u8> {
    let stamp = n.to_le_bytes();
    (0..len).map(|i| stamp[i % 8] ^ (i as u8)).collect()
}

/// Nearest-rank percentile of an ascending slice.
pub fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn values_have_the_requested_size_and_vary() {
        assert_eq!(value_of(16, 1).len(), 16);
        assert_eq!(value_of(256, 1).len(), 256);
        assert_ne!(value_of(16, 1), value_of(16, 2));
    }

    #[test]
    fn standard_set_covers_the_issue() {
        let all = standard_workloads();
        assert_eq!(all.len(), 10);
        assert!(
            all.iter()
                .any(|w| w.op == Op::Checkpoint && w.concurrency == CHECKPOINT_REACTIONS)
        );
        assert!(all.iter().any(|w| w.op == Op::SetMany));
        assert!(
            all.iter()
                .any(|w| w.op == Op::Get && w.concurrency == 64 && w.value_bytes == 256)
        );
    }
}

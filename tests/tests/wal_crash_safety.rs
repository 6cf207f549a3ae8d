//! `kill -9` of the server under concurrent WAL appends loses no
//! acknowledged event.
//!
//! Many tasks append to two source logs through `RemoteWalProvider` and
//! remember every `(sequence, event)` the server acknowledged. The server is
//! killed with SIGKILL mid-load and restarted on the same data directory;
//! then every acknowledged event must be in its log at exactly its
//! sequence, no sequence may be used twice, and the head must not have
//! gone backwards. Appends that failed (in flight at the kill) may or may
//! not be there. Two cycles run on the same data, so the second also checks
//! that sequence numbering continues after recovery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use drasi_core::models::SourceChange;
use drasi_lib::wal::{CapacityPolicy, WalProvider, WriteAheadLogConfig};
use drasi_state_store_remote::RemoteWalProvider;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::order_change;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "wal-crash-token-0123456789";
const SOURCES: [&str; 2] = ["orders-http", "payments-grpc"];
const APPENDERS: usize = 16;
const MAX_APPENDS_PER_TASK: u64 = 5_000;
const LOAD_DEADLINE: Duration = Duration::from_secs(15);
const CYCLES: u64 = 2;

fn config() -> WriteAheadLogConfig {
    WriteAheadLogConfig {
        max_events: 1_000_000,
        capacity_policy: CapacityPolicy::RejectIncoming,
    }
}

fn provider(server: &ServerProcess) -> anyhow::Result<RemoteWalProvider> {
    Ok(RemoteWalProvider::builder(server.url())
        .token(TOKEN)
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(1))
        .max_retries(1)
        .build()?)
}

/// Per source: sequence -> the event acknowledged at it.
type Acked = BTreeMap<&'static str, BTreeMap<u64, SourceChange>>;

async fn load_then_kill(server: ServerProcess, cycle: u64) -> anyhow::Result<Acked> {
    let wal = Arc::new(provider(&server)?);
    for s in SOURCES {
        wal.register(s, config()).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..APPENDERS {
        let wal = wal.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let source = SOURCES[task % SOURCES.len()];
            let mut acked = Vec::new();
            let started = Instant::now();
            for i in 0..MAX_APPENDS_PER_TASK {
                if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_DEADLINE {
                    break;
                }
                let n = (cycle << 48) | ((task as u64) << 32) | i;
                let change = order_change(source, n);
                match wal.append(source, &change).await {
                    Ok(seq) => acked.push((source, seq, change)),
                    // The server is gone: whatever was in flight is unknown.
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    // Let the load build up, then kill without warning.
    tokio::time::sleep(Duration::from_millis(600 + 300 * cycle)).await;
    server.kill9()?;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Acked::new();
    for t in tasks {
        for (source, seq, change) in t.await? {
            let previous = acked.entry(source).or_default().insert(seq, change);
            ensure!(
                previous.is_none(),
                "sequence {seq} of {source} was acknowledged twice"
            );
        }
    }
    Ok(acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_concurrent_appends_loses_no_acknowledged_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut all: Acked = Acked::new();
    let mut heads: BTreeMap<&str, u64> = BTreeMap::new();
    for cycle in 0..CYCLES {
        let server = ServerProcess::builder(SERVER, dir.path())
            .token(TOKEN)
            .start()?;
        let acked = load_then_kill(server, cycle).await?;
        let count: usize = acked.values().map(BTreeMap::len).sum();
        ensure!(count > 0, "cycle {cycle}: nothing was acknowledged");
        for (source, events) in acked {
            all.entry(source).or_default().extend(events);
        }

        let server = ServerProcess::builder(SERVER, dir.path())
            .token(TOKEN)
            .start()
            .context("restarting after kill -9")?;
        let wal = provider(&server)?;
        for s in SOURCES {
            wal.register(s, config()).await?;
            let stored: BTreeMap<u64, SourceChange> =
                wal.read_from(s, 1).await?.into_iter().collect();
            let expected = all.get(s).cloned().unwrap_or_default();
            for (seq, change) in &expected {
                let found = stored.get(seq);
                ensure!(
                    found == Some(change),
                    "cycle {cycle}: {s} lost or changed acknowledged sequence {seq}: {found:?}"
                );
            }
            let head = wal.head_sequence(s).await?;
            let max_acked = expected.keys().next_back().copied().unwrap_or(0);
            ensure!(
                head >= max_acked,
                "{s}: head {head} < acknowledged {max_acked}"
            );
            let previous = heads.insert(s, head).unwrap_or(0);
            ensure!(
                head >= previous,
                "{s}: head went back from {previous} to {head}"
            );
            ensure!(
                wal.event_count(s).await? == stored.len() as u64,
                "{s}: event_count disagrees with the events read"
            );
            // Unacknowledged appends that did commit are fine; gaps are not,
            // because nothing is ever pruned here.
            ensure!(
                stored.keys().copied().eq(1..=head),
                "{s}: sequences are not exactly 1..={head}"
            );
        }
        server.terminate(Duration::from_secs(10))?;
    }
    Ok(())
}

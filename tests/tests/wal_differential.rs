//! Differential test of the remote write-ahead log: seeded random sequences
//! of all eight `WalProvider` methods run against `RemoteWalProvider` (with
//! a real server process on loopback) and against DrasiLib's file-backed
//! `drasi-wal-redb` provider, and every result must be the same — values
//! exactly, errors by kind and by the fields the trait defines.
//!
//! The sequences are biased toward the interesting edges: logs with the
//! minimum capacity under both policies (so appends overflow), prunes
//! around the head, reads from pruned positions, re-registration with a
//! different config, invalid ids and configs, `Future` events, deletes and
//! re-creation, and "restarts" (fresh provider instances on the same data).
//! One seed runs against a server with a tiny `--max-response-bytes`, so
//! the remote `read_from` is assembled from many pages and must still
//! answer exactly what the single-file provider does.

use std::time::Duration;

use drasi_core::models::SourceChange;
use drasi_lib::wal::{CapacityPolicy, WalError, WalProvider, WriteAheadLogConfig};
use drasi_state_store_remote::{RemoteWalProvider, wal_codec};
use drasi_store_protocol::wal::{EVENT_OVERHEAD_BYTES, EVENTS_FRAME_HEADER_BYTES};
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::{future_change, random_change};
use drasi_wal_redb::RedbWalProvider;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "wal-differential-token";
/// Seeds, each with the server's `--max-response-bytes` (its default when
/// `None`). With 1 KiB a page holds every single event this seeded
/// sequence makes (one that did not fit would fail the comparison with an
/// error naming `--max-response-bytes`), but not a whole log.
const SEEDS: [(u64, Option<usize>); 3] = [(1, None), (2, None), (3, Some(1024))];
const OPS_PER_SEED: usize = 300;
/// Valid ids plus one the file-backed rule refuses.
const SOURCES: [&str; 4] = ["src-a", "src_b", "C9", "bad/id"];

#[derive(Debug, Clone)]
enum Op {
    Register(&'static str, u64, CapacityPolicy),
    Append(&'static str, SourceChange),
    ReadFrom(&'static str, u64),
    PruneUpTo(&'static str, u64),
    HeadSequence(&'static str),
    OldestSequence(&'static str),
    EventCount(&'static str),
    DeleteWal(&'static str),
    /// Both providers are dropped and rebuilt on the same data.
    Restart,
}

/// A result reduced to what must agree: `Ok` values by their `Debug` text
/// (which covers every field of every event), errors by kind plus the
/// fields the trait gives them.
fn outcome<T: std::fmt::Debug>(r: Result<T, WalError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => match e {
            WalError::CapacityExhausted(s) => format!("CapacityExhausted({s})"),
            WalError::PositionUnavailable {
                source_id,
                requested,
                oldest_available,
            } => format!("PositionUnavailable({source_id}, {requested}, {oldest_available:?})"),
            WalError::SourceNotRegistered(s) => format!("SourceNotRegistered({s})"),
            WalError::SourceAlreadyRegistered(s) => format!("SourceAlreadyRegistered({s})"),
            WalError::InvalidSourceId(s, _) => format!("InvalidSourceId({s})"),
            WalError::InvalidEvent(_) => "InvalidEvent".to_string(),
            WalError::InvalidConfig(_) => "InvalidConfig".to_string(),
            // Never expected: the comparison shows the message.
            WalError::StorageError(m) => format!("StorageError({m})"),
            WalError::SerializationError(m) => format!("SerializationError({m})"),
        },
    }
}

async fn run(p: &dyn WalProvider, op: &Op) -> String {
    match op {
        Op::Register(s, max_events, capacity_policy) => outcome(
            p.register(
                s,
                WriteAheadLogConfig {
                    max_events: *max_events,
                    capacity_policy: *capacity_policy,
                },
            )
            .await,
        ),
        Op::Append(s, change) => outcome(p.append(s, change).await),
        Op::ReadFrom(s, seq) => outcome(p.read_from(s, *seq).await),
        Op::PruneUpTo(s, seq) => outcome(p.prune_up_to(s, *seq).await),
        Op::HeadSequence(s) => outcome(p.head_sequence(s).await),
        Op::OldestSequence(s) => outcome(p.oldest_sequence(s).await),
        Op::EventCount(s) => outcome(p.event_count(s).await),
        Op::DeleteWal(s) => outcome(p.delete_wal(s).await),
        Op::Restart => "restarted".to_string(),
    }
}

/// The next operation; `heads` gives the reference provider's head for a
/// source (`None` while it is not registered there), so positions land
/// near the live range and unregistered sources are mostly registered.
fn next_op(rng: &mut StdRng, heads: &dyn Fn(&str) -> Option<u64>) -> Op {
    let source = if rng.gen_bool(0.03) {
        SOURCES[3]
    } else {
        SOURCES[rng.gen_range(0..3)]
    };
    let registered = heads(source);
    let head = registered.unwrap_or(0);
    let near = |rng: &mut StdRng| head.saturating_sub(rng.gen_range(0..40)) + rng.gen_range(0..3);
    let roll = if registered.is_none() && rng.gen_bool(0.8) {
        0
    } else {
        rng.gen_range(0..100)
    };
    match roll {
        0..=6 => {
            let max_events = [16, 16, 20, 15][rng.gen_range(0..4)];
            let policy = if rng.gen_bool(0.5) {
                CapacityPolicy::RejectIncoming
            } else {
                CapacityPolicy::OverwriteOldest
            };
            Op::Register(source, max_events, policy)
        }
        7..=59 => {
            let change = if rng.gen_bool(0.03) {
                future_change(source)
            } else {
                random_change(rng, source)
            };
            Op::Append(source, change)
        }
        60..=69 => Op::ReadFrom(source, near(rng)),
        70..=74 => Op::PruneUpTo(source, near(rng)),
        75..=80 => Op::HeadSequence(source),
        81..=86 => Op::OldestSequence(source),
        87..=95 => Op::EventCount(source),
        96..=97 => Op::DeleteWal(source),
        _ => Op::Restart,
    }
}

fn remote(server: &ServerProcess) -> RemoteWalProvider {
    RemoteWalProvider::builder(server.url())
        .token(TOKEN)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("remote WAL provider")
}

#[derive(Default, Debug)]
struct Coverage {
    capacity_exhausted: usize,
    evicting_appends: usize,
    position_unavailable: usize,
    pruned_something: usize,
    already_registered: usize,
    not_registered: usize,
    reads_with_events: usize,
    /// Reads whose answer spans more than one page.
    paged_reads: usize,
}

impl Coverage {
    fn note(&mut self, op: &Op, out: &str, count_before: Option<u64>) {
        if out.starts_with("CapacityExhausted") {
            self.capacity_exhausted += 1;
        }
        if out.starts_with("PositionUnavailable") {
            self.position_unavailable += 1;
        }
        if out.starts_with("SourceAlreadyRegistered") {
            self.already_registered += 1;
        }
        if out.starts_with("SourceNotRegistered") {
            self.not_registered += 1;
        }
        match op {
            Op::PruneUpTo(..) if out != "Ok(0)" && out.starts_with("Ok(") => {
                self.pruned_something += 1
            }
            Op::ReadFrom(..) if out.starts_with("Ok([(") => self.reads_with_events += 1,
            Op::Append(..) if out.starts_with("Ok(") && count_before.is_some_and(|c| c >= 16) => {
                self.evicting_appends += 1
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_wal_matches_drasi_wal_redb() -> anyhow::Result<()> {
    let mut coverage = Coverage::default();
    for (seed, page_bytes) in SEEDS {
        let server_dir = tempfile::tempdir()?;
        let redb_dir = tempfile::tempdir()?;
        let mut server = ServerProcess::builder(SERVER, server_dir.path()).token(TOKEN);
        if let Some(bytes) = page_bytes {
            server = server.arg("--max-response-bytes").arg(bytes.to_string());
        }
        let server = server.start()?;
        let mut reference: Box<dyn WalProvider> = Box::new(RedbWalProvider::new(redb_dir.path()));
        let mut candidate: Box<dyn WalProvider> = Box::new(remote(&server));
        let mut rng = StdRng::seed_from_u64(seed);
        let mut history: Vec<String> = Vec::new();
        for step in 0..OPS_PER_SEED {
            // Heads of the reference, read before choosing the op.
            let mut heads = std::collections::HashMap::new();
            for s in SOURCES {
                heads.insert(s, reference.head_sequence(s).await.ok());
            }
            let op = next_op(&mut rng, &|s| heads.get(s).copied().flatten());
            if let Op::Restart = op {
                drop(reference);
                drop(candidate);
                reference = Box::new(RedbWalProvider::new(redb_dir.path()));
                candidate = Box::new(remote(&server));
                history.push(format!("{step}: Restart"));
                continue;
            }
            let count_before = match &op {
                Op::Append(s, _) => reference.event_count(s).await.ok(),
                _ => None,
            };
            let expected = run(reference.as_ref(), &op).await;
            let actual = run(candidate.as_ref(), &op).await;
            history.push(format!("{step}: {} -> {expected}", short(&op)));
            if expected != actual {
                let tail = history[history.len().saturating_sub(15)..].join("\n");
                anyhow::bail!(
                    "seed {seed}, step {step}: {op:?}\n  drasi-wal-redb: {expected}\n  remote:         {actual}\nlast steps:\n{tail}"
                );
            }
            coverage.note(&op, &expected, count_before);
            if let (Op::ReadFrom(s, seq), Some(page)) = (&op, page_bytes)
                && let Ok(events) = reference.read_from(s, *seq).await
            {
                let frame = EVENTS_FRAME_HEADER_BYTES
                    + events
                        .iter()
                        .map(|(_, e)| EVENT_OVERHEAD_BYTES + wal_codec::encode(e).unwrap().len())
                        .sum::<usize>();
                coverage.paged_reads += usize::from(frame > page);
            }
        }
        // The final state agrees too, source by source.
        for s in SOURCES {
            let a = run(reference.as_ref(), &Op::ReadFrom(s, 0)).await;
            let b = run(candidate.as_ref(), &Op::ReadFrom(s, 0)).await;
            anyhow::ensure!(a == b, "seed {seed}: final read of {s} differs");
        }
    }
    // The sequences must have reached the edges they exist to check.
    eprintln!("coverage: {coverage:?}");
    anyhow::ensure!(coverage.capacity_exhausted > 0, "{coverage:?}");
    anyhow::ensure!(coverage.evicting_appends > 0, "{coverage:?}");
    anyhow::ensure!(coverage.position_unavailable > 0, "{coverage:?}");
    anyhow::ensure!(coverage.pruned_something > 0, "{coverage:?}");
    anyhow::ensure!(coverage.already_registered > 0, "{coverage:?}");
    anyhow::ensure!(coverage.not_registered > 0, "{coverage:?}");
    anyhow::ensure!(coverage.reads_with_events > 0, "{coverage:?}");
    anyhow::ensure!(coverage.paged_reads > 0, "{coverage:?}");
    Ok(())
}

fn short(op: &Op) -> String {
    match op {
        Op::Append(s, _) => format!("Append({s})"),
        other => format!("{other:?}"),
    }
}

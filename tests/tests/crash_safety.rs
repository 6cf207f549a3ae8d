//! Crash safety of the real server process.
//!
//! Many concurrent clients write (set, atomic set_many, delete) to keys they
//! own, across several store_ids, and remember every write the server
//! acknowledged. The server is killed (`kill -9`, or SIGTERM) at a random
//! moment mid-load and restarted on the same data directory. Afterwards every
//! acknowledged write must be there with its last acknowledged value, acked
//! deletes must stay deleted, and nothing else may appear. A write that was in
//! flight when the server died (it failed, so the client never saw an ack) may
//! or may not have been applied, but a set_many must be all or nothing.
//! Several cycles run on the same data directory, so state accumulates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::bench::server_metrics::MetricsProbe;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "crash-safety-token";

/// Store ids with characters that need escaping, so recovery is checked on
/// the same inputs real callers send.
const STORES: [&str; 4] = ["crash/orders", "crash reactions", "crash-%41?#", "crash-ü"];
const WRITERS: usize = 32;
/// Writers share clients, as the reactions of one DrasiLib app share one.
const CLIENTS: usize = 8;
/// All writers on one client: their single-key calls pile up behind each
/// other and go out in batch requests.
const ONE_CLIENT: usize = 1;
const KEYS_PER_WRITER: usize = 12;
/// A bound on each writer so a server that never dies cannot hang the test.
const MAX_OPS_PER_WRITER: usize = 20_000;
const LOAD_DEADLINE: Duration = Duration::from_secs(15);

/// `(store_id, key) -> value` of every key that must exist.
type Model = BTreeMap<(String, String), Vec<u8>>;

#[derive(Debug, Clone)]
enum Write {
    Set {
        store: String,
        key: String,
        value: Vec<u8>,
    },
    SetMany {
        store: String,
        entries: Vec<(String, Vec<u8>)>,
    },
    Delete {
        store: String,
        key: String,
    },
}

impl Write {
    fn apply(&self, model: &mut Model) {
        match self {
            Write::Set { store, key, value } => {
                model.insert((store.clone(), key.clone()), value.clone());
            }
            Write::SetMany { store, entries } => {
                for (key, value) in entries {
                    model.insert((store.clone(), key.clone()), value.clone());
                }
            }
            Write::Delete { store, key } => {
                model.remove(&(store.clone(), key.clone()));
            }
        }
    }

    fn keys(&self) -> Vec<(String, String)> {
        match self {
            Write::Set { store, key, .. } | Write::Delete { store, key } => {
                vec![(store.clone(), key.clone())]
            }
            Write::SetMany { store, entries } => entries
                .iter()
                .map(|(k, _)| (store.clone(), k.clone()))
                .collect(),
        }
    }

    async fn send(&self, provider: &dyn StateStoreProvider) -> anyhow::Result<()> {
        match self {
            Write::Set { store, key, value } => provider.set(store, key, value.clone()).await?,
            Write::SetMany { store, entries } => {
                let entries: Vec<(&str, &[u8])> = entries
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                provider.set_many(store, &entries).await?;
            }
            Write::Delete { store, key } => {
                provider.delete(store, key).await?;
            }
        }
        Ok(())
    }
}

/// What one writer saw: its acknowledged writes in order, and the write that
/// failed (outcome unknown), after which it stopped.
struct WriterLog {
    acked: Vec<Write>,
    unacked: Option<(Write, String)>,
}

/// splitmix64: reproducible from the seed printed at the start of a test.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Self {
        let seed = std::env::var("CRASH_SAFETY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_nanos() as u64
            });
        eprintln!("{test}: seed {seed} (set CRASH_SAFETY_SEED to replay the choices)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn writer_store(writer: usize) -> &'static str {
    STORES[writer % STORES.len()]
}

fn writer_key(writer: usize, i: usize) -> String {
    // '/', ' ' and '%' in keys too; each writer owns its keys exclusively.
    format!("w{writer:02}/key %{i}")
}

/// A value unique to (cycle, writer, op, entry of a batch), of varying size.
fn value(cycle: usize, writer: usize, n: usize, part: usize, len: usize) -> Vec<u8> {
    let tag = format!("c{cycle}-w{writer}-n{n}.{part}|");
    tag.bytes().cycle().take(len.max(tag.len())).collect()
}

fn provider(server: &ServerProcess) -> anyhow::Result<Arc<dyn StateStoreProvider>> {
    Ok(Arc::new(
        RemoteStateStoreProvider::builder(server.url())
            .token(TOKEN)
            .timeout(Duration::from_secs(10))
            .build()?,
    ))
}

async fn start(data_dir: &Path, durability: &str) -> anyhow::Result<ServerProcess> {
    let data_dir = data_dir.to_path_buf();
    let durability = durability.to_string();
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::builder(SERVER, data_dir)
            .token(TOKEN)
            .arg("--durability")
            .arg(durability)
            .start()
    })
    .await??;
    let ready = reqwest::get(format!("{}/readyz", server.url())).await?;
    ensure!(
        ready.status() == 200,
        "/readyz answered {} after (re)start; server log:\n{}",
        ready.status(),
        server.log()
    );
    Ok(server)
}

/// Runs `WRITERS` writers until `stop` is set or their first failure.
fn spawn_writers(
    server: &ServerProcess,
    clients: usize,
    cycle: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<WriterLog>>> {
    let clients: Vec<_> = (0..clients)
        .map(|_| provider(server))
        .collect::<anyhow::Result<_>>()?;
    let mut handles = Vec::with_capacity(WRITERS);
    for writer in 0..WRITERS {
        let client = Arc::clone(&clients[writer % clients.len()]);
        let stop = Arc::clone(&stop);
        let mut rng =
            Rng(seed ^ ((cycle * WRITERS + writer) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        handles.push(tokio::spawn(async move {
            let store = writer_store(writer).to_string();
            let started = Instant::now();
            let mut log = WriterLog {
                acked: Vec::new(),
                unacked: None,
            };
            for n in 0..MAX_OPS_PER_WRITER {
                if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_DEADLINE {
                    break;
                }
                let len = [8, 16, 16, 300][rng.below(4) as usize];
                let write = match rng.below(10) {
                    0..=5 => Write::Set {
                        store: store.clone(),
                        key: writer_key(writer, rng.below(KEYS_PER_WRITER as u64) as usize),
                        value: value(cycle, writer, n, 0, len),
                    },
                    6..=7 => {
                        let first = rng.below(KEYS_PER_WRITER as u64) as usize;
                        let count = 2 + rng.below(4) as usize;
                        let keys: BTreeSet<usize> = (0..count)
                            .map(|i| (first + i * 5) % KEYS_PER_WRITER)
                            .collect();
                        Write::SetMany {
                            store: store.clone(),
                            entries: keys
                                .into_iter()
                                .enumerate()
                                .map(|(j, i)| {
                                    (writer_key(writer, i), value(cycle, writer, n, j, len))
                                })
                                .collect(),
                        }
                    }
                    _ => Write::Delete {
                        store: store.clone(),
                        key: writer_key(writer, rng.below(KEYS_PER_WRITER as u64) as usize),
                    },
                };
                match write.send(&*client).await {
                    Ok(()) => log.acked.push(write),
                    Err(e) => {
                        log.unacked = Some((write, format!("{e:#}")));
                        break;
                    }
                }
            }
            log
        }));
    }
    Ok(handles)
}

struct LoadOutcome {
    acked: usize,
    logs: Vec<WriterLog>,
    /// Batch requests the server had answered just before it was stopped.
    batch_requests: f64,
}

async fn collect(handles: Vec<tokio::task::JoinHandle<WriterLog>>) -> anyhow::Result<LoadOutcome> {
    let mut logs = Vec::with_capacity(handles.len());
    for handle in handles {
        let log = tokio::time::timeout(LOAD_DEADLINE + Duration::from_secs(30), handle)
            .await
            .context("a writer did not finish after the server went away")??;
        logs.push(log);
    }
    Ok(LoadOutcome {
        acked: logs.iter().map(|l| l.acked.len()).sum(),
        logs,
        batch_requests: 0.0,
    })
}

/// Reads back everything in `STORES` through the remote provider, checking
/// that list_keys, key_count, store_exists, get_many and get agree.
async fn read_all(provider: &dyn StateStoreProvider) -> anyhow::Result<Model> {
    let mut actual = Model::new();
    for store in STORES {
        let keys = provider.list_keys(store).await?;
        let count = provider.key_count(store).await?;
        ensure!(
            count == keys.len(),
            "{store:?}: key_count {count} but list_keys returned {} keys",
            keys.len()
        );
        let exists = provider.store_exists(store).await?;
        ensure!(
            exists != keys.is_empty(),
            "{store:?}: store_exists {exists} with {} keys",
            keys.len()
        );
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = provider.get_many(store, &key_refs).await?;
        ensure!(
            values.len() == keys.len(),
            "{store:?}: get_many found {} of the {} listed keys",
            values.len(),
            keys.len()
        );
        for (key, value) in values {
            let single = provider.get(store, &key).await?;
            ensure!(
                single.as_deref() == Some(value.as_slice()),
                "{store:?}/{key:?}: get and get_many disagree"
            );
            actual.insert((store.to_string(), key), value);
        }
    }
    Ok(actual)
}

/// Applies the acked writes to `model`, then resolves each unacked write
/// against what the restarted server holds: it must be wholly applied or
/// wholly absent. Finally the server must hold exactly the model.
fn verify(
    model: &mut Model,
    outcome: &LoadOutcome,
    actual: &Model,
    cycle: usize,
) -> anyhow::Result<()> {
    for log in &outcome.logs {
        for write in &log.acked {
            write.apply(model);
        }
    }
    for log in &outcome.logs {
        let Some((write, error)) = &log.unacked else {
            continue;
        };
        let keys = write.keys();
        let mut applied = model.clone();
        write.apply(&mut applied);
        let matches = |m: &Model| keys.iter().all(|k| m.get(k) == actual.get(k));
        if matches(&applied) {
            *model = applied;
        } else if !matches(model) {
            bail!(
                "cycle {cycle}: the unacknowledged {write:?} (failed with: {error}) is neither \
                 wholly applied nor wholly absent after restart"
            );
        }
    }
    if model != actual {
        let lost: Vec<_> = model
            .iter()
            .filter(|(k, v)| actual.get(*k) != Some(*v))
            .map(|(k, v)| {
                (
                    k,
                    String::from_utf8_lossy(v).into_owned(),
                    actual
                        .get(k)
                        .map(|a| String::from_utf8_lossy(a).into_owned()),
                )
            })
            .take(10)
            .collect();
        let phantom: Vec<_> = actual
            .keys()
            .filter(|k| !model.contains_key(*k))
            .take(10)
            .collect();
        bail!(
            "cycle {cycle}: after restart the server differs from the acknowledged writes \
             ({} expected keys, {} present).\nexpected (key, value, actual) not matching: {lost:?}\n\
             present but deleted or never written: {phantom:?}",
            model.len(),
            actual.len()
        );
    }
    Ok(())
}

/// Starts writers, lets them run for a random 200-800 ms, then stops the
/// server with `stop` (kill -9 or SIGTERM) and collects what was acked.
async fn load_then_stop<F>(
    server: ServerProcess,
    clients: usize,
    cycle: usize,
    rng: &mut Rng,
    stop_server: F,
) -> anyhow::Result<LoadOutcome>
where
    F: FnOnce(ServerProcess) -> anyhow::Result<()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let handles = spawn_writers(&server, clients, cycle, rng.next(), Arc::clone(&stop))?;
    let delay = Duration::from_millis(200 + rng.below(601));
    tokio::time::sleep(delay).await;
    let batch_requests = MetricsProbe::new(&server.url(), TOKEN)?
        .requests("batch")
        .await?;
    tokio::task::spawn_blocking(move || stop_server(server)).await??;
    stop.store(true, Ordering::Relaxed);
    let mut outcome = collect(handles).await?;
    outcome.batch_requests = batch_requests;
    ensure!(
        outcome.acked > 0,
        "cycle {cycle}: no write was acknowledged in {delay:?} of load"
    );
    eprintln!(
        "cycle {cycle}: stopped after {delay:?}; {} acked writes, {} in flight",
        outcome.acked,
        outcome.logs.iter().filter(|l| l.unacked.is_some()).count()
    );
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let mut rng = Rng::seeded("kill9");
    let mut model = Model::new();
    let mut replays = 0;
    for cycle in 0..5 {
        let server = start(&data_dir, "immediate")
            .await
            .with_context(|| format!("cycle {cycle}: server did not come up on the data dir"))?;
        let outcome = load_then_stop(server, CLIENTS, cycle, &mut rng, |s| s.kill9()).await?;
        let restarted = start(&data_dir, "immediate").await.with_context(|| {
            format!("cycle {cycle}: server did not reopen the database after kill -9")
        })?;
        let actual = read_all(&*provider(&restarted)?).await?;
        verify(&mut model, &outcome, &actual, cycle)?;
        eprintln!("cycle {cycle}: verified {} keys", model.len());
        // The kill comes within the first second of load, before the first
        // periodic checkpoint: the writes since start are in the commit
        // journal only, and the restart must have replayed them.
        if restarted.log().contains("replayed the commit journal") {
            replays += 1;
        }
        restarted.kill9()?;
    }
    ensure!(!model.is_empty(), "the load never left any key behind");
    ensure!(
        replays > 0,
        "no restart replayed the commit journal: the journal's recovery went untested"
    );
    Ok(())
}

/// The same guarantee on the batched path: every writer shares one client,
/// so most single-key writes travel in `POST /v1/batch` requests, and each
/// acknowledged one must survive `kill -9` exactly like a lone write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batched_writes_survive_repeated_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let mut rng = Rng::seeded("kill9-batched");
    let mut model = Model::new();
    let mut batches = 0.0;
    for cycle in 0..3 {
        let server = start(&data_dir, "immediate").await?;
        let outcome = load_then_stop(server, ONE_CLIENT, cycle, &mut rng, |s| s.kill9()).await?;
        batches += outcome.batch_requests;
        let restarted = start(&data_dir, "immediate").await.with_context(|| {
            format!("cycle {cycle}: server did not reopen the database after kill -9")
        })?;
        let actual = read_all(&*provider(&restarted)?).await?;
        verify(&mut model, &outcome, &actual, cycle)?;
        eprintln!(
            "cycle {cycle}: verified {} keys after {} batch requests",
            model.len(),
            outcome.batch_requests
        );
        restarted.kill9()?;
    }
    ensure!(
        batches > 0.0,
        "32 writers on one client never produced a batch request: the batched path went untested"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_exits_zero_and_keeps_acknowledged_writes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let mut rng = Rng::seeded("sigterm");
    let mut model = Model::new();
    for cycle in 0..2 {
        let server = start(&data_dir, "immediate").await?;
        let outcome = load_then_stop(server, CLIENTS, cycle, &mut rng, |s| {
            let status = s.terminate(Duration::from_secs(20))?;
            ensure!(
                status.success(),
                "server exited with {status} after SIGTERM"
            );
            Ok(())
        })
        .await?;
        let restarted = start(&data_dir, "immediate").await?;
        let actual = read_all(&*provider(&restarted)?).await?;
        verify(&mut model, &outcome, &actual, cycle)?;
        restarted.kill9()?;
    }
    Ok(())
}

/// `--durability eventual` may lose the last acknowledged writes on a crash
/// (that is the opt-out), so only the database itself is checked: it reopens
/// and answers consistently, and nothing half-written appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_durability_database_reopens_after_kill9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let mut rng = Rng::seeded("eventual");
    for cycle in 0..2 {
        let server = start(&data_dir, "eventual").await?;
        let outcome = load_then_stop(server, CLIENTS, cycle, &mut rng, |s| s.kill9()).await?;
        let restarted = start(&data_dir, "eventual")
            .await
            .with_context(|| format!("cycle {cycle}: eventual-mode database did not reopen"))?;
        let actual = read_all(&*provider(&restarted)?).await?;
        // Every value present must be one some writer actually sent for that key.
        let mut sent: BTreeMap<(String, String), BTreeSet<Vec<u8>>> = BTreeMap::new();
        for log in &outcome.logs {
            for write in log.acked.iter().chain(log.unacked.as_ref().map(|(w, _)| w)) {
                if let Write::Set { store, key, value } = write {
                    sent.entry((store.clone(), key.clone()))
                        .or_default()
                        .insert(value.clone());
                }
                if let Write::SetMany { store, entries } = write {
                    for (key, value) in entries {
                        sent.entry((store.clone(), key.clone()))
                            .or_default()
                            .insert(value.clone());
                    }
                }
            }
        }
        for (k, v) in &actual {
            let tag = String::from_utf8_lossy(v);
            if tag.starts_with(&format!("c{cycle}-")) {
                ensure!(
                    sent.get(k).is_some_and(|s| s.contains(v)),
                    "{k:?} holds {tag:?}, which no writer sent"
                );
            }
        }
        restarted.kill9()?;
    }
    Ok(())
}

/// The checker itself must reject lost, stale, phantom and torn writes, or
/// the crash tests above would pass vacuously.
#[test]
fn verify_rejects_lost_and_torn_writes() {
    let store = STORES[0].to_string();
    let set = |key: &str, v: &[u8]| Write::Set {
        store: store.clone(),
        key: key.into(),
        value: v.to_vec(),
    };
    let pair = |a: &[u8], b: &[u8]| Write::SetMany {
        store: store.clone(),
        entries: vec![("a".into(), a.to_vec()), ("b".into(), b.to_vec())],
    };
    let outcome = |acked: Vec<Write>, unacked: Option<Write>| LoadOutcome {
        acked: acked.len(),
        logs: vec![WriterLog {
            acked,
            unacked: unacked.map(|w| (w, "connection refused".into())),
        }],
        batch_requests: 0.0,
    };
    let state = |entries: &[(&str, &[u8])]| -> Model {
        entries
            .iter()
            .map(|(k, v)| ((store.clone(), k.to_string()), v.to_vec()))
            .collect()
    };

    // Acked value present: fine. Acked value lost or stale: rejected.
    let o = outcome(vec![set("a", b"1"), set("a", b"2")], None);
    assert!(verify(&mut Model::new(), &o, &state(&[("a", b"2")]), 0).is_ok());
    assert!(verify(&mut Model::new(), &o, &state(&[]), 0).is_err());
    assert!(verify(&mut Model::new(), &o, &state(&[("a", b"1")]), 0).is_err());
    // An acked delete must stay deleted; unknown keys must not appear.
    let o = outcome(
        vec![
            set("a", b"1"),
            Write::Delete {
                store: store.clone(),
                key: "a".into(),
            },
        ],
        None,
    );
    assert!(verify(&mut Model::new(), &o, &state(&[]), 0).is_ok());
    assert!(verify(&mut Model::new(), &o, &state(&[("a", b"1")]), 0).is_err());
    assert!(verify(&mut Model::new(), &o, &state(&[("z", b"1")]), 0).is_err());
    // An unacked set_many may be applied or not, but never in part.
    let o = outcome(vec![pair(b"1", b"1")], Some(pair(b"2", b"2")));
    assert!(
        verify(
            &mut Model::new(),
            &o,
            &state(&[("a", b"1"), ("b", b"1")]),
            0
        )
        .is_ok()
    );
    let mut model = Model::new();
    assert!(verify(&mut model, &o, &state(&[("a", b"2"), ("b", b"2")]), 0).is_ok());
    assert_eq!(
        model,
        state(&[("a", b"2"), ("b", b"2")]),
        "applied unacked write is adopted"
    );
    assert!(
        verify(
            &mut Model::new(),
            &o,
            &state(&[("a", b"2"), ("b", b"1")]),
            0
        )
        .is_err()
    );
}

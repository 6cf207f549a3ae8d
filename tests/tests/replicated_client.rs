//! The remote providers against a replicated store of three real server
//! processes on loopback, given every node's URL: a `kill -9` of the
//! leader, and of the node whose URL comes first, must look like slow
//! calls, never like errors.
//!
//! Only calls that may be resent after an unknown outcome run under the
//! kills (`set`, `get`, `contains_key`, `set_many`, `get_many`, WAL
//! appends, which carry an append id): a delete cut off by a kill is
//! reported as failed by design, since the client cannot know whether it
//! was applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use drasi_lib::StateStoreProvider;
use drasi_lib::wal::{WalProvider, WriteAheadLogConfig};
use drasi_state_store_remote::{RemoteStateStoreProvider, RemoteWalProvider};
use drasi_store_tests::cluster::{CLIENT_TOKEN, Cluster};
use drasi_store_tests::wal_events::order_change;
use tokio::task::JoinSet;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const STORE: &str = "failover/app";
const WORKERS: usize = 4;
/// Generous compared with an election (1–3 s): cluster start on a loaded
/// machine.
const SETTLE: Duration = Duration::from_secs(30);

fn provider(urls: &str) -> anyhow::Result<RemoteStateStoreProvider> {
    // The default failover budget (5 s): what an app gets from the Secret.
    Ok(RemoteStateStoreProvider::builder(urls)
        .token(CLIENT_TOKEN)
        .build()?)
}

fn wal_provider(urls: &str) -> anyhow::Result<RemoteWalProvider> {
    Ok(RemoteWalProvider::builder(urls)
        .token(CLIENT_TOKEN)
        .build()?)
}

/// What one worker saw: every call must succeed; the last value of each
/// of its keys and its WAL sequence numbers are checked at the end.
#[derive(Default)]
struct Seen {
    last: BTreeMap<String, Vec<u8>>,
    wal_seqs: Vec<u64>,
}

struct Load {
    stop: AtomicBool,
    calls: AtomicU64,
}

/// One worker's loop: set a key, read it back (a linearizable read must
/// see it), set_many fresh keys and read them back, append to its own
/// WAL source. Any error ends the test with the call that failed.
async fn worker(
    state: RemoteStateStoreProvider,
    wal: RemoteWalProvider,
    load: Arc<Load>,
    w: usize,
) -> anyhow::Result<Seen> {
    let source = format!("source-{w}");
    let mut seen = Seen::default();
    let mut n = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("w{w}-k{}", n % 5);
        let value = format!("w{w}-{n}").into_bytes();
        state
            .set(STORE, &key, value.clone())
            .await
            .with_context(|| format!("worker {w}: set #{n}"))?;
        let got = state
            .get(STORE, &key)
            .await
            .with_context(|| format!("worker {w}: get #{n}"))?;
        ensure!(
            got.as_deref() == Some(&value[..]),
            "worker {w}: get #{n} did not see its own acknowledged set"
        );
        ensure!(
            state
                .contains_key(STORE, &key)
                .await
                .with_context(|| format!("worker {w}: contains_key #{n}"))?,
            "worker {w}: contains_key #{n} is false after an acknowledged set"
        );
        seen.last.insert(key, value);

        let many: Vec<(String, Vec<u8>)> = (0..3)
            .map(|i| (format!("w{w}-m{n}-{i}"), format!("{n}-{i}").into_bytes()))
            .collect();
        let entries: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        state
            .set_many(STORE, &entries)
            .await
            .with_context(|| format!("worker {w}: set_many #{n}"))?;
        let keys: Vec<&str> = many.iter().map(|(k, _)| k.as_str()).collect();
        let read = state
            .get_many(STORE, &keys)
            .await
            .with_context(|| format!("worker {w}: get_many #{n}"))?;
        ensure!(
            read.len() == many.len(),
            "worker {w}: get_many #{n} saw {} of {} keys of an acknowledged set_many",
            read.len(),
            many.len()
        );
        seen.last.extend(many);

        let seq = wal
            .append(&source, &order_change(&source, n))
            .await
            .with_context(|| format!("worker {w}: WAL append #{n}"))?;
        seen.wal_seqs.push(seq);
        load.calls.fetch_add(1, Ordering::Relaxed);
    }
    Ok(seen)
}

/// Waits until the workers have completed `more` further rounds, failing
/// when one of them stopped (with its error) or after `timeout`.
async fn progress(
    load: &Load,
    workers: &mut JoinSet<anyhow::Result<Seen>>,
    more: u64,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let target = load.calls.load(Ordering::Relaxed) + more;
    while load.calls.load(Ordering::Relaxed) < target {
        if let Some(done) = workers.try_join_next() {
            done??;
            bail!("a worker stopped early ({what})");
        }
        if start.elapsed() > timeout {
            bail!("no progress within {timeout:?} ({what})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fails: after kill -9 rounds, read_from on a replicated store returns fewer or more WAL events than were acknowledged (under investigation)"]
async fn every_call_succeeds_while_nodes_are_killed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(SERVER, dir.path(), 3, &[])?;
    let leader = cluster.wait_for_leader(SETTLE).await?;
    let urls = cluster.urls();
    let state = provider(&urls)?;
    let wal = wal_provider(&urls)?;
    for w in 0..WORKERS {
        wal.register(&format!("source-{w}"), WriteAheadLogConfig::default())
            .await?;
    }

    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        calls: AtomicU64::new(0),
    });
    let mut workers = JoinSet::new();
    for w in 0..WORKERS {
        workers.spawn(worker(state.clone(), wal.clone(), Arc::clone(&load), w));
    }
    let round = WORKERS as u64;
    progress(&load, &mut workers, 2 * round, SETTLE, "before any kill").await?;

    // 1. The leader dies mid-traffic.
    cluster.kill9(leader)?;
    let took = progress(
        &load,
        &mut workers,
        2 * round,
        SETTLE,
        "after the leader's kill -9",
    )
    .await?;
    eprintln!("leader {leader} killed; traffic resumed within {took:?}");
    let new_leader = cluster.wait_for_leader(SETTLE).await?;
    ensure!(new_leader != leader, "the killed node still leads");
    cluster.restart(leader)?;
    cluster.wait_for_leader(SETTLE).await?;
    progress(&load, &mut workers, round, SETTLE, "after the restart").await?;

    // 2. The node whose URL comes first dies (whatever its role): calls
    //    that find it refusing connections go on to the others.
    cluster.kill9(0)?;
    progress(
        &load,
        &mut workers,
        2 * round,
        SETTLE,
        "after the first URL's kill -9",
    )
    .await?;
    // A provider built while the first URL is dead starts with it and
    // must move on at its first call.
    let fresh = provider(&urls)?;
    fresh.set(STORE, "fresh", b"yes".to_vec()).await?;
    ensure!(fresh.get(STORE, "fresh").await? == Some(b"yes".to_vec()));
    let fresh_wal = wal_provider(&urls)?;
    fresh_wal
        .register("fresh-source", WriteAheadLogConfig::default())
        .await?;
    ensure!(
        fresh_wal
            .append("fresh-source", &order_change("fresh-source", 1))
            .await?
            == 1
    );
    progress(
        &load,
        &mut workers,
        round,
        SETTLE,
        "with the first URL dead",
    )
    .await?;

    load.stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    while let Some(done) = workers.join_next().await {
        seen.push(done??);
    }

    // Nothing acknowledged went missing, and every append landed once: a
    // resent append (same id) did not take a second sequence number.
    cluster.restart(0)?;
    cluster.wait_for_leader(SETTLE).await?;
    let check = provider(&urls)?;
    let check_wal = wal_provider(&urls)?;
    for (w, seen) in seen.iter().enumerate() {
        for (key, value) in &seen.last {
            let got = check.get(STORE, key).await?;
            ensure!(
                got.as_deref() == Some(value.as_slice()),
                "{key}: acknowledged value lost"
            );
        }
        let expected: Vec<u64> = (1..=seen.wal_seqs.len() as u64).collect();
        ensure!(
            seen.wal_seqs == expected,
            "worker {w}: WAL sequence numbers are not 1..=n: {:?}",
            seen.wal_seqs
        );
        let source = format!("source-{w}");
        check_wal
            .register(&source, WriteAheadLogConfig::default())
            .await?;
        let events = check_wal.read_from(&source, 1).await?;
        ensure!(
            events.len() == seen.wal_seqs.len(),
            "worker {w}: {} events in the WAL for {} acknowledged appends: {:?} vs {:?}",
            events.len(),
            seen.wal_seqs.len(),
            events.iter().map(|(s, e)| format!("{s}:{e:?}")).collect::<Vec<_>>(),
            seen.wal_seqs
        );
    }
    Ok(())
}

/// With the failover budget spent, a call fails with an error that says
/// where it went, instead of hanging: no node reachable at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_calls_fail_after_the_budget() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(SERVER, dir.path(), 3, &[])?;
    cluster.wait_for_leader(SETTLE).await?;
    let urls = cluster.urls();
    for i in 0..cluster.len() {
        cluster.kill9(i)?;
    }
    let budget = Duration::from_millis(1500);
    let state = RemoteStateStoreProvider::builder(&urls)
        .token(CLIENT_TOKEN)
        .max_retries(1)
        .failover_timeout(budget)
        .build()?;
    let start = Instant::now();
    let err = state
        .set(STORE, "k", b"v".to_vec())
        .await
        .expect_err("no node is up");
    let took = start.elapsed();
    let text = err.to_string();
    ensure!(
        took >= budget && took < budget + Duration::from_secs(3),
        "gave up after {took:?} with a budget of {budget:?}"
    );
    ensure!(
        text.contains("cannot connect") && text.contains(&cluster.url(2)),
        "{text}"
    );
    Ok(())
}

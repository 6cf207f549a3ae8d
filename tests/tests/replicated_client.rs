//! The remote providers against a replicated store of three real server
//! processes on loopback, given every node's URL: a `kill -9` of the
//! leader, and of the node whose URL comes first, and a rolling restart
//! with a leadership hand-over, must look like slow calls, never like
//! errors.
//!
//! Only calls that may be resent after an unknown outcome run under the
//! kills (`set`, `get`, `contains_key`, `set_many`, `get_many`): a delete
//! cut off by a kill is reported as failed by design, since the client
//! cannot know whether it was applied. The write-ahead log is refused on a
//! replicated store (its records are not in Raft snapshots yet); the last
//! test checks that the refusal is immediate and clear.

use std::collections::BTreeMap;
use std::path::Path;
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
    // The default failover budget (10 s): what an app gets from the Secret.
    Ok(RemoteStateStoreProvider::builder(urls)
        .token(CLIENT_TOKEN)
        .build()?)
}

/// What one worker saw: every call must succeed; the last value of each
/// of its keys is checked at the end.
#[derive(Default)]
struct Seen {
    last: BTreeMap<String, Vec<u8>>,
}

struct Load {
    stop: AtomicBool,
    calls: AtomicU64,
}

/// One worker's loop: set a key, read it back (a linearizable read must
/// see it), set_many fresh keys and read them back. Any error ends the
/// test with the call that failed.
async fn worker(
    state: RemoteStateStoreProvider,
    load: Arc<Load>,
    w: usize,
) -> anyhow::Result<Seen> {
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
        load.calls.fetch_add(1, Ordering::Relaxed);
    }
    Ok(seen)
}

type Workers = JoinSet<anyhow::Result<Seen>>;

/// Three nodes, and [`WORKERS`] workers calling through one provider given
/// every URL, until told to stop; returns once they made `2 * WORKERS`
/// rounds, with the leader of the moment.
async fn loaded_cluster(dir: &Path) -> anyhow::Result<(Cluster, usize, Arc<Load>, Workers)> {
    let cluster = Cluster::start(SERVER, dir, 3, &[])?;
    let leader = cluster.wait_for_leader(SETTLE).await?;
    let state = provider(&cluster.urls())?;
    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        calls: AtomicU64::new(0),
    });
    let mut workers = JoinSet::new();
    for w in 0..WORKERS {
        workers.spawn(worker(state.clone(), Arc::clone(&load), w));
    }
    let round = WORKERS as u64;
    progress(&load, &mut workers, 2 * round, SETTLE, "before any fault").await?;
    Ok((cluster, leader, load, workers))
}

/// Stops the workers; what each saw, or the first error one of them met.
async fn stop_workers(load: &Load, mut workers: Workers) -> anyhow::Result<Vec<Seen>> {
    load.stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    while let Some(done) = workers.join_next().await {
        seen.push(done??);
    }
    Ok(seen)
}

/// Waits until the workers have completed `more` further rounds, failing
/// when one of them stopped (with its error) or after `timeout`.
async fn progress(
    load: &Load,
    workers: &mut Workers,
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
async fn every_call_succeeds_while_nodes_are_killed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, leader, load, mut workers) = loaded_cluster(dir.path()).await?;
    let urls = cluster.urls();
    let round = WORKERS as u64;

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
    progress(
        &load,
        &mut workers,
        round,
        SETTLE,
        "with the first URL dead",
    )
    .await?;

    let seen = stop_workers(&load, workers).await?;

    // Nothing acknowledged went missing, read through the node that was
    // down last (it must have caught up) as well as through every URL.
    cluster.restart(0)?;
    cluster.wait_for_leader(SETTLE).await?;
    let check = provider(&urls)?;
    let first_only = provider(&cluster.url(0))?;
    for seen in &seen {
        for (key, value) in &seen.last {
            for (via, p) in [("every URL", &check), ("node 0", &first_only)] {
                let got = p.get(STORE, key).await?;
                ensure!(
                    got.as_deref() == Some(value.as_slice()),
                    "{key}: acknowledged value lost (read through {via})"
                );
            }
        }
    }
    Ok(())
}

/// A rolling restart as the operator runs one: each follower is stopped
/// (SIGTERM, as when its pod is deleted) and restarted, then the leader
/// hands leadership over before it is restarted too. No call fails, the
/// hand-over takes well under an election's time, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_with_leader_hand_over_fails_no_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, leader, load, mut workers) = loaded_cluster(dir.path()).await?;
    let round = WORKERS as u64;

    // A follower has nothing to hand over: it says who leads.
    let follower = (leader + 1) % cluster.len();
    let answer = cluster.step_down(follower).await?;
    ensure!(
        !answer.stepped_down && answer.leader_id == Some(leader as u64),
        "a follower's step-down answered {answer:?}"
    );

    for i in (0..cluster.len()).filter(|i| *i != leader) {
        cluster.stop(i)?;
        progress(
            &load,
            &mut workers,
            round,
            SETTLE,
            "with a follower stopped",
        )
        .await?;
        cluster.restart(i)?;
        cluster.wait_for_leader(SETTLE).await?;
        progress(
            &load,
            &mut workers,
            round,
            SETTLE,
            "after a follower's restart",
        )
        .await?;
    }
    ensure!(
        cluster.wait_for_leader(SETTLE).await? == leader,
        "restarting followers moved leadership"
    );

    let before = cluster.cluster_info(leader).await?.term;
    let handed = cluster.step_down(leader).await?;
    eprintln!("leader {leader} handed over: {handed:?}");
    ensure!(
        handed.stepped_down,
        "the leader did not step down: {handed:?}"
    );
    let successor = handed.leader_id.context("no leader after the hand-over")?;
    ensure!(successor != leader as u64 && handed.term > before);
    // Well under the 1.5–2 s a follower waits before it runs for election
    // on its own when the leader just disappears.
    ensure!(
        handed.took_ms < 1_500,
        "the hand-over took {} ms",
        handed.took_ms
    );
    ensure!(cluster.wait_for_leader(SETTLE).await? == successor as usize);
    progress(&load, &mut workers, round, SETTLE, "after the hand-over").await?;
    cluster.stop(leader)?;
    progress(
        &load,
        &mut workers,
        round,
        SETTLE,
        "with the old leader stopped",
    )
    .await?;
    cluster.restart(leader)?;
    cluster.wait_for_leader(SETTLE).await?;
    progress(&load, &mut workers, 2 * round, SETTLE, "after the rollout").await?;

    let seen = stop_workers(&load, workers).await?;
    let check = provider(&cluster.url(leader))?;
    for seen in &seen {
        for (key, value) in &seen.last {
            ensure!(
                check.get(STORE, key).await?.as_deref() == Some(value.as_slice()),
                "{key}: acknowledged value lost"
            );
        }
    }
    Ok(())
}

/// A leader that gets SIGTERM (its pod deleted or evicted, its node
/// drained) hands leadership over before it exits: the moment it is gone,
/// the others already follow a new leader (after a plain loss they would
/// still name the dead one for the 1.5 s of their lease and more), and no
/// call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_with_sigterm_hands_over_before_it_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, leader, load, mut workers) = loaded_cluster(dir.path()).await?;
    let round = WORKERS as u64;
    let term = cluster.cluster_info(leader).await?.term;

    cluster.stop(leader)?;
    for i in (0..cluster.len()).filter(|i| *i != leader) {
        let info = cluster.cluster_info(i).await?;
        ensure!(
            info.leader_id.is_some_and(|l| l != leader as u64) && info.term > term,
            "node {i} still follows the stopped leader {leader} (term {}, leader {:?}): it \
             exited without handing over",
            info.term,
            info.leader_id
        );
    }
    progress(&load, &mut workers, 2 * round, SETTLE, "after the stop").await?;
    cluster.restart(leader)?;
    cluster.wait_for_leader(SETTLE).await?;
    progress(&load, &mut workers, round, SETTLE, "after the restart").await?;
    stop_workers(&load, workers).await?;
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

/// The write-ahead log is refused on a replicated store, at once and with
/// a reason, not after the failover budget: a replica rebuilt from a Raft
/// snapshot would come back without the log's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_refused_at_once_on_a_replicated_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(SERVER, dir.path(), 3, &[])?;
    cluster.wait_for_leader(SETTLE).await?;
    let wal = RemoteWalProvider::builder(cluster.urls())
        .token(CLIENT_TOKEN)
        .build()?;
    let start = Instant::now();
    let err = wal
        .register("source", WriteAheadLogConfig::default())
        .await
        .expect_err("WAL writes are refused on a replicated store");
    let took = start.elapsed();
    let text = format!("{err:#}");
    ensure!(
        text.contains("replicated store") && text.contains("write-ahead log"),
        "unclear refusal: {text}"
    );
    ensure!(took < Duration::from_secs(2), "refusal took {took:?}");
    // Nothing was registered: the provider does not let an append through.
    ensure!(
        wal.append("source", &order_change("source", 1))
            .await
            .is_err(),
        "an append to a source whose registration was refused succeeded"
    );
    // The key-value API on the same cluster is unaffected.
    let state = provider(&cluster.urls())?;
    state.set(STORE, "k", b"v".to_vec()).await?;
    ensure!(state.get(STORE, "k").await? == Some(b"v".to_vec()));
    Ok(())
}

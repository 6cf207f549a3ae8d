//! Replicated stores: three real server processes on loopback.
//!
//! - `kill -9` rounds under 16 concurrent writers: a random victim (leader
//!   or follower) each round; a new leader serves within the failover
//!   budget; the victim restarts and catches up; no acknowledged write is
//!   lost, no set_many is torn, and every node ends with the same data.
//! - A node whose volume is wiped rejoins and is rebuilt from the others.
//! - A leader of five hands leadership over without losing a write.
//! - The conformance suite passes through a follower of a 3-node cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use drasi_store_tests::cluster::Cluster;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const STORE: &str = "replicated/orders";
const WRITERS: usize = 16;
const KEYS_PER_WRITER: usize = 8;
const ROUNDS: usize = 10;
/// From `kill -9` of the leader to the first acknowledged write through a
/// surviving node: the budget (election timeout 500–1,000 ms, see
/// docs/replication.md).
const FAILOVER_BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Op {
    /// Single-key sets rewrite the writer's own keys; each set_many writes
    /// fresh keys that nothing touches again, so "torn" is decidable.
    keys: Vec<String>,
    many: bool,
    value: Vec<u8>,
    acked: bool,
}

struct Load {
    stop: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` at which the latest acknowledged write
    /// was sent: a write sent after a kill and acknowledged proves the
    /// store serves again (one in flight before the kill proves nothing).
    last_acked_sent_ms: AtomicU64,
    ops: Mutex<Vec<Vec<Op>>>,
}

async fn writer(cluster: Arc<Cluster>, load: Arc<Load>, w: usize) {
    let mut node = w % cluster.len();
    let mut n = 0u64;
    let mut rng = rand::rngs::StdRng::from_entropy();
    while !load.stop.load(Ordering::Relaxed) {
        n += 1;
        let value = format!("w{w}-op{n}").into_bytes();
        let many = rng.gen_bool(0.3);
        let keys: Vec<String> = if many {
            (0..4).map(|i| format!("m{w}-{n}-{i}")).collect()
        } else {
            vec![format!("k{w}-{}", rng.gen_range(0..KEYS_PER_WRITER))]
        };
        let sent_ms = load.started.elapsed().as_millis() as u64;
        let sent = if many {
            let entries: Vec<_> = keys.iter().map(|k| (k.clone(), value.clone())).collect();
            cluster.set_many(node, STORE, &entries).await
        } else {
            cluster.put(node, STORE, &keys[0], &value).await
        };
        let acked = matches!(&sent, Ok(r) if r.status().is_success());
        if acked {
            load.last_acked_sent_ms
                .fetch_max(sent_ms, Ordering::Relaxed);
        } else {
            // A dead node or no leader: try another node, as a client with
            // several URLs does.
            node = (node + 1) % cluster.len();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        load.ops.lock().await[w].push(Op {
            keys,
            many,
            value,
            acked,
        });
    }
}

/// What each key may hold at the end, from the writers' histories.
fn check(history: &[Vec<Op>], found: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    let mut allowed: BTreeMap<String, BTreeSet<Option<Vec<u8>>>> = BTreeMap::new();
    for ops in history {
        for op in ops.iter().filter(|op| !op.many) {
            let key = &op.keys[0];
            let set = allowed
                .entry(key.clone())
                .or_insert_with(|| BTreeSet::from([None]));
            if op.acked {
                // Everything before an acknowledged write is overwritten.
                *set = BTreeSet::from([Some(op.value.clone())]);
            } else {
                // Unacknowledged: it may or may not have been applied.
                set.insert(Some(op.value.clone()));
            }
        }
        for op in ops.iter().filter(|op| op.many) {
            let present: Vec<_> = op
                .keys
                .iter()
                .map(|k| found.get(k) == Some(&op.value))
                .collect();
            let all = present.iter().all(|p| *p);
            let none = op.keys.iter().all(|k| !found.contains_key(k));
            if op.acked {
                ensure!(
                    all,
                    "acknowledged set_many of {:?} is not all there: {present:?}",
                    op.keys
                );
            } else {
                ensure!(
                    all || none,
                    "set_many of {:?} is torn: {present:?}",
                    op.keys
                );
            }
            for k in &op.keys {
                allowed.insert(k.clone(), BTreeSet::from([None, Some(op.value.clone())]));
            }
        }
    }
    for (key, set) in &allowed {
        let value = found.get(key).cloned();
        ensure!(
            set.contains(&value),
            "key {key} holds {:?}, allowed: {:?}",
            value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            set.iter()
                .map(|v| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()))
                .collect::<Vec<_>>()
        );
    }
    for key in found.keys() {
        ensure!(allowed.contains_key(key), "key {key} was never written");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_rounds_lose_no_acknowledged_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Arc::new(Cluster::start(SERVER, dir.path(), 3, &[])?);
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let mut rng = rand::thread_rng();
    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        started: Instant::now(),
        last_acked_sent_ms: AtomicU64::new(0),
        ops: Mutex::new(vec![Vec::new(); WRITERS]),
    });
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(cluster.clone(), load.clone(), w)))
        .collect();
    let mut failovers = Vec::new();
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
        let victim = rng.gen_range(0..cluster.len());
        let killed_at = load.started.elapsed().as_millis() as u64;
        let kill_instant = Instant::now();
        cluster.kill9(victim)?;
        let served = loop {
            if load.last_acked_sent_ms.load(Ordering::Relaxed) > killed_at {
                break kill_instant.elapsed();
            }
            if kill_instant.elapsed() > Duration::from_secs(30) {
                bail!("round {round}: no write acknowledged within 30 s of killing node {victim}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        failovers.push((round, victim, victim == leader, served));
        cluster.restart(victim)?;
        cluster
            .caught_up(victim, Duration::from_secs(30))
            .await
            .with_context(|| format!("round {round}"))?;
    }
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    for (round, victim, was_leader, served) in &failovers {
        eprintln!(
            "round {round}: killed node {victim} ({}); a write sent after the kill was \
             acknowledged {} ms after it",
            if *was_leader { "leader" } else { "follower" },
            served.as_millis()
        );
    }
    for (round, victim, was_leader, served) in &failovers {
        if *was_leader {
            ensure!(
                *served <= FAILOVER_BUDGET,
                "round {round}: killing leader {victim} left the store without a serving \
                 leader for {served:?}"
            );
        }
    }
    let history = load.ops.lock().await.clone();
    let acked: usize = history.iter().flatten().filter(|op| op.acked).count();
    ensure!(acked > 100, "only {acked} writes were acknowledged");
    let mut contents = Vec::new();
    for i in 0..cluster.len() {
        cluster.caught_up(i, Duration::from_secs(30)).await?;
        contents.push(cluster.contents(i, STORE).await?);
    }
    check(&history, &contents[0])?;
    for (i, c) in contents.iter().enumerate().skip(1) {
        ensure!(*c == contents[0], "node {i} holds other data than node 0");
    }
    Ok(())
}

/// Writes one value through node `i`; true when acknowledged.
async fn acked(cluster: &Cluster, i: usize, key: &str, value: &str) -> bool {
    matches!(cluster.put(i, STORE, key, value.as_bytes()).await, Ok(r) if r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_acknowledges_nothing_and_the_majority_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, partitions) = Cluster::start_partitionable(SERVER, dir.path(), 3, &[]).await?;
    let cluster = Arc::new(cluster);
    let old = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    for i in 0..3 {
        ensure!(
            acked(&cluster, i, &format!("before-{i}"), "v").await,
            "write through node {i}"
        );
    }
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();

    partitions.isolate(old, 3);
    let cut_at = Instant::now();
    // Clients that still reach the old leader keep writing to it: a split
    // brain would acknowledge some of these.
    let minority: Vec<_> = (0..4)
        .map(|n| {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let key = format!("minority-{n}");
                (key.clone(), acked(&cluster, old, &key, "lost").await)
            })
        })
        .collect();
    // The majority elects a leader of its own and serves.
    let mut majority_acked = Vec::new();
    let mut n = 0;
    let served = loop {
        n += 1;
        let key = format!("majority-{n}");
        if acked(&cluster, others[n % 2], &key, "kept").await {
            majority_acked.push(key);
            if majority_acked.len() == 1 {
                break cut_at.elapsed();
            }
        }
        ensure!(
            cut_at.elapsed() < Duration::from_secs(30),
            "the majority never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "the majority acknowledged a write {} ms after the cut",
        served.as_millis()
    );
    for n in 0..20 {
        let key = format!("majority-more-{n}");
        ensure!(
            acked(&cluster, others[n % 2], &key, "kept").await,
            "majority write {key}"
        );
        majority_acked.push(key);
    }
    let new = cluster.cluster_info(others[0]).await?.leader_id;
    ensure!(
        new.is_some_and(|l| l as usize != old),
        "the majority follows {new:?}, not a new leader"
    );
    // The old leader cannot confirm it still leads: no stale read either.
    let read = cluster.get(old, STORE, "majority-more-0").await;
    ensure!(read.is_err(), "the isolated node answered a read: {read:?}");
    // It still calls itself leader, but it is not ready: a Service stops
    // sending clients to it.
    let readyz = cluster.readyz(old).await?;
    ensure!(
        readyz.0 == 503 && readyz.1.contains("no_quorum"),
        "the isolated old leader's /readyz: {readyz:?}"
    );
    for task in minority {
        let (key, was_acked) = task.await?;
        ensure!(
            !was_acked,
            "the isolated old leader acknowledged {key}: split brain"
        );
    }

    partitions.heal();
    cluster.caught_up(old, Duration::from_secs(30)).await?;
    let mut contents = Vec::new();
    for i in 0..3 {
        contents.push(cluster.contents(i, STORE).await?);
    }
    for key in &majority_acked {
        ensure!(
            contents[0].contains_key(key),
            "acknowledged {key} is missing"
        );
    }
    ensure!(
        !contents[0].keys().any(|k| k.starts_with("minority-")),
        "a write the isolated leader never committed was applied"
    );
    for (i, c) in contents.iter().enumerate().skip(1) {
        ensure!(
            *c == contents[0],
            "node {i} holds other data than node 0 after healing"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_volume_is_lost_is_rebuilt_from_a_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A snapshot every 40 entries, keeping 4: the wiped node's entries are
    // long purged, so only a snapshot can rebuild it.
    let cluster = Cluster::start(SERVER, dir.path(), 3, &["--raft-snapshot-logs", "40"])?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let victim = (leader + 1) % 3;
    for n in 0..60 {
        ensure!(
            acked(&cluster, n % 3, &format!("a-{n}"), "first").await,
            "write a-{n}"
        );
    }
    cluster.kill9(victim)?;
    cluster.wipe(victim)?;
    for n in 0..100 {
        let through = if n % 2 == 0 {
            leader
        } else {
            3 - leader - victim
        };
        ensure!(
            acked(&cluster, through, &format!("b-{n}"), "second").await,
            "write b-{n}"
        );
    }
    cluster.restart(victim)?;
    cluster.caught_up(victim, Duration::from_secs(60)).await?;
    ensure!(
        cluster
            .log(victim)
            .contains("installed a snapshot received from the leader"),
        "node {victim} caught up without installing a snapshot:\n{}",
        cluster.log(victim)
    );
    let expected = cluster
        .contents(leader, STORE)
        .await
        .with_context(|| format!("leader's log:\n{}", cluster.log(leader)))?;
    ensure!(
        expected.len() == 160,
        "the leader holds {} keys",
        expected.len()
    );
    let rebuilt = cluster.contents(victim, STORE).await?;
    ensure!(
        rebuilt == expected,
        "the rebuilt node holds other data than the leader"
    );
    // It goes on replicating after the snapshot.
    ensure!(
        acked(&cluster, victim, "c-after", "third").await,
        "write through the rebuilt node"
    );
    cluster.caught_up(victim, Duration::from_secs(30)).await?;
    ensure!(cluster.contents(victim, STORE).await?.len() == 161);
    Ok(())
}

/// Five nodes: the successor needs a vote beyond the old leader's, and
/// the other followers refuse while their lease from the old leader runs,
/// so the hand-over takes an election round longer than with three. It
/// still ends with another node leading, nothing lost, and every write
/// sent during it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_node_leader_hands_over_and_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Arc::new(Cluster::start(SERVER, dir.path(), 5, &[])?);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    for n in 0..20 {
        ensure!(
            acked(&cluster, n % 5, &format!("before-{n}"), "v").await,
            "write before-{n}"
        );
    }
    // Writes keep arriving at the leader while it hands over: they wait,
    // then go to the new leader (through the old one's forwarding).
    let writer = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut acks = 0;
            for n in 0..40 {
                if acked(&cluster, leader, &format!("during-{n}"), "v").await {
                    acks += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acks
        })
    };
    let handed = cluster.step_down(leader).await?;
    eprintln!("5 nodes: leader {leader} handed over: {handed:?}");
    ensure!(handed.stepped_down, "{handed:?}");
    let successor = handed.leader_id.context("no leader after the hand-over")? as usize;
    ensure!(successor != leader);
    ensure!(cluster.wait_for_leader(Duration::from_secs(30)).await? == successor);
    let acks = writer.await?;
    ensure!(
        acks == 40,
        "{acks} of 40 writes sent during the hand-over were acknowledged"
    );
    for i in 0..5 {
        cluster.caught_up(i, Duration::from_secs(30)).await?;
        ensure!(
            cluster.contents(i, STORE).await?.len() == 60,
            "node {i} lacks writes"
        );
    }
    Ok(())
}

/// An import is refused by a replicated node before the upload is stored
/// or read (it could be as large as the database): a body that is not a
/// snapshot at all gets the replication refusal, not a complaint about its
/// content, and nothing is spooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_replicated_store_is_refused_before_the_upload() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(SERVER, dir.path(), 3, &[])?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let r = reqwest::Client::new()
        .post(format!(
            "{}{}",
            cluster.url(0),
            drasi_store_protocol::snapshot::IMPORT_PATH
        ))
        .bearer_auth(drasi_store_tests::cluster::CLIENT_TOKEN)
        .header("content-type", drasi_store_protocol::snapshot::CONTENT_TYPE)
        .body(vec![0u8; 4096])
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    ensure!(r.status() == 405, "answered {}", r.status());
    let body = r.text().await?;
    ensure!(body.contains("replicated store"), "{body}");
    let spooled: Vec<_> = std::fs::read_dir(cluster.data_dir(0))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .collect();
    ensure!(spooled.is_empty(), "the upload was spooled: {spooled:?}");
    Ok(())
}

/// A data directory a single-node server wrote is refused as a replica's:
/// replicating on top of it would leave that node's data different from
/// its peers' for good. The node says why and does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_data_directory_is_refused_as_a_replica() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let single = drasi_store_tests::ServerProcess::builder(SERVER, dir.path().join("node-2"))
        .token(drasi_store_tests::cluster::CLIENT_TOKEN)
        .start()?;
    let put = reqwest::Client::new()
        .put(format!(
            "{}{}?{}",
            single.url(),
            drasi_store_protocol::routes::KV,
            drasi_store_protocol::encode_query(STORE, Some("k"))
        ))
        .bearer_auth(drasi_store_tests::cluster::CLIENT_TOKEN)
        .body("single-node data")
        .send()
        .await?;
    ensure!(put.status().is_success(), "{}", put.status());
    single.terminate(Duration::from_secs(30))?;

    let err = match Cluster::start(SERVER, dir.path(), 3, &[]) {
        Ok(_) => bail!("a replica started on a single-node data directory"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("holds data written by a single-node server"),
        "{err}"
    );
    Ok(())
}

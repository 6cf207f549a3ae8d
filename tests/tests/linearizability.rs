//! Linearizability of a replicated store across failovers, checked by an
//! existing checker: stateright's `LinearizabilityTester`, a search for a
//! total order of the recorded operations that respects real time (an
//! operation that returned before another was invoked comes first) and the
//! sequential semantics of a register.
//!
//! Three real server processes on loopback, their peer links behind the
//! partition proxy. Clients read, write (unique values) and delete single
//! keys through any node, over raw HTTP without retries, while a nemesis
//! `kill -9`s the leader or a random node and isolates the leader from its
//! peers. Each key is an independent register (linearizability is
//! compositional, so one check per key is the whole check); keys change
//! every epoch so that each history stays small enough for an exhaustive
//! search.
//!
//! A call whose outcome is unknown (a timeout, a broken connection after
//! the request was sent, an `indeterminate` answer) is left *in flight*
//! forever: the checker may order it anywhere after its invocation, or
//! leave it out, which is exactly the freedom a client has after an
//! unknown outcome. A call the server refused before applying it (a
//! connection that never opened, any error answer other than
//! `indeterminate`) took no effect and is left out; if a refusal were a
//! lie, the histories would show it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use drasi_store_protocol::{ErrorBody, ErrorCode};
use drasi_store_tests::cluster::Cluster;
use rand::{Rng, SeedableRng};
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const STORE: &str = "linearizability";
/// Keys written at the same time, and clients per key.
const KEYS: usize = 3;
const CLIENTS_PER_KEY: usize = 3;
/// How long one set of keys is used: long enough to span a failover now
/// and then, short enough that a history has at most a few hundred calls.
const EPOCH: Duration = Duration::from_millis(1000);
/// Pause between a client's calls: keeps histories small without letting
/// the cluster idle.
const THINK: Duration = Duration::from_millis(20);
const NEMESIS_ROUNDS: usize = 6;

type Value = Option<u64>;
type History = LinearizabilityTester<u64, Register<Value>>;

/// One call as recorded: `invoked` is taken before the request leaves and
/// `returned` after the answer arrives, from one counter, so a call
/// recorded as finished before another began really did.
struct Call {
    client: u64,
    invoked: u64,
    op: RegisterOp<Value>,
    outcome: Outcome,
}

enum Outcome {
    Done {
        returned: u64,
        ret: RegisterRet<Value>,
    },
    Unknown,
    Refused,
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<BTreeMap<(u64, usize), Vec<Call>>>,
    clock: AtomicU64,
    values: AtomicU64,
    completed: AtomicU64,
    unknown: AtomicU64,
    refused: AtomicU64,
    /// Reads that returned a value written by another client: evidence
    /// that the workload actually exercises concurrency.
    cross_reads: AtomicU64,
    /// Set by the nemesis from a fault until the cluster has recovered.
    /// Clients do not delete meanwhile: deletes all write the same value
    /// (none), so a delete with an unknown outcome cannot be left out of
    /// the search the way a unique write can, and the checker, which has
    /// no memoization, multiplies the orders it tries by every such
    /// delete. Deletes with a known outcome, and deletes in flight when a
    /// fault strikes, are still checked.
    faulting: AtomicBool,
}

impl Recorder {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

/// Replays one register's calls, in recorded order, into the checker.
/// Completed calls run on their client's thread; each write with an
/// unknown outcome gets a thread of its own that never returns, numbered
/// after every client so that the search tries completed calls first.
///
/// Two kinds of unanswered calls are left out, because they cannot change
/// the verdict and would only widen the search (the checker has no
/// memoization, so each call in flight multiplies the orders it tries):
/// reads (a read without an answer constrains nothing), and writes of a
/// value no read returned (values are unique: if such a write took effect
/// at some point of a valid order, no read falls between it and the next
/// write, so the order without it is valid too, and the other way round
/// the checker may always leave a call in flight out).
fn history(calls: &[Call]) -> History {
    enum Event<'a> {
        Invoke(u64, &'a RegisterOp<Value>),
        Return(u64, &'a RegisterRet<Value>),
    }
    let observed: std::collections::HashSet<u64> = calls
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Done {
                ret: RegisterRet::ReadOk(Some(v)),
                ..
            } => Some(*v),
            _ => None,
        })
        .collect();
    let mut events = Vec::new();
    for (n, call) in calls.iter().enumerate() {
        match (&call.outcome, &call.op) {
            (Outcome::Done { returned, ret }, op) => {
                events.push((call.invoked, Event::Invoke(call.client, op)));
                events.push((*returned, Event::Return(call.client, ret)));
            }
            (Outcome::Unknown, RegisterOp::Write(Some(v))) if !observed.contains(v) => {}
            (Outcome::Unknown, op @ RegisterOp::Write(_)) => {
                let thread = 1_000_000 + n as u64;
                events.push((call.invoked, Event::Invoke(thread, op)));
            }
            (Outcome::Unknown, RegisterOp::Read) | (Outcome::Refused, _) => {}
        }
    }
    events.sort_by_key(|(at, _)| *at);
    let mut history = History::new(Register(None));
    for (_, event) in events {
        match event {
            Event::Invoke(thread, op) => history.on_invoke(thread, op.clone()),
            Event::Return(thread, ret) => history.on_return(thread, ret.clone()),
        }
        .expect("one call at a time per client");
    }
    history
}

async fn call(
    cluster: &Cluster,
    node: usize,
    key: &str,
    op: &RegisterOp<Value>,
) -> Result<RegisterRet<Value>, Outcome> {
    let response = match op {
        RegisterOp::Read => cluster.get_response(node, STORE, key).await,
        RegisterOp::Write(Some(v)) => {
            cluster
                .put(node, STORE, key, v.to_string().as_bytes())
                .await
        }
        RegisterOp::Write(None) => cluster.delete(node, STORE, key).await,
    };
    let response = match response {
        Ok(r) => r,
        // Nothing was sent.
        Err(e)
            if e.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_connect) =>
        {
            return Err(Outcome::Refused);
        }
        Err(_) => return Err(Outcome::Unknown),
    };
    let status = response.status().as_u16();
    let Ok(body) = response.bytes().await else {
        return Err(Outcome::Unknown);
    };
    match (op, status) {
        (RegisterOp::Read, 200) => std::str::from_utf8(&body)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(|v| RegisterRet::ReadOk(Some(v)))
            .ok_or(Outcome::Unknown),
        (RegisterOp::Read, 404) => Ok(RegisterRet::ReadOk(None)),
        (RegisterOp::Write(_), 200..=299) => Ok(RegisterRet::WriteOk),
        _ => match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) if e.code != ErrorCode::Indeterminate => Err(Outcome::Refused),
            _ => Err(Outcome::Unknown),
        },
    }
}

/// One client: in each epoch it works on that epoch's key for its slot
/// (`client % KEYS`), one call at a time, through a random node.
async fn client(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    start: Instant,
    client: usize,
) {
    let mut rng = rand::rngs::StdRng::from_entropy();
    let slot = client % KEYS;
    let client = client as u64;
    let mut written: Vec<u64> = Vec::new();
    let mut epoch = u64::MAX;
    while !stop.load(Ordering::Relaxed) {
        let now = (start.elapsed().as_millis() / EPOCH.as_millis()) as u64;
        if now != epoch {
            epoch = now;
            written.clear();
        }
        let name = format!("e{epoch}-k{slot}");
        let op = match rng.gen_range(0..10) {
            0..=4 => RegisterOp::Read,
            5..=8 => {
                let v = recorder.values.fetch_add(1, Ordering::Relaxed) + 1;
                written.push(v);
                RegisterOp::Write(Some(v))
            }
            _ if recorder.faulting.load(Ordering::Relaxed) => RegisterOp::Read,
            _ => RegisterOp::Write(None),
        };
        let node = rng.gen_range(0..cluster.len());
        let invoked = recorder.tick();
        let answer = call(&cluster, node, &name, &op).await;
        let returned = recorder.tick();
        let outcome = match answer {
            Ok(ret) => {
                if let RegisterRet::ReadOk(Some(v)) = &ret
                    && !written.contains(v)
                {
                    recorder.cross_reads.fetch_add(1, Ordering::Relaxed);
                }
                recorder.completed.fetch_add(1, Ordering::Relaxed);
                Outcome::Done { returned, ret }
            }
            Err(outcome) => {
                let counter = match outcome {
                    Outcome::Refused => &recorder.refused,
                    _ => &recorder.unknown,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                outcome
            }
        };
        recorder
            .calls
            .lock()
            .unwrap()
            .entry((epoch, slot))
            .or_default()
            .push(Call {
                client,
                invoked,
                op,
                outcome,
            });
        tokio::time::sleep(THINK).await;
    }
}

/// How long the search may take for one register. A linearizable history
/// of this size is found in milliseconds; a search that runs out of time is
/// reported with the history, never taken as a pass.
const CHECK_BUDGET: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq)]
enum Verdict {
    Linearizable,
    NotLinearizable,
    Undecided,
}

/// Checks one history on a thread with a large stack (the search recurses
/// once per operation), within [`CHECK_BUDGET`].
fn check(history: History) -> anyhow::Result<Verdict> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let _ = tx.send(history.is_consistent());
        })?;
    Ok(match rx.recv_timeout(CHECK_BUDGET) {
        Ok(true) => Verdict::Linearizable,
        Ok(false) => Verdict::NotLinearizable,
        Err(_) => Verdict::Undecided,
    })
}

/// One line per call, in invocation order, for a failure message.
fn describe(calls: &[Call]) -> String {
    let mut calls: Vec<&Call> = calls.iter().collect();
    calls.sort_by_key(|c| c.invoked);
    calls
        .iter()
        .map(|c| {
            let outcome = match &c.outcome {
                Outcome::Done { returned, ret } => format!("..{returned} -> {ret:?}"),
                Outcome::Unknown => ".. unknown outcome".into(),
                Outcome::Refused => ".. refused".into(),
            };
            format!("  [{}{outcome}] client {} {:?}", c.invoked, c.client, c.op)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registers_stay_linearizable_across_kills_and_partitions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cluster, partitions) = Cluster::start_partitionable(SERVER, dir.path(), 3, &[]).await?;
    let cluster = Arc::new(cluster);
    cluster.wait_for_leader(Duration::from_secs(30)).await?;

    let recorder = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let clients: Vec<_> = (0..KEYS * CLIENTS_PER_KEY)
        .map(|c| {
            tokio::spawn(client(
                cluster.clone(),
                recorder.clone(),
                stop.clone(),
                start,
                c,
            ))
        })
        .collect();

    // The nemesis: alternately kill -9 (the leader, or any node) and cut
    // the leader off from its peers; each time the cluster must recover
    // before the next fault.
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut faults = Vec::new();
    for round in 0..NEMESIS_ROUNDS {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let before = recorder.completed.load(Ordering::Relaxed);
        recorder.faulting.store(true, Ordering::Relaxed);
        match round % 3 {
            0 | 1 => {
                let victim = if round % 3 == 0 {
                    leader
                } else {
                    rng.gen_range(0..cluster.len())
                };
                cluster.kill9(victim)?;
                faults.push(format!("kill -9 node {victim} (leader {leader})"));
                tokio::time::sleep(Duration::from_millis(2000)).await;
                cluster.restart(victim)?;
            }
            _ => {
                partitions.isolate(leader, cluster.len());
                faults.push(format!("isolate leader {leader}"));
                tokio::time::sleep(Duration::from_millis(3000)).await;
                partitions.heal();
            }
        }
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .with_context(|| format!("recovering from round {round}"))?;
        recorder.faulting.store(false, Ordering::Relaxed);
        // Progress resumes after every fault.
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorder.completed.load(Ordering::Relaxed) < before + 20 {
            ensure!(
                Instant::now() < deadline,
                "no progress after {}",
                faults[round]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(EPOCH).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }

    let registers = std::mem::take(&mut *recorder.calls.lock().unwrap());
    let sizes: Vec<usize> = registers.values().map(Vec::len).collect();
    eprintln!("checking {} registers of {sizes:?} calls", registers.len());
    let checked_at = Instant::now();
    let mut longest = 0;
    for ((epoch, slot), calls) in &registers {
        let history = history(calls);
        longest = longest.max(history.len());
        let verdict = check(history)?;
        anyhow::ensure!(
            verdict == Verdict::Linearizable,
            "register e{epoch}-k{slot}: {verdict:?} (faults: {faults:?}); its calls:\n{}",
            describe(calls)
        );
    }
    let completed = recorder.completed.load(Ordering::Relaxed);
    let unknown = recorder.unknown.load(Ordering::Relaxed);
    let refused = recorder.refused.load(Ordering::Relaxed);
    let cross = recorder.cross_reads.load(Ordering::Relaxed);
    eprintln!(
        "{} registers, {completed} calls answered, {unknown} with an unknown outcome, \
         {refused} refused, {cross} reads of another client's write, longest history \
         {longest}, checked in {:?}; faults: {faults:?}",
        registers.len(),
        checked_at.elapsed()
    );
    // The check only means something if the workload was concurrent and
    // large enough.
    ensure!(completed > 500, "only {completed} calls answered");
    ensure!(cross > 50, "only {cross} reads saw another client's write");
    Ok(())
}

/// The checker itself rejects what a broken read path would produce, so
/// the test above can fail.
#[test]
fn the_checker_rejects_a_stale_read_and_accepts_an_unknown_write() {
    // Thread 0's write returned before thread 1's read began: reading the
    // old value is a stale read.
    let mut stale = History::new(Register(None));
    stale
        .on_invret(0, RegisterOp::Write(Some(1)), RegisterRet::WriteOk)
        .unwrap()
        .on_invret(1, RegisterOp::Read, RegisterRet::ReadOk(None))
        .unwrap();
    assert!(!stale.is_consistent());
    assert_eq!(check(stale).unwrap(), Verdict::NotLinearizable);

    // A write whose outcome is unknown may be seen or not, but once seen
    // it cannot un-happen.
    let mut unknown = History::new(Register(None));
    unknown.on_invoke(0, RegisterOp::Write(Some(7))).unwrap();
    unknown
        .on_invret(1, RegisterOp::Read, RegisterRet::ReadOk(None))
        .unwrap()
        .on_invret(1, RegisterOp::Read, RegisterRet::ReadOk(Some(7)))
        .unwrap();
    assert!(unknown.is_consistent());
    unknown
        .on_invret(2, RegisterOp::Read, RegisterRet::ReadOk(None))
        .unwrap();
    assert!(!unknown.is_consistent());

    // Two concurrent writes may land in either order, but every reader
    // must see the same order.
    let mut forked = History::new(Register(None));
    forked.on_invoke(0, RegisterOp::Write(Some(1))).unwrap();
    forked.on_invoke(1, RegisterOp::Write(Some(2))).unwrap();
    forked.on_return(0, RegisterRet::WriteOk).unwrap();
    forked.on_return(1, RegisterRet::WriteOk).unwrap();
    forked
        .on_invret(2, RegisterOp::Read, RegisterRet::ReadOk(Some(1)))
        .unwrap();
    assert!(forked.is_consistent());
    forked
        .on_invret(3, RegisterOp::Read, RegisterRet::ReadOk(Some(2)))
        .unwrap();
    forked
        .on_invret(2, RegisterOp::Read, RegisterRet::ReadOk(Some(1)))
        .unwrap();
    assert!(!forked.is_consistent());
}

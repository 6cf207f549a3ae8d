//! The group-commit writer.
//!
//! One dedicated thread owns every redb write transaction. It blocks for the
//! first queued write, takes everything else already queued (bounded by
//! [`MAX_GROUP_OPS`] and [`MAX_GROUP_BYTES`]), applies the whole group in one
//! transaction, commits once, and only then answers each request. Under
//! concurrency this turns N fsyncs into one.
//!
//! Atomicity: every op is checked before it mutates anything, so an op that
//! is rejected leaves no trace while the rest of its group commits. A
//! storage error aborts the whole transaction and fails every op in it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drasi_store_protocol::Limits;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::schema::{
    GARBAGE, KV, META, META_NEXT_PARTITION, META_STORE_COUNT, META_TOTAL_KEYS, STORES,
};
use super::wal::WalTables;
use super::{EngineError, EngineResult, Health, gc};
use crate::config::DurabilityMode;
use crate::metrics::Metrics;

/// Most requests committed together. Bounds the latency one group adds.
const MAX_GROUP_OPS: usize = 2048;
/// Most payload bytes committed together, so a burst of MB-scale values
/// does not build one huge transaction.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// With `--durability eventual`, the longest a non-durable commit waits
/// for the fsync that makes it durable. Also bounds how long GC progress
/// stays non-durable.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// While garbage is pending and clients keep the queue busy, run one GC
/// chunk after this many client groups so that collection still advances.
const GC_EVERY_GROUPS: u32 = 8;

/// A write request, as the HTTP layer hands it over.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Set {
        store: String,
        key: String,
        value: Bytes,
    },
    Delete {
        store: String,
        key: String,
    },
    /// An entries frame, validated against the limits by the caller.
    SetMany {
        store: String,
        frame: Bytes,
    },
    /// A keys frame, validated against the limits by the caller.
    DeleteMany {
        store: String,
        frame: Bytes,
    },
    Clear {
        store: String,
    },
    /// Forces a durable commit and answers after it.
    Sync,
    /// A write-ahead log write (see [`super::wal`]).
    Wal(super::wal::WalOp),
}

impl WriteOp {
    fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Set { key, value, .. } => key.len() + value.len(),
            WriteOp::SetMany { frame, .. } | WriteOp::DeleteMany { frame, .. } => frame.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::Clear { .. } | WriteOp::Sync => 0,
            WriteOp::Wal(op) => op.payload_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    pub count: u64,
}

type ReplyTx = oneshot::Sender<EngineResult<Reply>>;

enum Msg {
    Write(WriteOp, ReplyTx),
    Shutdown(oneshot::Sender<anyhow::Result<()>>),
    /// Makes the writer thread panic, so tests can check what a dead
    /// writer looks like from the outside. Not compiled into the server.
    #[cfg(test)]
    Crash,
}

/// Whether the writer thread is doing its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterState {
    Running,
    /// Stopped on purpose by [`WriterHandle::shutdown`].
    Stopped,
    /// Exited without being asked to (a panic): no write can succeed until
    /// the process restarts.
    Dead,
}

pub(crate) struct WriterHandle {
    tx: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stopping: AtomicBool,
}

impl WriterHandle {
    pub fn submit(&self, op: WriteOp) -> EngineResult<oneshot::Receiver<EngineResult<Reply>>> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write(op, reply))
            .map_err(|_| EngineError::Unavailable)?;
        Ok(rx)
    }

    pub fn state(&self) -> WriterState {
        let guard = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(thread) if !thread.is_finished() => WriterState::Running,
            // `shutdown` sets `stopping` before the thread can end, and is
            // the only place that takes the handle.
            _ if self.stopping.load(Ordering::Acquire) => WriterState::Stopped,
            _ => WriterState::Dead,
        }
    }

    /// Makes the writer thread panic and waits until it is gone.
    #[cfg(test)]
    pub fn crash(&self) {
        let _ = self.tx.send(Msg::Crash);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state() == WriterState::Running {
            assert!(Instant::now() < deadline, "writer did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.stopping.store(true, Ordering::Release);
        let (done, rx) = oneshot::channel();
        let sent = self.tx.send(Msg::Shutdown(done)).is_ok();
        let result = if sent {
            rx.await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("writer thread died during shutdown")))
        } else {
            Ok(())
        };
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
        }
        result
    }
}

pub(crate) fn spawn(
    db: Arc<Database>,
    mode: DurabilityMode,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<WriterHandle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut writer = Writer {
        db,
        mode,
        health,
        metrics,
        dirty_since: None,
        // Garbage left by a previous run is collected after restart.
        gc_pending: true,
        groups_since_gc: 0,
    };
    let thread = std::thread::Builder::new()
        .name("drasi-store-writer".into())
        .spawn(move || {
            let _guard = ExitGuard;
            writer.run(rx)
        })?;
    Ok(WriterHandle {
        tx,
        thread: Mutex::new(Some(thread)),
        stopping: AtomicBool::new(false),
    })
}

/// Logs, through tracing rather than only the panic hook's stderr line,
/// that the writer died: it is the event an operator needs to find.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                "the group-commit writer thread panicked; every write now fails \
                 and /healthz reports 503 so that the pod is restarted"
            );
        }
    }
}

struct Writer {
    db: Arc<Database>,
    mode: DurabilityMode,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// When the oldest commit that is not yet durable happened.
    dirty_since: Option<Instant>,
    gc_pending: bool,
    groups_since_gc: u32,
}

/// Failure that aborts the whole group.
type Abort = EngineError;

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut group: Vec<(WriteOp, ReplyTx)> = Vec::new();
        loop {
            let first = match self.next_message(&rx) {
                Next::Msg(m) => m,
                Next::Idle => continue,
                Next::Closed => {
                    let _ = self.flush("final");
                    return;
                }
            };
            let mut shutdown = None;
            match first {
                Msg::Write(op, reply) => group.push((op, reply)),
                Msg::Shutdown(done) => shutdown = Some(done),
                #[cfg(test)]
                Msg::Crash => panic!("writer crash requested by a test"),
            }
            if shutdown.is_none() {
                let mut bytes = group[0].0.payload_bytes();
                while group.len() < MAX_GROUP_OPS && bytes < MAX_GROUP_BYTES {
                    match rx.try_recv() {
                        Ok(Msg::Write(op, reply)) => {
                            bytes += op.payload_bytes();
                            group.push((op, reply));
                        }
                        Ok(Msg::Shutdown(done)) => {
                            shutdown = Some(done);
                            break;
                        }
                        #[cfg(test)]
                        Ok(Msg::Crash) => panic!("writer crash requested by a test"),
                        Err(_) => break,
                    }
                }
            }
            if !group.is_empty() {
                self.commit_group(&mut group);
                self.groups_since_gc += 1;
                if self.gc_pending && self.groups_since_gc >= GC_EVERY_GROUPS {
                    self.gc_step();
                }
            }
            if let Some(done) = shutdown {
                let result = self.flush("final");
                if result.is_ok() {
                    tracing::info!("writer stopped after a final durable commit");
                }
                let _ = done.send(result);
                return;
            }
        }
    }

    fn next_message(&mut self, rx: &Receiver<Msg>) -> Next {
        if self.gc_pending {
            match rx.try_recv() {
                Ok(m) => return Next::Msg(m),
                Err(TryRecvError::Disconnected) => return Next::Closed,
                Err(TryRecvError::Empty) => {
                    if self
                        .dirty_since
                        .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL)
                    {
                        let _ = self.flush("periodic");
                    }
                    self.gc_step();
                    return Next::Idle;
                }
            }
        }
        if let Some(since) = self.dirty_since {
            let wait = (since + FLUSH_INTERVAL).saturating_duration_since(Instant::now());
            return match rx.recv_timeout(wait) {
                Ok(m) => Next::Msg(m),
                Err(RecvTimeoutError::Disconnected) => Next::Closed,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.flush("periodic");
                    Next::Idle
                }
            };
        }
        match rx.recv() {
            Ok(m) => Next::Msg(m),
            Err(_) => Next::Closed,
        }
    }

    fn must_be_durable(&self, group: &[(WriteOp, ReplyTx)]) -> bool {
        self.mode == DurabilityMode::Immediate
            || self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL)
            || group.iter().any(|(op, _)| matches!(op, WriteOp::Sync))
    }

    fn begin(&self, durable: bool) -> Result<WriteTransaction, Abort> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| EngineError::storage("begin write", e))?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| EngineError::storage("set durability", e))?;
        Ok(txn)
    }

    fn commit_group(&mut self, group: &mut Vec<(WriteOp, ReplyTx)>) {
        let durable = self.must_be_durable(group);
        let started = Instant::now();
        let result = self.apply_group(group, durable);
        let elapsed = started.elapsed();
        self.metrics.observe_commit(group.len(), elapsed);
        match result {
            Ok(replies) => {
                self.committed(durable);
                for ((op, reply), result) in group.drain(..).zip(replies) {
                    if matches!(op, WriteOp::Clear { .. }) {
                        self.gc_pending = true;
                    }
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                self.health.last_commit_ok.store(false, Ordering::Relaxed);
                tracing::error!(error = %err, ops = group.len(), "commit failed; every write in the group was rejected");
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn committed(&mut self, durable: bool) {
        self.health.last_commit_ok.store(true, Ordering::Relaxed);
        if durable {
            self.dirty_since = None;
        } else if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    fn apply_group(
        &self,
        group: &[(WriteOp, ReplyTx)],
        durable: bool,
    ) -> Result<Vec<EngineResult<Reply>>, Abort> {
        let txn = self.begin(durable)?;
        let replies = {
            let mut tables = Tables::open(&txn)?;
            let replies = group
                .iter()
                .map(|(op, _)| tables.apply(op))
                .collect::<Result<Vec<_>, Abort>>()?;
            tables.save_counters()?;
            replies
        };
        txn.commit()
            .map_err(|e| EngineError::storage("commit", e))?;
        Ok(replies)
    }

    /// Makes every earlier non-durable commit durable.
    fn flush(&mut self, why: &'static str) -> anyhow::Result<()> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self
            .begin(true)
            .and_then(|txn| txn.commit().map_err(|e| EngineError::storage("flush", e)));
        match result {
            Ok(()) => {
                self.committed(true);
                tracing::debug!(
                    reason = why,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "flushed to disk"
                );
                Ok(())
            }
            Err(err) => {
                self.health.last_commit_ok.store(false, Ordering::Relaxed);
                tracing::error!(error = %err, reason = why, "durable flush failed");
                Err(err.into())
            }
        }
    }

    /// Deletes one bounded chunk of a cleared partition in its own
    /// (non-durable) transaction: the writer is never held for long, and a
    /// chunk lost in a crash is simply collected again.
    fn gc_step(&mut self) {
        self.groups_since_gc = 0;
        let result = self.begin(false).and_then(|txn| {
            let progress = gc::collect_chunk(&txn, gc::CHUNK_ENTRIES)?;
            txn.commit()
                .map_err(|e| EngineError::storage("gc commit", e))?;
            Ok(progress)
        });
        match result {
            Ok(gc::Progress::Idle) => self.gc_pending = false,
            Ok(gc::Progress::Removed {
                pid,
                removed,
                finished,
            }) => {
                self.committed(false);
                self.metrics.gc_entries_deleted.inc_by(removed);
                if finished {
                    tracing::debug!(partition = pid, "cleared partition fully collected");
                }
            }
            Err(err) => {
                // Retried on the next idle turn; client writes are unaffected.
                tracing::warn!(error = %err, "garbage collection step failed");
                self.gc_pending = false;
            }
        }
    }
}

enum Next {
    Msg(Msg),
    /// Background work was done; look for messages again.
    Idle,
    Closed,
}

/// Limits for re-decoding frames the HTTP layer already validated.
const UNLIMITED: Limits = Limits {
    max_key_bytes: usize::MAX,
    max_value_bytes: usize::MAX,
    max_batch_entries: usize::MAX,
    max_body_bytes: usize::MAX,
};

/// The open tables of one write transaction plus the `meta` counters,
/// written back once per group.
struct Tables<'txn> {
    stores: Table<'txn, &'static str, (u64, u64)>,
    kv: Table<'txn, (u64, &'static str), &'static [u8]>,
    meta: Table<'txn, &'static str, u64>,
    garbage: Table<'txn, u64, ()>,
    next_pid: u64,
    total_keys: u64,
    store_count: u64,
    txn: &'txn WriteTransaction,
    /// Opened by the first WAL op of the group.
    wal: Option<WalTables<'txn>>,
}

fn st(op: &'static str) -> impl Fn(redb::StorageError) -> EngineError {
    move |e| EngineError::storage(op, e)
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, Abort> {
        let open = |e: redb::TableError| EngineError::storage("open table", e);
        let meta = txn.open_table(META).map_err(open)?;
        let read = |name: &str| -> Result<u64, Abort> {
            Ok(meta
                .get(name)
                .map_err(st("read meta"))?
                .map_or(0, |g| g.value()))
        };
        let next_pid = read(META_NEXT_PARTITION)?.max(1);
        let total_keys = read(META_TOTAL_KEYS)?;
        let store_count = read(META_STORE_COUNT)?;
        Ok(Tables {
            stores: txn.open_table(STORES).map_err(open)?,
            kv: txn.open_table(KV).map_err(open)?,
            garbage: txn.open_table(GARBAGE).map_err(open)?,
            meta,
            next_pid,
            total_keys,
            store_count,
            txn,
            wal: None,
        })
    }

    fn save_counters(&mut self) -> Result<(), Abort> {
        let w = st("write meta");
        self.meta
            .insert(META_NEXT_PARTITION, self.next_pid)
            .map_err(&w)?;
        self.meta
            .insert(META_TOTAL_KEYS, self.total_keys)
            .map_err(&w)?;
        self.meta
            .insert(META_STORE_COUNT, self.store_count)
            .map_err(&w)?;
        Ok(())
    }

    fn row(&self, store: &str) -> Result<Option<(u64, u64)>, Abort> {
        Ok(self
            .stores
            .get(store)
            .map_err(st("read store row"))?
            .map(|g| g.value()))
    }

    /// The store's row, or a fresh partition for a store with no keys.
    fn row_or_new(&mut self, store: &str) -> Result<(u64, u64, bool), Abort> {
        Ok(match self.row(store)? {
            Some((pid, count)) => (pid, count, false),
            None => {
                let pid = self.next_pid;
                self.next_pid += 1;
                (pid, 0, true)
            }
        })
    }

    /// Writes back a store's count after `added` keys were created and
    /// `removed` deleted; drops the row when the store is empty.
    fn update_row(
        &mut self,
        store: &str,
        pid: u64,
        old: u64,
        is_new: bool,
        added: u64,
        removed: u64,
    ) -> Result<(), Abort> {
        let new = (old + added).saturating_sub(removed);
        self.total_keys = (self.total_keys + added).saturating_sub(removed);
        if new == 0 {
            if !is_new {
                self.stores.remove(store).map_err(st("remove store row"))?;
                self.store_count = self.store_count.saturating_sub(1);
            }
        } else if new != old {
            self.stores
                .insert(store, (pid, new))
                .map_err(st("write store row"))?;
            if is_new {
                self.store_count += 1;
            }
        }
        Ok(())
    }

    /// Outer error: abort the group. Inner error: this op is rejected and
    /// changed nothing.
    fn apply(&mut self, op: &WriteOp) -> Result<EngineResult<Reply>, Abort> {
        let reply = |count| Ok(Ok(Reply { count }));
        match op {
            WriteOp::Set { store, key, value } => {
                let (pid, count, is_new) = self.row_or_new(store)?;
                let existed = self
                    .kv
                    .insert((pid, key.as_str()), value.as_ref())
                    .map_err(st("set"))?
                    .is_some();
                self.update_row(store, pid, count, is_new, u64::from(!existed), 0)?;
                reply(0)
            }
            WriteOp::Delete { store, key } => {
                let Some((pid, count)) = self.row(store)? else {
                    return reply(0);
                };
                let existed = self
                    .kv
                    .remove((pid, key.as_str()))
                    .map_err(st("delete"))?
                    .is_some();
                self.update_row(store, pid, count, false, 0, u64::from(existed))?;
                reply(u64::from(existed))
            }
            WriteOp::SetMany { store, frame } => {
                let entries = match drasi_store_protocol::decode_entries(frame, &UNLIMITED) {
                    Ok(e) => e,
                    Err(e) => return Ok(Err(EngineError::Malformed(e.to_string()))),
                };
                if entries.is_empty() {
                    return reply(0);
                }
                let (pid, count, is_new) = self.row_or_new(store)?;
                let mut added = 0;
                for (key, value) in entries {
                    let existed = self
                        .kv
                        .insert((pid, key), value)
                        .map_err(st("set_many"))?
                        .is_some();
                    added += u64::from(!existed);
                }
                self.update_row(store, pid, count, is_new, added, 0)?;
                reply(0)
            }
            WriteOp::DeleteMany { store, frame } => {
                let keys = match drasi_store_protocol::decode_keys(frame, &UNLIMITED) {
                    Ok(k) => k,
                    Err(e) => return Ok(Err(EngineError::Malformed(e.to_string()))),
                };
                let Some((pid, count)) = self.row(store)? else {
                    return reply(0);
                };
                let mut removed = 0;
                for key in keys {
                    let existed = self
                        .kv
                        .remove((pid, key))
                        .map_err(st("delete_many"))?
                        .is_some();
                    removed += u64::from(existed);
                }
                self.update_row(store, pid, count, false, 0, removed)?;
                reply(removed)
            }
            WriteOp::Clear { store } => {
                let Some((pid, count)) = self
                    .stores
                    .remove(store.as_str())
                    .map_err(st("clear_store"))?
                    .map(|g| g.value())
                else {
                    return reply(0);
                };
                self.garbage.insert(pid, ()).map_err(st("queue garbage"))?;
                self.total_keys = self.total_keys.saturating_sub(count);
                self.store_count = self.store_count.saturating_sub(1);
                reply(count)
            }
            WriteOp::Sync => reply(0),
            WriteOp::Wal(op) => {
                let wal = match &mut self.wal {
                    Some(wal) => wal,
                    None => self.wal.insert(WalTables::open(self.txn)?),
                };
                Ok(wal.apply(op)?.map(|count| Reply { count }))
            }
        }
    }
}

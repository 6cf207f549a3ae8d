//! The storage engine: one redb database holding every store partition.
//!
//! Reads open their own MVCC read transaction and never wait for writers.
//! Every write goes through the single group-commit writer thread
//! ([`writer`]), which acknowledges a write only after the commit that
//! contains it; [`tables`] applies the writes inside that commit.

mod batch_reads;
pub(crate) mod database;
mod gc;
pub mod import;
pub mod journal;
pub mod schema;
pub mod snapshot;
pub(crate) mod tables;
pub mod wal;
mod writer;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drasi_store_protocol::{EntriesFrame, KeysFrame};
use thiserror::Error;

use crate::config::DurabilityMode;
use crate::metrics::Metrics;
pub use batch_reads::BatchReads;
use database::{DbSlot, Reader};
use schema::{GARBAGE, KV, META, META_STORE_COUNT, META_TOTAL_KEYS, STORES};
pub(crate) use writer::{Reply, WriteOp};
use writer::{WriterHandle, WriterState};

#[derive(Debug, Clone, Error)]
pub enum EngineError {
    /// redb failed; the message names the operation, never a value.
    #[error("storage error during {op}: {detail}")]
    Storage { op: &'static str, detail: String },
    /// The writer is stopping or stopped: nothing was applied.
    #[error("the store is shutting down or its writer has stopped")]
    Unavailable,
    /// A write-ahead log refused the call; nothing was applied.
    #[error("{0}")]
    Wal(wal::WalRefusal),
    /// One event is larger than a `read_from` page may be, so no page can
    /// hold it and the log cannot be read past it with this setting.
    #[error(
        "event {sequence} of the write-ahead log of source '{source_id}' is {bytes} bytes; \
         a read_from answer holds at most {max} bytes (--max-response-bytes)"
    )]
    WalEventTooLarge {
        source_id: String,
        sequence: u64,
        bytes: usize,
        max: usize,
    },
    /// The database hit an I/O error (e.g. a full disk) and is being
    /// reopened: nothing was applied; retry later.
    #[error(
        "the database is being reopened after an I/O error (e.g. a full disk); nothing was applied"
    )]
    Recovering,
    /// The writer's queue is full: nothing was applied; retry later.
    /// A replicated store has no leader it can reach, or no majority
    /// confirmed a read: nothing was applied; retry later.
    #[error("replication: {detail}")]
    Replication { detail: String },
    /// A replicated write whose outcome is unknown: it was proposed (or
    /// forwarded) but not confirmed in time; it may still be applied.
    #[error("replication: {detail}")]
    Indeterminate { detail: String },
    /// Refused by a replicated store; nothing was applied.
    #[error("{what} is not supported yet")]
    NotReplicated { what: &'static str },
    #[error("the write queue is full ({capacity} requests); nothing was applied, retry later")]
    Busy { capacity: usize },
    /// A `get_many` answer would exceed `--max-response-bytes`.
    #[error(
        "the answer would hold more than {max} bytes of keys and values \
         (--max-response-bytes); ask for fewer keys at a time"
    )]
    AnswerTooLarge { max: usize },
}

/// `.ctx(op)` turns any redb error into [`EngineError::Storage`] naming the
/// operation that failed.
pub(crate) trait StorageContext<T> {
    fn ctx(self, op: &'static str) -> EngineResult<T>;
}

impl<T, E: std::fmt::Display> StorageContext<T> for Result<T, E> {
    fn ctx(self, op: &'static str) -> EngineResult<T> {
        self.map_err(|e| EngineError::Storage {
            op,
            detail: e.to_string(),
        })
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

/// What the health endpoints need to know about the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineHealth {
    /// The writer runs and its last commit succeeded.
    Healthy,
    /// The writer runs but its last commit (or durable flush) failed
    /// without wedging the database. The next successful commit clears it,
    /// so this only affects readiness.
    CommitFailing,
    /// An I/O error wedged the database and the writer is reopening it
    /// (with backoff) since less than the recovery timeout.
    Recovering,
    /// The database could not be reopened within the recovery timeout:
    /// a restart may succeed where reopening in place did not, and at the
    /// least makes the failure visible as restarts.
    RecoveryStuck,
    /// The writer was stopped by [`Engine::shutdown`].
    Stopped,
    /// The writer thread is gone without a shutdown (it panicked). Nothing
    /// restarts it: every write fails until the process restarts.
    WriterDead,
}

/// Engine settings, taken from [`crate::Config`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub path: PathBuf,
    pub durability: DurabilityMode,
    pub cache_bytes: usize,
    /// How long the database may stay closed after an I/O error before
    /// liveness fails.
    pub recovery_timeout: Duration,
    /// With `--durability immediate`: make groups durable through the
    /// commit journal (see [`journal`]) rather than a durable redb commit
    /// each.
    pub journal: bool,
}

/// Live counters kept in the `meta` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub keys: u64,
    pub stores: u64,
}

/// Shared state between the engine handle and the writer thread.
pub(crate) struct Health {
    /// False after a failed commit, until the next one succeeds.
    pub last_commit_ok: AtomicBool,
    /// Since when the database has been closed for reopening.
    pub recovering_since: Mutex<Option<Instant>>,
    pub recovery_timeout: Duration,
    /// GC steps that fail on purpose, so tests can check the retry.
    #[cfg(test)]
    pub inject_gc_failures: std::sync::atomic::AtomicU32,
    /// Journal appends that reach the disk but report a failure, as an
    /// fsync error after the write would.
    #[cfg(test)]
    pub inject_append_failures: std::sync::atomic::AtomicU32,
    /// Attempts to invalidate a failed record that fail.
    #[cfg(test)]
    pub inject_discard_failures: std::sync::atomic::AtomicU32,
}

impl Health {
    pub(crate) fn set_recovering(&self, since: Option<Instant>) {
        *self
            .recovering_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = since;
    }

    fn recovering_since(&self) -> Option<Instant> {
        *self
            .recovering_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Engine {
    db: Arc<DbSlot>,
    writer: WriterHandle,
    health: Arc<Health>,
    path: PathBuf,
    /// Set once on a replicated store: writes then go through Raft, and the
    /// writer thread only collects garbage and flushes.
    replica: std::sync::OnceLock<Arc<crate::replication::ReplicaNode>>,
}

impl Engine {
    /// Opens (or creates) the database and starts the writer thread.
    pub fn open(options: &EngineOptions, metrics: Arc<Metrics>) -> anyhow::Result<Engine> {
        let db = Arc::new(DbSlot::open(&options.path, options.cache_bytes)?);
        let journal = open_journal(options, &db, &metrics)?;
        let health = Arc::new(Health {
            last_commit_ok: AtomicBool::new(true),
            recovering_since: Mutex::new(None),
            recovery_timeout: options.recovery_timeout,
            #[cfg(test)]
            inject_gc_failures: Default::default(),
            #[cfg(test)]
            inject_append_failures: Default::default(),
            #[cfg(test)]
            inject_discard_failures: Default::default(),
        });
        let writer = writer::spawn(
            db.clone(),
            options.durability,
            health.clone(),
            metrics,
            journal,
        )?;
        Ok(Engine {
            db,
            writer,
            health,
            path: options.path.clone(),
            replica: std::sync::OnceLock::new(),
        })
    }

    /// The database, for the replication state machine.
    pub(crate) fn db_slot(&self) -> Arc<DbSlot> {
        self.db.clone()
    }

    /// Partitions were detached outside the writer (a replicated clear or
    /// snapshot install): let the writer's garbage collection run.
    pub(crate) fn collect_garbage(&self) {
        self.writer.collect_garbage();
    }

    /// From now on writes go through `node` (Raft) instead of the local
    /// writer. Set once, before the server serves.
    pub fn set_replica(&self, node: Arc<crate::replication::ReplicaNode>) {
        if self.replica.set(node).is_err() {
            tracing::error!("replication was already set up for this engine");
        }
    }

    pub fn replica(&self) -> Option<&Arc<crate::replication::ReplicaNode>> {
        self.replica.get()
    }

    /// On a replicated store, returns once this node has applied everything
    /// committed before the call, so a read that follows is linearizable.
    /// A single node is always up to date.
    pub async fn read_barrier(&self) -> EngineResult<()> {
        match self.replica.get() {
            Some(node) => node.read_barrier().await,
            None => Ok(()),
        }
    }

    pub fn health(&self) -> EngineHealth {
        match self.writer.state() {
            WriterState::Dead => EngineHealth::WriterDead,
            WriterState::Stopped => EngineHealth::Stopped,
            WriterState::Running => match self.health.recovering_since() {
                Some(since) if since.elapsed() > self.health.recovery_timeout => {
                    EngineHealth::RecoveryStuck
                }
                Some(_) => EngineHealth::Recovering,
                None if !self.health.last_commit_ok.load(Ordering::Relaxed) => {
                    EngineHealth::CommitFailing
                }
                None => EngineHealth::Healthy,
            },
        }
    }

    /// Kills the writer thread the way a panic inside redb would.
    #[cfg(test)]
    pub(crate) fn crash_writer(&self) {
        self.writer.crash();
    }

    /// Marks the last commit as failed, as a commit error does, without
    /// needing a broken disk.
    #[cfg(test)]
    pub(crate) fn mark_commit_failed(&self) {
        self.health.last_commit_ok.store(false, Ordering::Relaxed);
    }

    /// Size of the database file, for the `database_file_bytes` gauge.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    fn read_txn(&self, op: &'static str) -> EngineResult<Reader> {
        self.db.begin_read(op)
    }

    /// Blocks the writer until the returned sender is dropped.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> std::sync::mpsc::Sender<()> {
        self.writer.hold()
    }

    /// Makes the next `n` GC steps fail, as a storage error would.
    #[cfg(test)]
    pub(crate) fn inject_gc_failures(&self, n: u32) {
        self.health.inject_gc_failures.store(n, Ordering::Relaxed);
    }

    /// Makes the next `appends` journal appends fail after their record
    /// reached the disk, and the next `discards` attempts to invalidate
    /// such a record fail.
    #[cfg(test)]
    pub(crate) fn inject_journal_failures(&self, appends: u32, discards: u32) {
        self.health
            .inject_append_failures
            .store(appends, Ordering::Relaxed);
        self.health
            .inject_discard_failures
            .store(discards, Ordering::Relaxed);
    }

    /// Partition id and key count of a live store.
    fn store_row(txn: &Reader, op: &'static str, store: &str) -> EngineResult<Option<(u64, u64)>> {
        let stores = txn.open_table(STORES).ctx(op)?;
        let row = stores.get(store).ctx(op)?;
        Ok(row.map(|g| g.value()))
    }

    /// Looks one key up in a live store and applies `read` to its value in
    /// place (no copy unless `read` makes one); `op` names the caller in
    /// storage errors.
    fn lookup<T>(
        &self,
        op: &'static str,
        store: &str,
        key: &str,
        read: impl FnOnce(&[u8]) -> T,
    ) -> EngineResult<Option<T>> {
        let txn = self.read_txn(op)?;
        let Some((pid, _)) = Self::store_row(&txn, op, store)? else {
            return Ok(None);
        };
        let kv = txn.open_table(KV).ctx(op)?;
        let value = kv.get((pid, key)).ctx(op)?;
        Ok(value.map(|g| read(g.value())))
    }

    pub fn get(&self, store: &str, key: &str) -> EngineResult<Option<Vec<u8>>> {
        self.get_admitted(store, key, |_| Ok::<(), EngineError>(()))
    }

    /// `get`, asking `admit` for room for the value before copying it out
    /// of redb's page: the HTTP layer charges answers to its memory budget.
    pub fn get_admitted<E: From<EngineError>>(
        &self,
        store: &str,
        key: &str,
        admit: impl FnOnce(usize) -> Result<(), E>,
    ) -> Result<Option<Vec<u8>>, E> {
        self.lookup("get", store, key, |v| admit(v.len()).map(|()| v.to_vec()))?
            .transpose()
    }

    /// Reads for one batch request, all from one snapshot.
    pub fn batch_reads<'a>(&self) -> BatchReads<'_, 'a> {
        BatchReads::new(self)
    }

    pub fn contains_key(&self, store: &str, key: &str) -> EngineResult<bool> {
        Ok(self.lookup("contains_key", store, key, |_| ())?.is_some())
    }

    /// Present keys with their values, each key once, in request order;
    /// absent keys are omitted (as `get_many` does in the trait).
    pub fn get_many<'k>(
        &self,
        store: &str,
        keys: &[&'k str],
    ) -> EngineResult<Vec<(&'k str, Vec<u8>)>> {
        const OP: &str = "get_many";
        let txn = self.read_txn(OP)?;
        let Some((pid, _)) = Self::store_row(&txn, OP, store)? else {
            return Ok(Vec::new());
        };
        let kv = txn.open_table(KV).ctx(OP)?;
        let mut seen = HashSet::with_capacity(keys.len());
        let mut out = Vec::with_capacity(keys.len());
        for &key in keys {
            if !seen.insert(key) {
                continue;
            }
            if let Some(v) = kv.get((pid, key)).ctx(OP)? {
                out.push((key, v.value().to_vec()));
            }
        }
        Ok(out)
    }

    /// `get_many`, encoded as the entries frame of the answer. Values are
    /// copied once, straight from redb's pages into the frame, and only
    /// after the answer is known to fit in `max_answer_bytes` and `admit`
    /// granted room for every entry.
    pub fn get_many_frame<E: From<EngineError>>(
        &self,
        store: &str,
        keys: &[&str],
        max_answer_bytes: usize,
        mut admit: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        const OP: &str = "get_many";
        let txn = self.read_txn(OP)?;
        let Some((pid, _)) = Self::store_row(&txn, OP, store)? else {
            return Ok(drasi_store_protocol::encode_entries(std::iter::empty()));
        };
        let kv = txn.open_table(KV).ctx(OP)?;
        let mut seen = HashSet::with_capacity(keys.len());
        let mut found = Vec::with_capacity(keys.len());
        let mut bytes = 0usize;
        for &key in keys {
            if !seen.insert(key) {
                continue;
            }
            if let Some(v) = kv.get((pid, key)).ctx(OP)? {
                // Frame overhead: two u32 lengths per entry.
                let entry = key.len() + v.value().len() + 8;
                bytes += entry;
                if bytes > max_answer_bytes {
                    return Err(EngineError::AnswerTooLarge {
                        max: max_answer_bytes,
                    }
                    .into());
                }
                // Asked value by value: a refused answer stops before it
                // has loaded more than one value beyond its room.
                admit(entry)?;
                found.push((key, v));
            }
        }
        Ok(drasi_store_protocol::encode_entries(
            found.iter().map(|(k, v)| (*k, v.value())),
        ))
    }

    /// Every key of a store, in key order. Scans the partition: callers run
    /// it off the async executor.
    pub fn list_keys(&self, store: &str) -> EngineResult<Vec<String>> {
        self.list_keys_admitted(store, usize::MAX, |_| Ok::<(), EngineError>(()))
    }

    /// `list_keys`, refused once the keys pass `max_answer_bytes` (counted
    /// as JSON strings), asking `admit` for room before keeping each key.
    pub fn list_keys_admitted<E: From<EngineError>>(
        &self,
        store: &str,
        max_answer_bytes: usize,
        mut admit: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<String>, E> {
        const OP: &str = "list_keys";
        let txn = self.read_txn(OP)?;
        let Some((pid, count)) = Self::store_row(&txn, OP, store)? else {
            return Ok(Vec::new());
        };
        let kv = txn.open_table(KV).ctx(OP)?;
        let mut keys = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1024));
        let mut bytes = 0usize;
        for item in kv.range(schema::partition_range(pid)).ctx(OP)? {
            let (k, _) = item.ctx(OP)?;
            let key = k.value().1;
            // Quotes and a comma; escapes are rare enough to ignore.
            bytes += key.len() + 3;
            if bytes > max_answer_bytes {
                return Err(EngineError::AnswerTooLarge {
                    max: max_answer_bytes,
                }
                .into());
            }
            admit(key.len() + std::mem::size_of::<String>())?;
            keys.push(key.to_string());
        }
        Ok(keys)
    }

    /// `(store_exists, key_count)` from one row.
    pub fn store_info(&self, store: &str) -> EngineResult<(bool, u64)> {
        const OP: &str = "store_info";
        let txn = self.read_txn(OP)?;
        Ok(match Self::store_row(&txn, OP, store)? {
            Some((_, count)) => (count > 0, count),
            None => (false, 0),
        })
    }

    /// Live keys and stores, from the `meta` counters.
    pub fn totals(&self) -> EngineResult<Totals> {
        const OP: &str = "totals";
        let txn = self.read_txn(OP)?;
        let meta = txn.open_table(META).ctx(OP)?;
        let read = |name: &str| -> EngineResult<u64> {
            Ok(meta.get(name).ctx(OP)?.map_or(0, |g| g.value()))
        };
        Ok(Totals {
            keys: read(META_TOTAL_KEYS)?,
            stores: read(META_STORE_COUNT)?,
        })
    }

    /// Partitions detached by `clear_store` that the GC has not finished.
    pub fn pending_garbage(&self) -> EngineResult<u64> {
        const OP: &str = "pending_garbage";
        use redb::ReadableTableMetadata as _;
        let txn = self.read_txn(OP)?;
        let garbage = txn.open_table(GARBAGE).ctx(OP)?;
        garbage.len().ctx(OP)
    }

    /// Sends one write to the group-commit writer and waits for the commit.
    async fn write(&self, op: WriteOp) -> EngineResult<Reply> {
        match self.replica.get() {
            Some(node) => node
                .write(vec![op])
                .await
                .pop()
                .unwrap_or(Err(EngineError::Unavailable)),
            None => self.writer.write(op).await,
        }
    }

    /// Sends several independent writes to the writer together, so they
    /// share one commit, and waits for each; every write gets its own
    /// result, in order.
    pub(crate) async fn write_many(&self, ops: Vec<WriteOp>) -> Vec<EngineResult<Reply>> {
        match self.replica.get() {
            Some(node) => node.write(ops).await,
            None => self.writer.write_many(ops).await,
        }
    }

    pub async fn set(&self, store: &str, key: &str, value: Bytes) -> EngineResult<()> {
        self.write(WriteOp::Set {
            store: store.into(),
            key: key.into(),
            value,
        })
        .await
        .map(drop)
    }

    pub async fn delete(&self, store: &str, key: &str) -> EngineResult<bool> {
        let out = self
            .write(WriteOp::Delete {
                store: store.into(),
                key: key.into(),
            })
            .await?;
        Ok(out.count > 0)
    }

    /// `entries` were decoded and checked against the limits by the caller;
    /// they are applied atomically.
    pub async fn set_many(&self, store: &str, entries: EntriesFrame) -> EngineResult<()> {
        self.write(WriteOp::SetMany {
            store: store.into(),
            entries,
        })
        .await
        .map(drop)
    }

    /// `keys` were decoded and checked against the limits by the caller;
    /// they are deleted atomically. Answers how many existed.
    pub async fn delete_many(&self, store: &str, keys: KeysFrame) -> EngineResult<u64> {
        let out = self
            .write(WriteOp::DeleteMany {
                store: store.into(),
                keys,
            })
            .await?;
        Ok(out.count)
    }

    /// Detaches the partition in O(1) and returns how many keys it held;
    /// the entries are deleted in the background.
    pub async fn clear_store(&self, store: &str) -> EngineResult<u64> {
        let out = self
            .write(WriteOp::Clear {
                store: store.into(),
            })
            .await?;
        Ok(out.count)
    }

    /// Head, oldest and count of a source's write-ahead log.
    pub fn wal_info(&self, source: &str) -> EngineResult<drasi_store_protocol::wal::WalInfo> {
        wal::info(&*self.read_txn("wal info")?, source)
    }

    /// One page of a source's `read_from`, encoded (see
    /// [`wal::read_page`]). Scans up to a page of events: callers run it
    /// off the async executor.
    pub fn wal_read_page<E: From<EngineError>>(
        &self,
        source: &str,
        from: u64,
        max_answer_bytes: usize,
        admit: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        let txn = self.read_txn("wal read_from")?;
        wal::read_page(&txn, source, from, max_answer_bytes, admit)
    }

    /// A write-ahead log write through the group-commit writer; the reply
    /// is the op's count (see [`wal::WalOp`]).
    pub async fn wal_write(&self, op: wal::WalOp) -> EngineResult<u64> {
        let source = op.source().to_string();
        let reply = self.write(WriteOp::Wal(op)).await?;
        match reply.refusal {
            None => Ok(reply.count),
            Some(refusal) => Err(EngineError::Wal(refusal.for_source(source))),
        }
    }

    /// Returns once everything acknowledged so far is durable.
    pub async fn sync(&self) -> EngineResult<()> {
        match self.replica.get() {
            // Acknowledged writes are already durable on a majority; sync
            // is a barrier behind everything committed so far.
            Some(node) => node.read_barrier().await,
            None => self.write(WriteOp::Sync).await.map(drop),
        }
    }

    /// Stops the writer after it has committed everything queued, with a
    /// final durable commit. Later writes fail with `Unavailable`.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.writer.shutdown().await
    }
}

/// Opens the commit journal when it is in use, and replays what an earlier
/// run left in it either way: a journal from a run with other settings
/// still holds acknowledged writes. One that is not in use is removed
/// after its replay.
fn open_journal(
    options: &EngineOptions,
    db: &DbSlot,
    metrics: &Metrics,
) -> anyhow::Result<Option<journal::Journal>> {
    use anyhow::Context as _;
    let path = options.path.with_file_name(journal::JOURNAL_NAME);
    let wanted = options.journal && options.durability == DurabilityMode::Immediate;
    if !wanted && !path.exists() {
        return Ok(None);
    }
    let mut journal = journal::Journal::open(&path)
        .with_context(|| format!("opening the commit journal {}", path.display()))?;
    let replayed = journal
        .recover(&*db.get()?)
        .with_context(|| format!("replaying the commit journal {}", path.display()))?;
    metrics.journal_replayed_records.inc_by(replayed);
    if replayed > 0 {
        tracing::info!(records = replayed, path = %path.display(), "replayed the commit journal");
    }
    if wanted {
        return Ok(Some(journal));
    }
    drop(journal);
    std::fs::remove_file(&path)
        .with_context(|| format!("removing the unused commit journal {}", path.display()))?;
    Ok(None)
}

#[cfg(test)]
mod tests;

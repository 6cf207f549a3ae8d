//! The Raft log, the vote and the committed log id, in their own redb file
//! (`raft-log.redb` beside the data file).
//!
//! A separate file because redb allows one write transaction at a time per
//! database: log appends sit on the quorum path and must not queue behind
//! the state machine's apply transactions (openraft runs both at once), and
//! replacing the data file on restore or snapshot install must never touch
//! the vote. docs/replication.md ("Where the log lives") has the reasoning.
//!
//! Every write commits with `Durability::Immediate`, and `append` reports
//! the entries flushed only after that commit: a node that acknowledges an
//! entry to the leader holds it on disk.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The log file's name inside the data directory.
pub const LOG_FILE_NAME: &str = "raft-log.redb";

/// index -> JSON of the entry. Contiguous from the first kept index to the
/// last; everything at or below `last_purged` is gone.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// The `META_*` keys -> JSON of their value.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The vote this node last granted or holds; it must survive restarts, or
/// the node could vote twice in one term.
const META_VOTE: &str = "vote";
/// The last log id known committed, so a restart re-applies up to it at once.
const META_COMMITTED: &str = "committed";
/// The id of the last purged entry: `get_log_state` must report it even
/// when purging emptied the log.
const META_LAST_PURGED: &str = "last_purged";
/// Layout version of this file, checked at open.
const META_FORMAT: &str = "format";
const FORMAT: u64 = 1;

/// The redb-backed Raft log of one node.
///
/// Cheap to clone: clones share the database, which is how openraft's
/// separate log reader ([`RaftLogStorage::get_log_reader`]) is served.
/// Generic over the type configuration so the storage test suite can run
/// it with its own entries; the server uses [`super::TypeConfig`].
pub struct LogStore<C: RaftTypeConfig = super::TypeConfig> {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    /// The last committed log id, as last saved: openraft 0.9's metrics
    /// carry no commit index, and `/v1/cluster` reports this one.
    committed: Arc<Mutex<Option<LogId<C::NodeId>>>>,
    _types: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            path: self.path.clone(),
            committed: self.committed.clone(),
            _types: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .finish()
    }
}

type StorageResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens (or creates) the log file at `path`. Refuses a file written
    /// in another layout version instead of misreading it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let db = Database::create(path)
            .with_context(|| format!("opening the Raft log {}", path.display()))?;
        let txn = db
            .begin_write()
            .with_context(|| format!("initialising the Raft log {}", path.display()))?;
        {
            txn.open_table(LOG)
                .with_context(|| format!("creating the log table in {}", path.display()))?;
            let mut meta = txn
                .open_table(META)
                .with_context(|| format!("creating the meta table in {}", path.display()))?;
            let found = meta
                .get(META_FORMAT)
                .with_context(|| format!("reading the format of {}", path.display()))?
                .map(|v| serde_json::from_slice::<u64>(v.value()));
            match found {
                None => {
                    let format = serde_json::to_vec(&FORMAT)?;
                    meta.insert(META_FORMAT, format.as_slice())
                        .with_context(|| format!("writing the format of {}", path.display()))?;
                }
                Some(Ok(FORMAT)) => {}
                Some(Ok(other)) => anyhow::bail!(
                    "the Raft log {} has format {other}, this server reads format {FORMAT}",
                    path.display()
                ),
                Some(Err(e)) => anyhow::bail!(
                    "the Raft log {} has an unreadable format marker: {e}",
                    path.display()
                ),
            }
        }
        txn.commit()
            .with_context(|| format!("initialising the Raft log {}", path.display()))?;
        let committed = {
            let txn = db
                .begin_read()
                .with_context(|| format!("reading the Raft log {}", path.display()))?;
            let meta = txn
                .open_table(META)
                .with_context(|| format!("reading the meta table of {}", path.display()))?;
            match meta
                .get(META_COMMITTED)
                .with_context(|| format!("reading the committed log id of {}", path.display()))?
            {
                Some(v) => serde_json::from_slice::<Option<LogId<C::NodeId>>>(v.value())
                    .with_context(|| {
                        format!("decoding the committed log id of {}", path.display())
                    })?,
                None => None,
            }
        };
        Ok(LogStore {
            db: Arc::new(db),
            path: Arc::new(path.to_owned()),
            committed: Arc::new(Mutex::new(committed)),
            _types: PhantomData,
        })
    }

    /// The last committed log id this node has saved (it may know of a
    /// later one that openraft has not saved yet), for `/v1/cluster`.
    pub fn committed(&self) -> Option<LogId<C::NodeId>> {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs blocking redb work (reads, and fsyncing commits) off the async
    /// worker threads, so a slow disk stalls only this call.
    async fn blocking<T, F>(
        &self,
        subject: ErrorSubject<C::NodeId>,
        verb: ErrorVerb,
        work: F,
    ) -> StorageResult<T, C>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, AnyError> + Send + 'static,
    {
        let db = self.db.clone();
        let path = self.path.clone();
        let outcome = tokio::task::spawn_blocking(move || work(&db)).await;
        let result = match outcome {
            Ok(result) => result,
            Err(join) => Err(AnyError::error(format!("the storage task failed: {join}"))),
        };
        result.map_err(|e| {
            let e = e.add_context(|| format!("Raft log {}", path.display()));
            StorageIOError::new(subject, verb, e).into()
        })
    }

    async fn read_meta<T>(
        &self,
        key: &'static str,
        subject: ErrorSubject<C::NodeId>,
    ) -> StorageResult<Option<T>, C>
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.blocking(subject, ErrorVerb::Read, move |db| {
            let txn = db.begin_read().map_err(any)?;
            let meta = txn.open_table(META).map_err(any)?;
            match meta.get(key).map_err(any)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map(Some)
                    .map_err(|e| AnyError::new(&e).add_context(|| format!("decoding '{key}'"))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn write_meta<T>(
        &self,
        key: &'static str,
        value: &T,
        subject: ErrorSubject<C::NodeId>,
    ) -> StorageResult<(), C>
    where
        T: Serialize + ?Sized,
    {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            StorageIOError::new(subject.clone(), ErrorVerb::Write, AnyError::new(&e))
        })?;
        self.blocking(subject, ErrorVerb::Write, move |db| {
            let txn = begin_durable(db)?;
            {
                let mut meta = txn.open_table(META).map_err(any)?;
                meta.insert(key, bytes.as_slice()).map_err(any)?;
            }
            txn.commit().map_err(any)
        })
        .await
    }
}

/// A write transaction that is on disk when `commit` returns.
fn begin_durable(db: &Database) -> Result<redb::WriteTransaction, AnyError> {
    let mut txn = db.begin_write().map_err(any)?;
    txn.set_durability(Durability::Immediate).map_err(any)?;
    Ok(txn)
}

fn any<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

/// Decodes a stored entry and checks it sits at its own index: a mismatch
/// means the file is damaged, and serving it would corrupt the cluster.
fn decode_entry<C>(index: u64, bytes: &[u8]) -> Result<C::Entry, AnyError>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    let entry: C::Entry = serde_json::from_slice(bytes)
        .map_err(|e| AnyError::new(&e).add_context(|| format!("decoding log entry {index}")))?;
    let stored_at = entry.get_log_id().index;
    if stored_at != index {
        return Err(AnyError::error(format!(
            "log entry under index {index} claims index {stored_at}: the log file is damaged"
        )));
    }
    Ok(entry)
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<C::Entry>, C> {
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking(ErrorSubject::Logs, ErrorVerb::Read, move |db| {
            let txn = db.begin_read().map_err(any)?;
            let log = txn.open_table(LOG).map_err(any)?;
            let mut entries = Vec::new();
            for row in log.range::<u64>(bounds).map_err(any)? {
                let (index, bytes) = row.map_err(any)?;
                entries.push(decode_entry::<C>(index.value(), bytes.value())?);
            }
            Ok(entries)
        })
        .await
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<C>, C> {
        self.blocking(ErrorSubject::Logs, ErrorVerb::Read, |db| {
            let txn = db.begin_read().map_err(any)?;
            let log = txn.open_table(LOG).map_err(any)?;
            let last = match log.last().map_err(any)? {
                Some((index, bytes)) => Some(
                    decode_entry::<C>(index.value(), bytes.value())?
                        .get_log_id()
                        .clone(),
                ),
                None => None,
            };
            let meta = txn.open_table(META).map_err(any)?;
            let last_purged_log_id: Option<LogId<C::NodeId>> =
                match meta.get(META_LAST_PURGED).map_err(any)? {
                    Some(v) => Some(serde_json::from_slice(v.value()).map_err(|e| {
                        AnyError::new(&e).add_context(|| format!("decoding '{META_LAST_PURGED}'"))
                    })?),
                    None => None,
                };
            Ok(LogState {
                last_log_id: last.or_else(|| last_purged_log_id.clone()),
                last_purged_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> StorageResult<(), C> {
        self.write_meta(META_VOTE, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<C::NodeId>>, C> {
        self.read_meta(META_VOTE, ErrorSubject::Vote).await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> StorageResult<(), C> {
        self.write_meta(META_COMMITTED, &committed, ErrorSubject::Store)
            .await?;
        // After the write: never report a commit the disk does not hold.
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<C::NodeId>>, C> {
        Ok(self
            .read_meta::<Option<LogId<C::NodeId>>>(META_COMMITTED, ErrorSubject::Store)
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> StorageResult<(), C>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encoded before the blocking task: entries need not be `'static`
        // movable across threads, bytes are.
        let mut rows = Vec::new();
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes = serde_json::to_vec(&entry).map_err(|e| {
                StorageIOError::write_log_entry(entry.get_log_id().clone(), AnyError::new(&e))
            })?;
            rows.push((index, bytes));
        }
        self.blocking(ErrorSubject::Logs, ErrorVerb::Write, move |db| {
            let txn = begin_durable(db)?;
            {
                let mut log = txn.open_table(LOG).map_err(any)?;
                for (index, bytes) in &rows {
                    log.insert(*index, bytes.as_slice()).map_err(any)?;
                }
            }
            txn.commit().map_err(any)
        })
        .await?;
        // Only now is the group on disk, so only now may the leader count
        // this node towards the quorum for it.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> StorageResult<(), C> {
        // Conflicting entries from `log_id.index` on are replaced by the
        // leader's; removing them durably first keeps a crash in between
        // from resurrecting them.
        let from = log_id.index;
        self.blocking(ErrorSubject::Logs, ErrorVerb::Delete, move |db| {
            let txn = begin_durable(db)?;
            {
                let mut log = txn.open_table(LOG).map_err(any)?;
                log.retain_in::<u64, _>(from.., |_, _| false).map_err(any)?;
            }
            txn.commit().map_err(any)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> StorageResult<(), C> {
        let marker = serde_json::to_vec(&log_id).map_err(|e| {
            StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, AnyError::new(&e))
        })?;
        // The marker and the deletion commit together, so the log state
        // never shows a gap without the purge that explains it.
        let upto = log_id.index;
        self.blocking(ErrorSubject::Logs, ErrorVerb::Delete, move |db| {
            let txn = begin_durable(db)?;
            {
                let mut meta = txn.open_table(META).map_err(any)?;
                meta.insert(META_LAST_PURGED, marker.as_slice())
                    .map_err(any)?;
                let mut log = txn.open_table(LOG).map_err(any)?;
                log.retain_in::<u64, _>(..=upto, |_, _| false)
                    .map_err(any)?;
            }
            txn.commit().map_err(any)
        })
        .await
    }
}

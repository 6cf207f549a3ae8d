//! The state machine: the engine's own database, one log entry applied per
//! redb write transaction group, with the applied log id and membership
//! written in the same transaction as the data they describe (the
//! `raft_state` table), so a restart never applies an entry twice or skips
//! one. Snapshots are the backup snapshot stream of the whole database,
//! kept as a file in the data directory. docs/replication.md has the
//! reasoning.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use drasi_store_protocol::snapshot::{SnapshotHeader, SnapshotReader};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, Durability};
use serde::de::DeserializeOwned;

use super::{GroupResult, NodeId, TypeConfig};
use crate::engine::database::DbSlot;
use crate::engine::schema::RAFT_STATE;
use crate::engine::snapshot::{SnapshotSource, build_database};
use crate::engine::tables::Tables;
use crate::engine::wal::Refusal;
use crate::engine::{Reply, WriteOp, journal};

/// `raft_state` rows: JSON of the last applied log id and membership.
const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";

/// The current snapshot (the stream) and its metadata (JSON), in the data
/// directory. The metadata is written after the stream, so a metadata file
/// always describes a complete stream.
const SNAPSHOT_FILE: &str = "raft-snapshot.bin";
const SNAPSHOT_META_FILE: &str = "raft-snapshot.json";
/// A snapshot being received from the leader.
const RECEIVING_FILE: &str = "raft-snapshot.receiving";
/// A snapshot being built locally.
const BUILDING_FILE: &str = "raft-snapshot.building";
/// The data file built from a received snapshot, before it replaces the
/// live one.
const INSTALLING_FILE: &str = "state.redb.installing";

/// Page cache of the database built from a received snapshot.
const INSTALL_CACHE_BYTES: usize = 16 * 1024 * 1024;

type Applied = (Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>);
type SmResult<T> = Result<T, StorageError<NodeId>>;

/// The engine's database as openraft's state machine.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DbSlot>,
    dir: Arc<PathBuf>,
    /// Called after an apply or install that detached partitions, so the
    /// engine's writer collects them (garbage collection is local
    /// housekeeping, not replicated).
    garbage: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl StateMachine {
    /// `db` is the engine's database; snapshots live in `db`'s directory.
    pub(crate) fn new(db: Arc<DbSlot>) -> Self {
        let dir = db
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        StateMachine {
            db,
            dir: Arc::new(dir),
            garbage: None,
        }
    }

    /// Calls `hint` whenever applied entries (or an installed snapshot)
    /// may have left garbage to collect.
    pub(crate) fn on_garbage(mut self, hint: impl Fn() + Send + Sync + 'static) -> Self {
        self.garbage = Some(Arc::new(hint));
        self
    }

    fn hint_garbage(&self) {
        if let Some(hint) = &self.garbage {
            hint();
        }
    }

    /// Runs `f` on a blocking thread; its error becomes a storage error
    /// about `subject`.
    async fn blocking<T, F>(
        &self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
        f: F,
    ) -> SmResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&StateMachine) -> anyhow::Result<T> + Send + 'static,
    {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|join| anyhow::anyhow!("the state machine task failed: {join}"))
            .and_then(|r| r);
        result.map_err(|e| {
            StorageIOError::new(subject, verb, AnyError::error(format!("{e:#}"))).into()
        })
    }

    fn snapshot_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Applies `entries` in one durable transaction and answers each.
    fn apply_blocking(&self, entries: Vec<Entry<TypeConfig>>) -> anyhow::Result<Vec<GroupResult>> {
        let db = self.db.get()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut results = Vec::with_capacity(entries.len());
        let mut applied = None;
        let mut membership = None;
        let mut detached = false;
        {
            let mut tables = Tables::open(&txn)?;
            for entry in entries {
                applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(GroupResult::default()),
                    EntryPayload::Normal(payload) => {
                        let ops = journal::decode(Bytes::from(payload.group)).map_err(|e| {
                            anyhow::anyhow!("log entry {} cannot be decoded: {e}", entry.log_id)
                        })?;
                        detached |= ops.iter().any(|op| matches!(op, WriteOp::Clear { .. }));
                        let replies = ops
                            .iter()
                            .map(|op| tables.apply(op))
                            .collect::<Result<Vec<_>, _>>()?;
                        results.push(GroupResult {
                            replies: encode_replies(&replies),
                        });
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        results.push(GroupResult::default());
                    }
                }
            }
            tables.save_counters()?;
        }
        {
            let mut raft = txn.open_table(RAFT_STATE)?;
            if let Some(applied) = applied {
                raft.insert(APPLIED, serde_json::to_vec(&applied)?.as_slice())?;
            }
            if let Some(membership) = membership {
                raft.insert(MEMBERSHIP, serde_json::to_vec(&membership)?.as_slice())?;
            }
        }
        txn.commit()?;
        if detached {
            self.hint_garbage();
        }
        Ok(results)
    }

    /// Builds the current snapshot from one read transaction, so the data
    /// and the applied log id in it match exactly.
    fn build_blocking(&self) -> anyhow::Result<SnapshotMeta<NodeId, BasicNode>> {
        let reader = self.db.begin_read("raft snapshot")?;
        let (applied, membership) = read_applied(&reader)?;
        let id = applied.map_or_else(|| "empty".to_string(), |log_id| log_id.to_string());
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: id,
        };
        let header = SnapshotHeader {
            created_at_unix_ms: None,
            server_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            selected_stores: Vec::new(),
            last_applied_index: applied.map(|l| l.index),
        };
        let building = self.snapshot_path(BUILDING_FILE);
        let out = BufWriter::new(File::create(&building)?);
        let (_, out) = SnapshotSource::new(reader, header).write_to(out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.make_current(&building, &meta)?;
        Ok(meta)
    }

    /// Makes the complete stream at `stream` the current snapshot.
    fn make_current(
        &self,
        stream: &Path,
        meta: &SnapshotMeta<NodeId, BasicNode>,
    ) -> anyhow::Result<()> {
        std::fs::rename(stream, self.snapshot_path(SNAPSHOT_FILE))?;
        let meta_tmp = self.snapshot_path("raft-snapshot.json.tmp");
        let mut f = File::create(&meta_tmp)?;
        f.write_all(&serde_json::to_vec(meta)?)?;
        f.sync_all()?;
        std::fs::rename(&meta_tmp, self.snapshot_path(SNAPSHOT_META_FILE))?;
        File::open(&*self.dir)?.sync_all()?;
        Ok(())
    }

    fn current_blocking(&self) -> anyhow::Result<Option<(SnapshotMeta<NodeId, BasicNode>, File)>> {
        let meta_path = self.snapshot_path(SNAPSHOT_META_FILE);
        let bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = serde_json::from_slice(&bytes)?;
        let file = File::open(self.snapshot_path(SNAPSHOT_FILE))?;
        Ok(Some((meta, file)))
    }

    /// Replaces the live database with one built from the received stream,
    /// then keeps the stream as the current snapshot.
    fn install_blocking(
        &self,
        meta: SnapshotMeta<NodeId, BasicNode>,
        mut stream: File,
    ) -> anyhow::Result<()> {
        stream.seek(SeekFrom::Start(0))?;
        let installing = self.snapshot_path(INSTALLING_FILE);
        let _ = std::fs::remove_file(&installing);
        let built = (|| -> anyhow::Result<()> {
            let reader = SnapshotReader::new(BufReader::new(&stream))?;
            build_database(&installing, reader, INSTALL_CACHE_BYTES)?;
            let db = Database::create(&installing)?;
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut raft = txn.open_table(RAFT_STATE)?;
                if let Some(applied) = meta.last_log_id {
                    raft.insert(APPLIED, serde_json::to_vec(&applied)?.as_slice())?;
                }
                raft.insert(
                    MEMBERSHIP,
                    serde_json::to_vec(&meta.last_membership)?.as_slice(),
                )?;
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_file(&installing);
            return Err(e.context("building the database from the leader's snapshot"));
        }
        // Readers holding the old database finish on it; the writer waits.
        self.db.close();
        let swapped = std::fs::rename(&installing, self.db.path())
            .and_then(|()| File::open(&*self.dir)?.sync_all());
        let reopened = self.db.reopen(|_| Ok(()));
        swapped?;
        reopened?;
        // The installed stream becomes the current snapshot, whichever
        // file openraft handed over.
        let building = self.snapshot_path(BUILDING_FILE);
        let mut copy = File::create(&building)?;
        stream.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut stream, &mut copy)?;
        copy.sync_all()?;
        self.make_current(&building, &meta)?;
        let _ = std::fs::remove_file(self.snapshot_path(RECEIVING_FILE));
        tracing::info!(
            snapshot = %meta.snapshot_id,
            "installed a snapshot received from the leader"
        );
        self.hint_garbage();
        Ok(())
    }
}

fn read_json<T: DeserializeOwned>(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> anyhow::Result<Option<T>> {
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// Whether the database holds data no Raft entry put there: the data
/// directory of a single-node server (stores or write-ahead logs, and no
/// applied log id). A node that started replicating on top of it would hold
/// other data than its peers forever.
pub(crate) fn holds_unreplicated_data(db: &DbSlot) -> anyhow::Result<bool> {
    use redb::ReadableTableMetadata as _;
    // Every table exists: the database is created with all of them.
    let txn = db.begin_read("checking for data of a single-node server")?;
    if read_applied(&txn)?.0.is_some() {
        return Ok(false);
    }
    let stores = txn.open_table(crate::engine::schema::STORES)?.len()?;
    let wal_logs = txn.open_table(crate::engine::wal::WAL_LOGS)?.len()?;
    Ok(stores > 0 || wal_logs > 0)
}

fn read_applied(txn: &redb::ReadTransaction) -> anyhow::Result<Applied> {
    let raft = txn.open_table(RAFT_STATE)?;
    Ok((
        read_json(&raft, APPLIED)?,
        read_json(&raft, MEMBERSHIP)?.unwrap_or_default(),
    ))
}

/// Per reply: the count (u64, little-endian) and the refusal (0 none,
/// 1 not registered, 2 capacity exhausted).
pub(crate) fn encode_replies(replies: &[Reply]) -> Vec<u8> {
    let mut out = Vec::with_capacity(replies.len() * 9);
    for reply in replies {
        out.extend_from_slice(&reply.count.to_le_bytes());
        out.push(match reply.refusal {
            None => 0,
            Some(Refusal::NotRegistered) => 1,
            Some(Refusal::CapacityExhausted) => 2,
        });
    }
    out
}

/// The inverse of [`encode_replies`], for the leader's writer answering
/// each request of a group.
pub(crate) fn decode_replies(bytes: &[u8]) -> anyhow::Result<Vec<Reply>> {
    if !bytes.len().is_multiple_of(9) {
        anyhow::bail!(
            "a group result of {} bytes is not a whole number of replies",
            bytes.len()
        );
    }
    bytes
        .chunks_exact(9)
        .map(|c| {
            Ok(Reply {
                count: u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                refusal: match c[8] {
                    0 => None,
                    1 => Some(Refusal::NotRegistered),
                    2 => Some(Refusal::CapacityExhausted),
                    other => anyhow::bail!("unknown refusal {other}"),
                },
            })
        })
        .collect()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<TypeConfig>> {
        let (meta, file) = self
            .blocking(ErrorSubject::StateMachine, ErrorVerb::Write, |sm| {
                let meta = sm.build_blocking()?;
                let file = File::open(sm.snapshot_path(SNAPSHOT_FILE))?;
                Ok((meta, file))
            })
            .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> SmResult<Applied> {
        self.blocking(ErrorSubject::StateMachine, ErrorVerb::Read, |sm| {
            let reader = sm.db.begin_read("raft applied state")?;
            read_applied(&reader)
        })
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<GroupResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.blocking(ErrorSubject::StateMachine, ErrorVerb::Write, move |sm| {
            sm.apply_blocking(entries)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<tokio::fs::File>> {
        let file = self
            .blocking(ErrorSubject::Snapshot(None), ErrorVerb::Write, |sm| {
                Ok(File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(sm.snapshot_path(RECEIVING_FILE))?)
            })
            .await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> SmResult<()> {
        let file = *snapshot;
        file.sync_all()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let file = file.into_std().await;
        let meta = meta.clone();
        let signature = meta.signature();
        self.blocking(
            ErrorSubject::Snapshot(Some(signature)),
            ErrorVerb::Write,
            move |sm| sm.install_blocking(meta, file),
        )
        .await
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<TypeConfig>>> {
        let current = self
            .blocking(ErrorSubject::Snapshot(None), ErrorVerb::Read, |sm| {
                sm.current_blocking()
            })
            .await?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

#[cfg(test)]
mod tests;

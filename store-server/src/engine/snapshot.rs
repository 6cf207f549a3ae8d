//! Snapshots of the engine: export from one read transaction, and building
//! a fresh database file from a snapshot stream (restore).
//!
//! Both sides speak the logical format of `drasi_store_protocol::snapshot`:
//! store_ids and keys, never partition ids, so a restore hands out fresh
//! partition ids and leaves no garbage from cleared stores behind.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use drasi_store_protocol::snapshot::{
    SnapshotHeader, SnapshotReader, SnapshotSummary, SnapshotWriter,
};
use redb::{Database, Durability, ReadableTable, WriteTransaction};

use super::schema::{KV, META, META_NEXT_PARTITION, META_STORE_COUNT, META_TOTAL_KEYS, STORES};
use super::{Engine, EngineResult, StorageContext as _};

/// A read transaction opened for a snapshot: everything committed before
/// [`Engine::begin_snapshot`] returned is in it, nothing committed later.
pub struct SnapshotSource {
    txn: super::database::Reader,
    header: SnapshotHeader,
}

impl Engine {
    /// Pins the current state for a snapshot of the whole database, or of
    /// `selected` store_ids (sorted, without duplicates) when non-empty.
    pub fn begin_snapshot(&self, selected: Vec<String>) -> EngineResult<SnapshotSource> {
        let txn = self.read_txn("snapshot")?;
        let created_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .ok();
        Ok(SnapshotSource {
            txn,
            header: SnapshotHeader {
                created_at_unix_ms,
                server_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                selected_stores: selected,
                last_applied_index: None,
            },
        })
    }
}

impl SnapshotSource {
    /// A snapshot of what `txn` sees, described by `header`.
    pub(crate) fn new(txn: super::database::Reader, header: SnapshotHeader) -> Self {
        SnapshotSource { txn, header }
    }

    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Streams the snapshot into `out`. Blocking: it reads the whole
    /// database, so run it on a blocking thread. Memory use is one record
    /// plus whatever `out` buffers.
    pub fn write_to<W: Write>(self, out: W) -> anyhow::Result<(SnapshotSummary, W)> {
        const OP: &str = "snapshot";
        let stores = self.txn.open_table(STORES).ctx(OP)?;
        let kv = self.txn.open_table(KV).ctx(OP)?;
        let mut writer = SnapshotWriter::new(out, &self.header)?;
        let mut copy = |store: &str, pid: u64| -> anyhow::Result<()> {
            for item in kv.range(super::schema::partition_range(pid)).ctx(OP)? {
                let (k, v) = item.ctx(OP)?;
                writer
                    .write_record(store, k.value().1, v.value())
                    .with_context(|| format!("writing store {store:?} to the snapshot"))?;
            }
            Ok(())
        };
        if self.header.selected_stores.is_empty() {
            for row in stores.iter().ctx(OP)? {
                let (name, row) = row.ctx(OP)?;
                copy(name.value(), row.value().0)?;
            }
        } else {
            for name in &self.header.selected_stores {
                if let Some(row) = stores.get(name.as_str()).ctx(OP)? {
                    copy(name, row.value().0)?;
                }
            }
        }
        Ok(writer.finish()?)
    }
}

/// How much record payload a restore puts into one intermediate commit:
/// bounds the memory of redb's dirty pages however large the snapshot is.
const RESTORE_COMMIT_BYTES: usize = 64 * 1024 * 1024;

/// Creates a new database at `path` (which must not exist) holding exactly
/// the records of `snapshot`, with the layout and counters the server
/// expects. Intermediate commits are not durable; the last one, made only
/// after the snapshot's trailer verified, is. On error the caller deletes
/// `path`: a partly built file never carries the server's file name.
pub fn build_database<R: Read>(
    path: &Path,
    mut snapshot: SnapshotReader<R>,
    cache_bytes: usize,
) -> anyhow::Result<SnapshotSummary> {
    if path.exists() {
        anyhow::bail!("{} already exists", path.display());
    }
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    super::database::init_schema(&db)
        .with_context(|| format!("initialising {}", path.display()))?;
    let mut state = BuildState::default();
    loop {
        let mut txn = db.begin_write()?;
        let done = fill(&txn, &mut snapshot, &mut state)?;
        txn.set_durability(if done {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        txn.commit()?;
        if done {
            break;
        }
    }
    Ok(snapshot
        .summary()
        .cloned()
        .expect("the loop ends only after the trailer verified"))
}

#[derive(Default)]
struct BuildState {
    /// The store being filled: name, partition id, keys so far.
    current: Option<(String, u64, u64)>,
    stores: u64,
    keys: u64,
}

/// Inserts records into one transaction until the commit budget is used up
/// (false) or the snapshot verified to its end (true, counters written).
fn fill<R: Read>(
    txn: &WriteTransaction,
    snapshot: &mut SnapshotReader<R>,
    state: &mut BuildState,
) -> anyhow::Result<bool> {
    let mut stores = txn.open_table(STORES)?;
    let mut kv = txn.open_table(KV)?;
    let mut budget = 0usize;
    while budget < RESTORE_COMMIT_BYTES {
        let Some(record) = snapshot.next_record()? else {
            if let Some((name, pid, count)) = state.current.take() {
                stores.insert(name.as_str(), (pid, count))?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(META_NEXT_PARTITION, state.stores + 1)?;
            meta.insert(META_TOTAL_KEYS, state.keys)?;
            meta.insert(META_STORE_COUNT, state.stores)?;
            return Ok(true);
        };
        budget += record.key.len() + record.value.len() + 64;
        // Records arrive sorted by store_id, so each store is one run.
        let same = matches!(&state.current, Some((name, _, _)) if *name == record.store_id);
        if !same {
            if let Some((name, pid, count)) = state.current.take() {
                stores.insert(name.as_str(), (pid, count))?;
            }
            state.stores += 1;
            state.current = Some((record.store_id, state.stores, 0));
        }
        let (_, pid, count) = state.current.as_mut().expect("set above");
        kv.insert((*pid, record.key.as_str()), record.value.as_slice())?;
        *count += 1;
        state.keys += 1;
    }
    // The current store's row is written when its run ends; a crash before
    // that leaves a file that is deleted anyway.
    Ok(false)
}

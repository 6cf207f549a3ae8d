//! The open redb database, and reopening it after an I/O error.
//!
//! redb sets a sticky flag after any failed write, `set_len` or
//! `sync_data` (a full disk, `EFBIG`, an I/O error): from then on every
//! `begin_write` fails with `PreviousIo` until the database is closed and
//! opened again. So the writer takes the database out of this slot, waits
//! for the readers that still hold it, closes it, and opens it again with
//! backoff until the cause is gone. Opening repairs the file from its last
//! durable commit, so nothing acknowledged under `--durability immediate`
//! is lost. While the slot is empty, every request gets
//! [`EngineError::Recovering`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _};

use super::schema::{self, GARBAGE, KV, META, META_SCHEMA_VERSION, STORES};
use super::{EngineError, EngineResult, StorageContext as _};

pub(crate) struct DbSlot {
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    cache_bytes: usize,
}

/// A read transaction together with the database it reads, so that the
/// writer's wait for readers covers the whole life of the transaction.
pub(crate) struct Reader {
    // Declared first so it is dropped before the database handle.
    txn: redb::ReadTransaction,
    _db: Arc<Database>,
}

impl std::ops::Deref for Reader {
    type Target = redb::ReadTransaction;
    fn deref(&self) -> &redb::ReadTransaction {
        &self.txn
    }
}

impl DbSlot {
    /// Opens (or creates) the database; a failure here is fatal at startup.
    pub(crate) fn open(path: &Path, cache_bytes: usize) -> anyhow::Result<DbSlot> {
        let db = open_database(path, cache_bytes)?;
        Ok(DbSlot {
            db: RwLock::new(Some(Arc::new(db))),
            path: path.to_path_buf(),
            cache_bytes,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The database, unless it is being reopened.
    pub(crate) fn get(&self) -> EngineResult<Arc<Database>> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(EngineError::Recovering)
    }

    pub(crate) fn begin_read(&self, op: &'static str) -> EngineResult<Reader> {
        let db = self.get()?;
        let txn = db.begin_read().ctx(op)?;
        Ok(Reader { txn, _db: db })
    }

    /// Takes the database out, waits until no reader holds it, and closes
    /// it. Readers are short (one transaction each), so the wait is too.
    pub(crate) fn close(&self) {
        let taken = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut db) = taken else { return };
        let started = Instant::now();
        let db = loop {
            match Arc::try_unwrap(db) {
                Ok(db) => break db,
                Err(shared) => {
                    db = shared;
                    if started.elapsed() > Duration::from_secs(5) {
                        tracing::warn!("still waiting for readers before reopening the database");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        };
        // The close fails for the same reason the commit did; reopening
        // repairs whatever it could not write.
        if let Err(err) = db.close() {
            tracing::debug!(error = %err, "closing the failed database");
        }
    }

    /// Opens the database again after [`DbSlot::close`]; `prepare` runs
    /// before any reader can see it (the journal's replay).
    pub(crate) fn reopen(
        &self,
        prepare: impl FnOnce(&Database) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let db = open_database(&self.path, self.cache_bytes)?;
        prepare(&db)?;
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    pub(crate) fn is_open(&self) -> bool {
        self.db.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// Whether `db` is stuck on redb's sticky I/O error flag.
pub(crate) fn is_wedged(db: &Database) -> bool {
    matches!(
        db.begin_write(),
        Err(redb::TransactionError::Storage(
            redb::StorageError::PreviousIo
        ))
    )
}

fn open_database(path: &Path, cache_bytes: usize) -> anyhow::Result<Database> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = repaired.clone();
    let path_for_log = path.display().to_string();
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |session| {
            if !flag.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path = %path_for_log,
                    "database was not closed cleanly; repairing it"
                );
            }
            tracing::debug!(progress = session.progress(), "database repair progress");
        })
        .create(path)
        .with_context(|| format!("opening database {}", path.display()))?;
    if repaired.load(Ordering::Relaxed) {
        tracing::warn!(path = %path.display(), "database repair finished");
    }
    init_schema(&db).with_context(|| format!("initialising {}", path.display()))?;
    Ok(db)
}

/// Creates every table so that read transactions can open them, and checks
/// the layout version.
pub(crate) fn init_schema(db: &Database) -> anyhow::Result<()> {
    let txn = db.begin_write()?;
    {
        txn.open_table(STORES)?;
        txn.open_table(KV)?;
        txn.open_table(GARBAGE)?;
        txn.open_table(schema::RAFT_STATE)?;
        super::wal::init_tables(&txn)?;
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_SCHEMA_VERSION)?.map(|g| g.value());
        match version {
            None => {
                meta.insert(META_SCHEMA_VERSION, schema::SCHEMA_VERSION)?;
            }
            Some(v) if v == schema::SCHEMA_VERSION => {}
            Some(v) => anyhow::bail!(
                "database schema version {v} is not supported (this server uses {})",
                schema::SCHEMA_VERSION
            ),
        }
    }
    txn.commit()?;
    Ok(())
}

//! Importing a snapshot into a running server: replace whole stores with
//! the snapshot's records, in one write transaction.
//!
//! The HTTP layer spools the upload to a file; [`ImportPlan::prepare`]
//! reads that file completely (checksums, order, trailer, limits) before
//! anything is touched, and the writer then applies the plan as one op of a
//! group commit: all of it or none of it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use drasi_store_protocol::Limits;
use drasi_store_protocol::snapshot::{SnapshotError, SnapshotReader, SnapshotSummary};

use super::{Engine, EngineResult, WriteOp};

/// A verified snapshot file and the stores it replaces. The spool file is
/// deleted when the plan is dropped, whatever happened to the import.
#[derive(Debug)]
pub struct ImportPlan {
    pub spool: PathBuf,
    pub spool_bytes: u64,
    /// Sorted: every store_id with records, plus the header's selected
    /// store_ids (which are emptied when the snapshot has none of theirs).
    pub stores: Vec<String>,
    pub summary: SnapshotSummary,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the uploaded snapshot is not intact: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error(
        "record #{index} (store {store:?}): {what} is {len} bytes, more than the limit of {max}"
    )]
    TooLarge {
        index: u64,
        store: String,
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl ImportPlan {
    /// Verifies `spool` to its end and checks every record against the
    /// server's limits. Blocking. On error the file is deleted.
    pub fn prepare(spool: PathBuf, limits: &Limits) -> Result<ImportPlan, ImportError> {
        let guard = SpoolGuard(Some(spool));
        let path = guard.0.clone().expect("set above");
        let spool_bytes = std::fs::metadata(&path).map_err(SnapshotError::from)?.len();
        let mut reader = SnapshotReader::new(BufReader::new(
            File::open(&path).map_err(SnapshotError::from)?,
        ))?;
        let mut stores: BTreeSet<String> =
            reader.header().selected_stores.iter().cloned().collect();
        while let Some(r) = reader.next_record()? {
            let index = reader.records() - 1;
            for (what, len, max) in [
                ("store_id", r.store_id.len(), limits.max_key_bytes),
                ("key", r.key.len(), limits.max_key_bytes),
                ("value", r.value.len(), limits.max_value_bytes),
            ] {
                if len > max {
                    return Err(ImportError::TooLarge {
                        index,
                        store: r.store_id.chars().take(64).collect(),
                        what,
                        len,
                        max,
                    });
                }
            }
            if !stores.contains(&r.store_id) {
                stores.insert(r.store_id);
            }
        }
        let summary = reader.summary().cloned().expect("set at the end");
        Ok(ImportPlan {
            spool: guard.keep(),
            spool_bytes,
            stores: stores.into_iter().collect(),
            summary,
        })
    }

    /// Reads the spooled snapshot again, for the writer.
    pub(crate) fn open(&self) -> Result<SnapshotReader<BufReader<File>>, SnapshotError> {
        SnapshotReader::new(BufReader::new(File::open(&self.spool)?))
    }
}

impl Drop for ImportPlan {
    fn drop(&mut self) {
        remove_spool(&self.spool);
    }
}

struct SpoolGuard(Option<PathBuf>);

impl SpoolGuard {
    fn keep(mut self) -> PathBuf {
        self.0.take().expect("kept once")
    }
}

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_spool(&path);
        }
    }
}

fn remove_spool(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove an import spool file");
    }
}

impl Engine {
    /// Applies a prepared import in one commit; returns the records written.
    pub async fn import(&self, plan: ImportPlan) -> EngineResult<u64> {
        Ok(self.write(WriteOp::Import(Arc::new(plan))).await?.count)
    }
}

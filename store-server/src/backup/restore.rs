//! `restore`: fill an empty data dir from a snapshot.
//!
//! The database is built under [`RESTORING_NAME`] in the data dir and only
//! renamed to the server's file name after the snapshot's trailer verified
//! and the file is durable. Any failure removes the temporary file; a
//! process killed midway leaves only that file, which the server refuses to
//! start next to and which the next restore replaces.

use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, bail};
use drasi_store_protocol::snapshot::{SnapshotHeader, SnapshotReader, SnapshotSummary};

use crate::config::DEFAULT_CACHE_BYTES;
use crate::engine::snapshot::build_database;

/// The server's database file name inside the data dir.
pub const DB_NAME: &str = "state.redb";
/// The name a restore builds the database under.
pub const RESTORING_NAME: &str = "state.redb.restoring";

/// Refuses to serve next to the leftover of an interrupted restore: the
/// data dir was meant to hold the restored data, and serving an empty
/// database instead would silently lose it.
pub fn refuse_interrupted_restore(data_dir: &Path) -> anyhow::Result<()> {
    let leftover = data_dir.join(RESTORING_NAME);
    if leftover.exists() && !data_dir.join(DB_NAME).exists() {
        bail!(
            "{} is left over from an interrupted restore: run `drasi-store-server restore` \
             again, or delete it to start with an empty database",
            leftover.display()
        );
    }
    Ok(())
}

/// Checks that `dir` is empty (creating it if missing) and removes the
/// leftover of an earlier interrupted restore, the only entry allowed.
fn prepare_empty_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name();
        if name != RESTORING_NAME {
            others.push(name.to_string_lossy().into_owned());
        }
    }
    if !others.is_empty() {
        others.sort();
        others.truncate(5);
        bail!(
            "data dir {} is not empty (it holds {}): restore only fills an empty data dir, \
             and changed nothing",
            dir.display(),
            others.join(", ")
        );
    }
    let leftover = dir.join(RESTORING_NAME);
    if leftover.exists() {
        tracing::warn!(path = %leftover.display(), "removing the leftover of an interrupted restore");
        std::fs::remove_file(&leftover)
            .with_context(|| format!("removing {}", leftover.display()))?;
    }
    Ok(())
}

/// Builds `<dir>/state.redb` from `input`. Blocking.
pub fn restore_into(
    dir: &Path,
    input: Box<dyn Read + Send>,
) -> anyhow::Result<(SnapshotHeader, SnapshotSummary)> {
    prepare_empty_dir(dir)?;
    let temp = dir.join(RESTORING_NAME);
    let result = build_and_publish(dir, &temp, input);
    if result.is_err() {
        remove_partial(&temp);
    }
    result
}

fn remove_partial(temp: &Path) {
    match std::fs::remove_file(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %temp.display(), error = %e, "cannot remove the partial database");
        }
    }
}

fn build_and_publish(
    dir: &Path,
    temp: &Path,
    input: Box<dyn Read + Send>,
) -> anyhow::Result<(SnapshotHeader, SnapshotSummary)> {
    let reader = SnapshotReader::new(input).context("reading the snapshot header")?;
    let header = reader.header().clone();
    let summary = build_database(temp, reader, DEFAULT_CACHE_BYTES)?;
    std::fs::File::open(temp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", temp.display()))?;
    let db = dir.join(DB_NAME);
    std::fs::rename(temp, &db)
        .with_context(|| format!("renaming {} to {}", temp.display(), db.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok((header, summary))
}

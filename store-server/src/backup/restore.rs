//! `restore`: fill an empty data dir from a snapshot.
//!
//! The database is built under [`RESTORING_NAME`] in the data dir and only
//! renamed to the server's file name after the snapshot's trailer verified
//! and the file is durable. Any failure removes the temporary file; a
//! process killed midway leaves only that file, which the server refuses to
//! start next to and which the next restore replaces.
//!
//! "Empty" ignores [`LOST_AND_FOUND`], which `mkfs.ext4` puts at the root of
//! every fresh volume, so a new PersistentVolume counts as empty. With
//! `--if-empty` ([`existing_database`]) a data dir that already holds a
//! database is left alone and the restore succeeds without reading the
//! snapshot: an init container that restores before every server start
//! then fills the volume once and skips on every later start, whether the
//! database is the restored one or has been written to since.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use drasi_store_protocol::snapshot::{SnapshotHeader, SnapshotReader, SnapshotSummary};

use crate::config::DEFAULT_CACHE_BYTES;
use crate::engine::snapshot::build_database;

/// The server's database file name inside the data dir.
pub const DB_NAME: &str = "state.redb";
/// The name a restore builds the database under.
pub const RESTORING_NAME: &str = "state.redb.restoring";
/// Created by `mkfs.ext4` at the root of a volume; not data of ours.
pub const LOST_AND_FOUND: &str = "lost+found";

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

/// The database file in `dir`, if there is one: what `--if-empty` leaves
/// alone. Only the finished file counts; the leftover of an interrupted
/// restore does not, so such a restore is redone. A missing `dir` holds
/// none.
pub fn existing_database(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let db = dir.join(DB_NAME);
    match std::fs::symlink_metadata(&db) {
        Ok(_) => Ok(Some(db)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("checking {}", db.display())),
    }
}

/// Checks that `dir` is empty (creating it if missing) and removes the
/// leftover of an earlier interrupted restore. That leftover and
/// `lost+found` are the only entries allowed.
fn prepare_empty_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name();
        if name != RESTORING_NAME && name != LOST_AND_FOUND {
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

#[cfg(test)]
mod tests {
    use drasi_store_protocol::snapshot::SnapshotWriter;

    use super::*;

    fn snapshot() -> Box<dyn Read + Send> {
        let mut writer = SnapshotWriter::new(Vec::new(), &SnapshotHeader::default()).unwrap();
        writer.write_record("s", "k1", b"v1").unwrap();
        writer.write_record("s", "k2", b"v2").unwrap();
        let (_, bytes) = writer.finish().unwrap();
        Box::new(std::io::Cursor::new(bytes))
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_fresh_volume_with_lost_and_found_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOST_AND_FOUND)).unwrap();
        assert_eq!(existing_database(dir.path()).unwrap(), None);
        let (_, summary) = restore_into(dir.path(), snapshot()).unwrap();
        assert_eq!(summary.records, 2);
        assert_eq!(entries(dir.path()), [LOST_AND_FOUND, DB_NAME]);
        assert_eq!(
            existing_database(dir.path()).unwrap(),
            Some(dir.path().join(DB_NAME))
        );
    }

    #[test]
    fn a_missing_or_empty_dir_holds_no_database_and_is_filled() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        assert_eq!(existing_database(&dir).unwrap(), None);
        restore_into(&dir, snapshot()).unwrap();
        assert_eq!(entries(&dir), [DB_NAME]);
    }

    #[test]
    fn lost_and_found_does_not_hide_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOST_AND_FOUND)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let err = restore_into(dir.path(), snapshot())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not empty") && err.contains("notes.txt"),
            "{err}"
        );
        assert!(!err.contains(LOST_AND_FOUND), "{err}");
        assert_eq!(entries(dir.path()), [LOST_AND_FOUND, "notes.txt"]);
        // Not a database either: `--if-empty` does not skip such a dir.
        assert_eq!(existing_database(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_database_is_found_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_NAME), b"live data").unwrap();
        assert_eq!(
            existing_database(dir.path()).unwrap(),
            Some(dir.path().join(DB_NAME))
        );
        assert!(restore_into(dir.path(), snapshot()).is_err());
        assert_eq!(
            std::fs::read(dir.path().join(DB_NAME)).unwrap(),
            b"live data"
        );
    }

    #[test]
    fn the_leftover_of_an_interrupted_restore_is_no_database_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOST_AND_FOUND)).unwrap();
        std::fs::write(dir.path().join(RESTORING_NAME), b"half a database").unwrap();
        assert!(refuse_interrupted_restore(dir.path()).is_err());
        assert_eq!(existing_database(dir.path()).unwrap(), None);
        restore_into(dir.path(), snapshot()).unwrap();
        assert_eq!(entries(dir.path()), [LOST_AND_FOUND, DB_NAME]);
        refuse_interrupted_restore(dir.path()).unwrap();
    }

    #[test]
    fn a_damaged_snapshot_leaves_only_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOST_AND_FOUND)).unwrap();
        let mut bytes = Vec::new();
        snapshot().read_to_end(&mut bytes).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(restore_into(dir.path(), Box::new(std::io::Cursor::new(bytes))).is_err());
        assert_eq!(entries(dir.path()), [LOST_AND_FOUND]);
    }
}

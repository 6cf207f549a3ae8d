//! `drasi-store-server delete --location L`: removes one snapshot, so that
//! deleting a backup (e.g. by a schedule's retention) frees its storage.
//!
//! Idempotent: a snapshot that is already gone is reported and counts as
//! success, so a retried deletion never fails on its own earlier success.
//! It only deletes `*.snap` locations: a mistyped location must not remove
//! anything else in a bucket or a volume.

use anyhow::{Context as _, bail};
use object_store::path::Path as ObjectPath;

use super::location::{Location, s3_store};
use super::sink::partial_name;

/// The extension of every snapshot the backup Jobs write.
pub const SNAPSHOT_EXTENSION: &str = ".snap";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Removed,
    AlreadyAbsent,
}

pub async fn delete(location: &Location) -> anyhow::Result<Deleted> {
    let name = match location {
        Location::File(path) => path.to_string_lossy().into_owned(),
        Location::S3 { key, .. } => key.clone(),
    };
    if !name.ends_with(SNAPSHOT_EXTENSION) {
        bail!(
            "refusing to delete {location}: only snapshots ({SNAPSHOT_EXTENSION} files) are deleted"
        );
    }
    match location {
        Location::File(path) => {
            // A backup killed mid-write leaves its temporary file: it goes too.
            let partial = partial_name(path);
            match tokio::fs::remove_file(&partial).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {}", partial.display())),
            }
            match tokio::fs::remove_file(path).await {
                Ok(()) => Ok(Deleted::Removed),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Deleted::AlreadyAbsent),
                Err(e) => Err(e).with_context(|| format!("deleting {location}")),
            }
        }
        Location::S3 { bucket, key } => {
            let store = s3_store(bucket)?;
            let path = ObjectPath::from(key.as_str());
            // S3 answers a delete of a missing key with success; the head
            // tells the two apart for the report.
            match store.head(&path).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(Deleted::AlreadyAbsent),
                Err(e) => return Err(e).with_context(|| format!("checking {location}")),
            }
            store
                .delete(&path)
                .await
                .with_context(|| format!("deleting {location}"))?;
            Ok(Deleted::Removed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deletes_a_snapshot_file_and_its_partial_leftover_once() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("b.snap");
        std::fs::write(&snap, b"x").unwrap();
        std::fs::write(partial_name(&snap), b"y").unwrap();
        let other = dir.path().join("keep.snap");
        std::fs::write(&other, b"z").unwrap();
        let location = Location::File(snap.clone());
        assert_eq!(delete(&location).await.unwrap(), Deleted::Removed);
        assert!(!snap.exists() && !partial_name(&snap).exists());
        assert!(other.exists());
        assert_eq!(delete(&location).await.unwrap(), Deleted::AlreadyAbsent);
    }

    #[tokio::test]
    async fn refuses_anything_but_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.redb");
        std::fs::write(&file, b"x").unwrap();
        let err = delete(&Location::File(file.clone())).await.unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        assert!(file.exists());
        let err = delete(&Location::S3 {
            bucket: "b".into(),
            key: "dir/notes.txt".into(),
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
    }

    #[tokio::test]
    async fn a_directory_named_like_a_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("x.snap");
        std::fs::create_dir(&sub).unwrap();
        assert!(delete(&Location::File(sub.clone())).await.is_err());
        assert!(sub.exists());
    }
}

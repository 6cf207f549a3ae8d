//! Writing a backup so that only a complete, verified snapshot ever
//! appears under the requested name.
//!
//! Files are written to `<name>.partial`, fsynced, renamed, and the
//! directory fsynced. Objects go up as a multipart upload that is
//! completed only at the end (S3 shows nothing under the key until then)
//! and aborted on failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use tokio::io::AsyncWriteExt as _;

use super::location::{Location, s3_store};

/// Multipart part size. S3 wants at least 5 MiB per part except the last;
/// memory is about part size x (uploads in flight + 1).
const PART_BYTES: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

pub enum Sink {
    File {
        temp: PathBuf,
        dest: PathBuf,
        file: tokio::fs::File,
    },
    S3 {
        upload: WriteMultipart,
        location: String,
    },
}

/// The temporary name a file backup is written under.
pub fn partial_name(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

impl Sink {
    /// Refuses to replace an existing backup: a new backup gets a new name.
    pub async fn create(location: &Location) -> anyhow::Result<Sink> {
        match location {
            Location::File(dest) => {
                if tokio::fs::try_exists(dest).await.unwrap_or(true) {
                    bail!(
                        "{} already exists (or cannot be checked); refusing to overwrite a backup",
                        dest.display()
                    );
                }
                let temp = partial_name(dest);
                let file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&temp)
                    .await
                    .with_context(|| format!("creating {}", temp.display()))?;
                Ok(Sink::File {
                    temp,
                    dest: dest.clone(),
                    file,
                })
            }
            Location::S3 { bucket, key } => {
                let store: Arc<dyn ObjectStore> = s3_store(bucket)?;
                let path = ObjectPath::from(key.as_str());
                match store.head(&path).await {
                    Ok(_) => bail!("{location} already exists; refusing to overwrite a backup"),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("checking {location}"));
                    }
                }
                let upload = store
                    .put_multipart(&path)
                    .await
                    .with_context(|| format!("starting the upload to {location}"))?;
                Ok(Sink::S3 {
                    upload: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
                    location: location.to_string(),
                })
            }
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::File { file, temp, .. } => file
                .write_all(chunk)
                .await
                .with_context(|| format!("writing {}", temp.display())),
            Sink::S3 { upload, location } => {
                upload
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .with_context(|| format!("uploading to {location}"))?;
                upload.write(chunk);
                Ok(())
            }
        }
    }

    /// Makes the backup durable and visible under its name.
    pub async fn commit(self) -> anyhow::Result<()> {
        match self {
            Sink::File {
                temp,
                dest,
                mut file,
            } => {
                file.flush().await?;
                file.sync_all()
                    .await
                    .with_context(|| format!("syncing {}", temp.display()))?;
                drop(file);
                tokio::fs::rename(&temp, &dest).await.with_context(|| {
                    format!("renaming {} to {}", temp.display(), dest.display())
                })?;
                sync_parent(&dest).await
            }
            Sink::S3 { upload, location } => {
                upload
                    .finish()
                    .await
                    .with_context(|| format!("completing the upload to {location}"))?;
                Ok(())
            }
        }
    }

    /// Removes every trace of an unfinished backup (best effort: the
    /// caller is already reporting the error that got us here).
    pub async fn abort(self) {
        match self {
            Sink::File { temp, file, .. } => {
                drop(file);
                if let Err(e) = tokio::fs::remove_file(&temp).await {
                    tracing::warn!(path = %temp.display(), error = %e, "cannot remove the partial backup");
                }
            }
            Sink::S3 { upload, location } => {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(%location, error = %e, "cannot abort the multipart upload");
                }
            }
        }
    }
}

/// fsync of the directory holding `path`, so a rename survives a crash.
pub async fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))
    })
    .await?
}

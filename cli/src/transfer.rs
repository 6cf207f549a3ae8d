//! `export` / `import`: selected DrasiLib store_ids to and from a snapshot
//! file, through the server's admin routes (docs/backup.md). Both stream:
//! memory stays at a few chunks whatever the size.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use drasi_store_protocol::ImportResponse;
use drasi_store_protocol::endpoints::{IMPORT, SNAPSHOT};
use drasi_store_protocol::snapshot::{
    CONTENT_TYPE, MAGIC, SnapshotHeader, SnapshotReader, SnapshotSummary, encode_selection,
};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::server::{CONNECT_TIMEOUT, ServerAccess};

/// Read size for uploads, and the unit of the verifier's channel.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks in flight between the download and its verifier.
const CHANNEL_CHUNKS: usize = 4;

/// A byte-counting progress bar on stderr; hidden when stderr is not a
/// terminal (indicatif's default), so scripts get clean output.
pub fn progress_bar(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
    } else {
        "{msg} {spinner} {bytes} ({bytes_per_sec})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: PathBuf,
    pub header: SnapshotHeader,
    pub summary: SnapshotSummary,
}

/// `<dest>.partial`, the name an export is written under until verified.
pub fn partial_name(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Streams a selective snapshot of `stores` into `dest`. The file appears
/// only once the stream verified to its trailer (written as
/// `dest.partial`, fsynced, renamed); on any failure nothing is left.
pub async fn export(
    server: &ServerAccess,
    stores: &[String],
    dest: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<Exported> {
    if stores.is_empty() || stores.iter().any(|s| s.is_empty()) {
        bail!("name at least one store_id to export, none empty");
    }
    if tokio::fs::try_exists(dest).await.unwrap_or(true) {
        bail!(
            "{} already exists (or cannot be checked); refusing to overwrite it",
            dest.display()
        );
    }
    let temp = partial_name(dest);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .await
        .with_context(|| format!("creating {}", temp.display()))?;
    let result = download(server, stores, &mut file, &temp, progress).await;
    let result = match result {
        Ok(verified) => finish(file, &temp, dest).await.map(|()| verified),
        Err(err) => Err(err),
    };
    match result {
        Ok((header, summary)) => Ok(Exported {
            path: dest.to_path_buf(),
            header,
            summary,
        }),
        Err(err) => {
            let _ = tokio::fs::remove_file(&temp).await;
            Err(err.context(format!(
                "export to {} failed; nothing was written",
                dest.display()
            )))
        }
    }
}

async fn download(
    server: &ServerAccess,
    stores: &[String],
    file: &mut tokio::fs::File,
    temp: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<(SnapshotHeader, SnapshotSummary)> {
    let path = format!("{}?{}", SNAPSHOT.path, encode_selection(stores));
    let response = tokio::time::timeout(CONNECT_TIMEOUT, server.get(&path).send())
        .await
        .with_context(|| {
            format!(
                "no answer from {} within {CONNECT_TIMEOUT:?}",
                server.base_url()
            )
        })?
        .with_context(|| format!("requesting a snapshot from {}", server.base_url()))?;
    let status = response.status();
    if !status.is_success() {
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect();
        bail!("the server answered {status} to the export: {body}");
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type != CONTENT_TYPE {
        bail!("the server answered with content type {content_type:?}, not {CONTENT_TYPE}");
    }
    // The same bytes go to the file and, through a bounded channel, to a
    // blocking thread that verifies them as a snapshot.
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let verifier = tokio::task::spawn_blocking(move || {
        SnapshotReader::new(ChannelReader::new(rx))?.verify_to_end()
    });
    let mut body = response.bytes_stream();
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the snapshot download broke off")?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", temp.display()))?;
            progress.inc(chunk.len() as u64);
            if tx.send(chunk).await.is_err() {
                // The verifier stopped early; its error says why.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let verified = verifier.await.context("the verifier task failed")?;
    copied?;
    verified.context("the downloaded snapshot is not intact")
}

async fn finish(mut file: tokio::fs::File, temp: &Path, dest: &Path) -> anyhow::Result<()> {
    file.flush().await?;
    file.sync_all()
        .await
        .with_context(|| format!("syncing {}", temp.display()))?;
    drop(file);
    tokio::fs::rename(temp, dest)
        .await
        .with_context(|| format!("renaming {} to {}", temp.display(), dest.display()))?;
    let dir = match dest.parent() {
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

/// A blocking `Read` over the chunks of a channel; end of input when the
/// sender is dropped.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Sends the snapshot file `input` to the server, which verifies it
/// completely and only then replaces exactly the store_ids it holds, in one
/// commit; a refused import changes nothing.
pub async fn import(
    server: &ServerAccess,
    input: &Path,
    progress: &ProgressBar,
) -> anyhow::Result<ImportResponse> {
    let mut file = tokio::fs::File::open(input)
        .await
        .with_context(|| format!("opening {}", input.display()))?;
    let size = file
        .metadata()
        .await
        .with_context(|| format!("reading the size of {}", input.display()))?
        .len();
    let mut magic = [0u8; 8];
    let is_snapshot = file.read_exact(&mut magic).await.is_ok() && magic == MAGIC;
    if !is_snapshot {
        bail!(
            "{} is not a drasi-store snapshot (written by `export` or a backup)",
            input.display()
        );
    }
    progress.set_length(size);
    progress.inc(magic.len() as u64);
    let first = Bytes::copy_from_slice(&magic);
    let bar = progress.clone();
    let rest = futures::stream::unfold(file, move |mut file| {
        let bar = bar.clone();
        async move {
            let mut buf = vec![0u8; CHUNK_BYTES];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    bar.inc(n as u64);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        }
    });
    let body = futures::stream::once(async move { Ok(first) }).chain(rest);
    let response = server
        .post(IMPORT.path)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .with_context(|| format!("sending {} to {}", input.display(), server.base_url()))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let body: String = body.chars().take(512).collect();
        bail!("the server refused the import ({status}); nothing was changed: {body}");
    }
    serde_json::from_str(&body).context("the server's import answer is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_name_appends() {
        assert_eq!(
            partial_name(Path::new("/tmp/a.snap")),
            PathBuf::from("/tmp/a.snap.partial")
        );
    }

    #[test]
    fn channel_reader_concatenates_chunks() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"hel")).unwrap();
        tx.try_send(Bytes::from_static(b"")).unwrap();
        tx.try_send(Bytes::from_static(b"lo")).unwrap();
        drop(tx);
        let mut out = String::new();
        ChannelReader::new(rx).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello");
    }
}

//! `backup` / `export`: download a snapshot from a running server into a
//! [`Sink`], verifying it on the way.

use anyhow::{Context as _, bail};
use drasi_store_protocol::endpoints::SNAPSHOT;
use drasi_store_protocol::snapshot::{
    CONTENT_TYPE, SnapshotHeader, SnapshotReader, SnapshotSummary, encode_selection,
};
use futures::StreamExt as _;

use super::location::Location;
use super::sink::Sink;
use super::{BackupArgs, CONNECT_TIMEOUT};
use crate::bridge::{self, ChannelReader};

pub async fn backup(
    args: &BackupArgs,
    stores: &[String],
) -> anyhow::Result<(Location, SnapshotHeader, SnapshotSummary)> {
    let location = Location::parse(&args.output)?;
    let mut sink = Sink::create(&location).await?;
    let result = async {
        let response = request(args, stores).await?;
        transfer(response, &mut sink).await
    }
    .await;
    match result {
        Ok((header, summary)) => {
            sink.commit().await?;
            Ok((location, header, summary))
        }
        Err(err) => {
            sink.abort().await;
            Err(err.context(format!("backup to {location} failed; nothing was written")))
        }
    }
}

async fn request(args: &BackupArgs, stores: &[String]) -> anyhow::Result<reqwest::Response> {
    let server = &args.server;
    let client = server.client()?;
    let token = server.token()?;
    let mut url = format!("{}{}", server.url.trim_end_matches('/'), SNAPSHOT.path);
    if !stores.is_empty() {
        url.push('?');
        url.push_str(&encode_selection(stores));
    }
    let mut req = client.get(&url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let response = tokio::time::timeout(CONNECT_TIMEOUT, req.send())
        .await
        .with_context(|| format!("no answer from {} within {CONNECT_TIMEOUT:?}", server.url))?
        .with_context(|| format!("requesting a snapshot from {}", server.url))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(512).collect();
        bail!("the server answered {status} to the snapshot request: {body}");
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != CONTENT_TYPE {
        bail!("the server answered with content type {content_type:?}, not {CONTENT_TYPE}");
    }
    Ok(response)
}

/// Copies the body into the sink while a blocking thread reads the same
/// bytes through the snapshot reader, so the backup is complete only if
/// the stream verified to its trailer.
async fn transfer(
    response: reqwest::Response,
    sink: &mut Sink,
) -> anyhow::Result<(SnapshotHeader, SnapshotSummary)> {
    let (tx, rx) = bridge::channel();
    let verifier = tokio::task::spawn_blocking(move || {
        SnapshotReader::new(ChannelReader::new(rx))?.verify_to_end()
    });
    let mut body = response.bytes_stream();
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the snapshot download broke off")?;
            sink.write(&chunk).await?;
            if tx.send(Ok(chunk)).await.is_err() {
                // The verifier stopped early: its error says why.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let verified = verifier.await.context("verifier task failed")?;
    copied?;
    verified.context("the downloaded snapshot is not intact")
}

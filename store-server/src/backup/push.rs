//! `import`: send a snapshot (file or object) to a running server, which
//! replaces exactly the store_ids it holds.

use anyhow::{Context as _, bail};
use drasi_store_protocol::ImportResponse;
use drasi_store_protocol::endpoints::IMPORT;
use drasi_store_protocol::snapshot::CONTENT_TYPE;
use std::io::Read as _;

use super::location::Location;
use super::{ServerArgs, source};
use crate::bridge::{self, CHUNK_BYTES};

/// Streams `input` to `POST /v1/admin/import`; returns the server's JSON
/// answer.
pub async fn import(server: &ServerArgs, input: &str) -> anyhow::Result<ImportResponse> {
    let location = Location::parse(input)?;
    let mut reader = source::open(&location).await?;
    let (tx, rx) = bridge::channel();
    // A blocking pump: the source is a blocking reader.
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let item = match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(bytes::Bytes::copy_from_slice(&buf[..n])),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let client = server.client()?;
    let url = format!("{}{}", server.url.trim_end_matches('/'), IMPORT.path);
    let mut req = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(reqwest::Body::wrap_stream(bridge::into_stream(rx)));
    if let Some(token) = server.token()? {
        req = req.bearer_auth(token);
    }
    let response = req
        .send()
        .await
        .with_context(|| format!("sending {location} to {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let body: String = body.chars().take(512).collect();
        bail!("the server refused the import ({status}), nothing was changed: {body}");
    }
    serde_json::from_str(&body).context("the server's import answer is not JSON")
}

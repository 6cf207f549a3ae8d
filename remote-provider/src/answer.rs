//! Decoding of successful answers, one function per response shape.
//!
//! Each runs on the provider's runtime right after the status check; a body
//! that cannot be read is a transport failure (retryable for idempotent
//! operations), a body that cannot be parsed is a decode failure (a server
//! or proxy bug, never retried).

use std::collections::HashMap;

use drasi_store_protocol::{Limits, MixedResult, decode_entries, decode_mixed_results};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::Failure;

/// Answers come from the server, which has already enforced its own
/// (configurable) limits; the client accepts whatever it was sent.
const UNBOUNDED: Limits = Limits {
    max_key_bytes: usize::MAX,
    max_value_bytes: usize::MAX,
    max_batch_entries: usize::MAX,
    max_body_bytes: usize::MAX,
};

async fn body(response: Response) -> Result<bytes::Bytes, Failure> {
    response.bytes().await.map_err(Failure::from_reqwest)
}

/// `GET /v1/kv`: the raw value, or `None` for the key-not-found 404.
pub(crate) async fn value(response: Response) -> Result<Option<Vec<u8>>, Failure> {
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    // Reuses the buffer when hyper handed over a single uniquely owned chunk.
    Ok(Some(Vec::from(body(response).await?)))
}

/// A binary answer, as sent.
pub(crate) async fn bytes(response: Response) -> Result<bytes::Bytes, Failure> {
    body(response).await
}

/// `HEAD /v1/kv`.
pub(crate) async fn exists(response: Response) -> Result<bool, Failure> {
    Ok(response.status() != StatusCode::NOT_FOUND)
}

/// `204 No Content` answers. The (empty) body is still read to the end so
/// the connection goes back to the pool.
pub(crate) async fn unit(response: Response) -> Result<(), Failure> {
    body(response).await.map(drop)
}

pub(crate) async fn json<T: DeserializeOwned>(response: Response) -> Result<T, Failure> {
    let bytes = body(response).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Decode(format!(
            "expected a JSON {} body: {e}",
            std::any::type_name::<T>().rsplit("::").next().unwrap_or("")
        ))
    })
}

/// `POST /v1/kv/get-many`: an entries frame of the keys that exist.
pub(crate) async fn entries(response: Response) -> Result<HashMap<String, Vec<u8>>, Failure> {
    let bytes = body(response).await?;
    let entries = decode_entries(&bytes, &UNBOUNDED)
        .map_err(|e| Failure::Decode(format!("bad entries frame: {e}")))?;
    Ok(entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect())
}

/// `POST /v1/batch`: one result per call.
pub(crate) async fn mixed(response: Response) -> Result<Vec<MixedResult>, Failure> {
    let bytes = body(response).await?;
    decode_mixed_results(&bytes).map_err(|e| Failure::Decode(format!("bad batch answer: {e}")))
}

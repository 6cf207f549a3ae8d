//! Request-size limits and body reading.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use drasi_store_protocol::{ErrorCode, Limits, RequestTarget};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::errors::ApiError;

/// Rejects a store_id or key longer than `max_key_bytes`.
pub fn check_target(target: &RequestTarget, limits: &Limits) -> Result<(), ApiError> {
    let max = limits.max_key_bytes;
    if target.store.len() > max {
        return Err(ApiError::new(
            ErrorCode::KeyTooLarge,
            format!(
                "store_id is {} bytes, more than the limit of {max}",
                target.store.len()
            ),
        ));
    }
    if let Some(key) = &target.key
        && key.len() > max
    {
        return Err(ApiError::new(
            ErrorCode::KeyTooLarge,
            format!("key is {} bytes, more than the limit of {max}", key.len()),
        ));
    }
    Ok(())
}

/// How large a body may be and which error says it was too large.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max: usize,
    pub code: ErrorCode,
    pub what: &'static str,
}

impl BodyLimit {
    /// A single value: `max_value_bytes`, unless the body limit is smaller.
    pub fn value(limits: &Limits) -> Self {
        if limits.max_body_bytes < limits.max_value_bytes {
            Self::batch(limits)
        } else {
            BodyLimit {
                max: limits.max_value_bytes,
                code: ErrorCode::ValueTooLarge,
                what: "value",
            }
        }
    }

    pub fn batch(limits: &Limits) -> Self {
        BodyLimit {
            max: limits.max_body_bytes,
            code: ErrorCode::BodyTooLarge,
            what: "request body",
        }
    }

    /// `len` is the declared length, when the client sent one.
    fn exceeded(&self, len: Option<u64>) -> ApiError {
        let message = match len {
            Some(len) => format!(
                "{} is {len} bytes, more than the limit of {}",
                self.what, self.max
            ),
            None => format!("{} is more than the limit of {} bytes", self.what, self.max),
        };
        ApiError::new(self.code, message)
    }
}

/// Reads a whole body under `limit` and within `timeout`: `Limited` stops
/// at the first frame past the limit, so an oversize upload is never
/// buffered, and the deadline covers the whole body, so a stalled one ends
/// in 408. A body that arrives in one frame is returned without a copy.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: BodyLimit,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit.max as u64
    {
        return Err(limit.exceeded(Some(len)));
    }
    let read = Limited::new(body, limit.max).collect();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(limit.exceeded(None)),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorCode::MalformedBody,
            format!("request body could not be read: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "request body not received within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

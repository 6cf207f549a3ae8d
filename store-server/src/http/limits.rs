//! Request-size limits and body reading.
//!
//! Bodies are read frame by frame into one buffer sized from
//! Content-Length (or returned as-is when they arrive in one frame), with
//! the limit enforced while reading and a deadline on the whole body, so an
//! oversize or stalled upload is rejected without being buffered twice.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use drasi_store_protocol::{ErrorCode, Limits, RequestTarget};
use http_body_util::BodyExt;

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

    fn exceeded(&self, len: u64) -> ApiError {
        ApiError::new(
            self.code,
            format!(
                "{} is {len} bytes or more, more than the limit of {}",
                self.what, self.max
            ),
        )
    }
}

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
        return Err(limit.exceeded(len));
    }
    let read = collect(body, declared, limit);
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "request body not received within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

async fn collect(
    mut body: Body,
    declared: Option<u64>,
    limit: BodyLimit,
) -> Result<Bytes, ApiError> {
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("request body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we use
        };
        total += data.len();
        if total > limit.max {
            return Err(limit.exceeded(total as u64));
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(data),
            (Some(head), None) => {
                let capacity = declared.map_or(total, |d| d as usize).max(total);
                let mut b = BytesMut::with_capacity(capacity);
                b.extend_from_slice(head);
                b.extend_from_slice(&data);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
}

//! Request-size limits and body reading.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use drasi_store_protocol::{ErrorCode, Limits, RequestTarget};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// The bytes of request and answer bodies the server holds at once
/// (`--max-inflight-body-bytes`): one permit per byte. Requests reserve
/// before they are read, answers before their values are copied, and both
/// hold the room until the request is answered or the answer sent; so many
/// small requests for large answers cannot add up past the budget.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        // The semaphore counts at most `u32::MAX` permits per acquire.
        let total = total.clamp(1, u32::MAX as usize);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Reserves room for a body of `len` bytes (the declared length, or
    /// the most it may be), or refuses at once: waiting would let slow
    /// clients queue without bound.
    pub fn reserve(&self, len: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = len.clamp(1, self.total) as u32;
        self.permits.clone().try_acquire_many_owned(n).map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the server already holds its limit of {} bytes of request and answer \
                     bodies (--max-inflight-body-bytes); retry later",
                    self.total
                ),
            )
        })
    }
}

/// The room one answer holds in the [`BodyBudget`], grown as it is built.
#[derive(Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl Held {
    /// Room for `len` more bytes, or `503 unavailable` when the budget is
    /// spent.
    pub fn take(&mut self, budget: &BodyBudget, len: usize) -> Result<(), ApiError> {
        let permit = budget.reserve(len)?;
        match &mut self.0 {
            Some(held) => held.merge(permit),
            None => self.0 = Some(permit),
        }
        Ok(())
    }

    /// The answer body. The room is tied to the bytes themselves, not to
    /// the body: hyper drops a body once its last frame is queued, but a
    /// slow reader keeps the bytes in the connection's write queue until
    /// they are sent.
    pub fn body(self, bytes: Vec<u8>) -> Body {
        Body::from(Bytes::from_owner(Budgeted {
            data: bytes,
            _held: self,
        }))
    }
}

struct Budgeted {
    data: Vec<u8>,
    _held: Held,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// A request body, with its share of the [`BodyBudget`] held until the
/// request is answered.
pub struct ReadBody {
    pub bytes: Bytes,
    pub permit: OwnedSemaphorePermit,
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
    budget: &BodyBudget,
) -> Result<ReadBody, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit.max as u64
    {
        return Err(limit.exceeded(Some(len)));
    }
    // Reserved before reading, for the whole body: a chunked body without
    // a length reserves the most it may be.
    let permit = budget.reserve(declared.map_or(limit.max, |len| len as usize))?;
    let read = Limited::new(body, limit.max).collect();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => Ok(ReadBody {
            bytes: collected.to_bytes(),
            permit,
        }),
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

//! Handlers of the write-ahead log routes (`/v1/wal/...`, docs/wal.md).
//! Every input is checked before the writer sees it, so a bad request
//! changes nothing. Bodies and answers count against the same memory
//! budget (`--max-inflight-body-bytes`) as the state store routes, and a
//! `read_from` answer is one page of at most `--max-response-bytes`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::routes::OCTET_STREAM;
use drasi_store_protocol::wal::{
    APPEND_ID_PARAM, AppendResponse, FROM_PARAM, UP_TO_PARAM, WalConfig, WalQuery, WalQueryError,
    parse_wal_query,
};
use drasi_store_protocol::{CountResponse, ErrorCode};

use super::SharedState;
use super::errors::ApiError;
use super::handlers::{blocking, json, raw_target};
use super::limits::{BodyLimit, Held, read_body};
use crate::engine::wal::WalOp;

type ApiResult = Result<Response, ApiError>;

/// The largest JSON body a route here accepts (a register config).
const MAX_CONFIG_BYTES: usize = 4096;

impl From<WalQueryError> for ApiError {
    fn from(e: WalQueryError) -> Self {
        ApiError::new(ErrorCode::InvalidQuery, e.to_string())
    }
}

/// The WAL query, from the query string or, when a long source id made it
/// too long for a URI, from the target header (as the state store routes
/// carry long keys).
fn query(
    uri: &Uri,
    headers: &HeaderMap,
    allowed: &[&'static str],
    required: &[&'static str],
    state: &SharedState,
) -> Result<WalQuery, ApiError> {
    let q = parse_wal_query(raw_target(uri, headers)?, allowed, required)?;
    let max = state.limits.max_key_bytes;
    if q.source.len() > max {
        return Err(ApiError::new(
            ErrorCode::KeyTooLarge,
            format!(
                "source_id is {} bytes, more than the limit of {max}",
                q.source.len()
            ),
        ));
    }
    Ok(q)
}

pub async fn register(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let q = query(&uri, &headers, &[], &[], &state)?;
    let limit = BodyLimit {
        max: MAX_CONFIG_BYTES,
        code: ErrorCode::BodyTooLarge,
        what: "WAL config",
    };
    let body = read_body(
        body,
        &headers,
        limit,
        state.body_timeout,
        &state.body_budget,
    )
    .await?;
    let config: WalConfig = serde_json::from_slice(&body.bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedBody,
            format!("expected a JSON WAL config {{\"maxEvents\", \"capacityPolicy\"}}: {e}"),
        )
    })?;
    drop(body);
    config.validate().map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedBody,
            format!("invalid WAL config for source '{}': {e}", q.source),
        )
    })?;
    state
        .engine
        .wal_write(WalOp::Register {
            source: q.source,
            config,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn append(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let q = query(&uri, &headers, &[APPEND_ID_PARAM], &[], &state)?;
    let event = read_body(
        body,
        &headers,
        BodyLimit::value(&state.limits),
        state.body_timeout,
        &state.body_budget,
    )
    .await?;
    let sequence = state
        .engine
        .wal_write(WalOp::Append {
            source: q.source,
            append_id: q.append_id,
            event: event.bytes,
        })
        .await?;
    // The event's room in the budget is held until its commit.
    drop(event.permit);
    Ok(json(&AppendResponse { sequence }))
}

/// One page of `read_from`: at most `--max-response-bytes` of frame, each
/// event charged to the memory budget before it is copied; the frame says
/// where the next page starts.
pub async fn events(State(state): State<SharedState>, uri: Uri, headers: HeaderMap) -> ApiResult {
    let q = query(&uri, &headers, &[FROM_PARAM], &[FROM_PARAM], &state)?;
    let from = q.from.unwrap_or_default();
    let state2 = state.clone();
    let (frame, held) = blocking(move || {
        let mut held = Held::default();
        let frame =
            state2
                .engine
                .wal_read_page(&q.source, from, state2.max_response_bytes, |len| {
                    held.take(&state2.body_budget, len)
                })?;
        Ok((frame, held))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, OCTET_STREAM)], held.body(frame)).into_response())
}

pub async fn prune(State(state): State<SharedState>, uri: Uri, headers: HeaderMap) -> ApiResult {
    let q = query(&uri, &headers, &[UP_TO_PARAM], &[UP_TO_PARAM], &state)?;
    let count = state
        .engine
        .wal_write(WalOp::Prune {
            source: q.source,
            up_to: q.up_to.unwrap_or_default(),
        })
        .await?;
    Ok(json(&CountResponse { count }))
}

pub async fn info(State(state): State<SharedState>, uri: Uri, headers: HeaderMap) -> ApiResult {
    let q = query(&uri, &headers, &[], &[], &state)?;
    Ok(json(&state.engine.wal_info(&q.source)?))
}

pub async fn delete(State(state): State<SharedState>, uri: Uri, headers: HeaderMap) -> ApiResult {
    let q = query(&uri, &headers, &[], &[], &state)?;
    state
        .engine
        .wal_write(WalOp::Delete { source: q.source })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

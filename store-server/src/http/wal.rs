//! Handlers of the write-ahead log routes (`/v1/wal/...`, docs/wal.md).
//! Every input is checked before the writer sees it, so a bad request
//! changes nothing.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::routes::{JSON, OCTET_STREAM};
use drasi_store_protocol::wal::{
    APPEND_ID_PARAM, AppendResponse, EventsFrame, FROM_PARAM, UP_TO_PARAM, WalConfig, WalQuery,
    WalQueryError, parse_wal_query,
};
use drasi_store_protocol::{CountResponse, ErrorCode};
use serde::Serialize;

use super::SharedState;
use super::errors::ApiError;
use super::limits::{BodyLimit, read_body};
use crate::engine::wal::WalOp;

type ApiResult = Result<Response, ApiError>;

/// The largest JSON body a route here accepts (a register config).
const MAX_CONFIG_BYTES: usize = 4096;

impl From<WalQueryError> for ApiError {
    fn from(e: WalQueryError) -> Self {
        ApiError::new(ErrorCode::InvalidQuery, e.to_string())
    }
}

fn query(
    uri: &Uri,
    allowed: &[&'static str],
    required: &[&'static str],
    state: &SharedState,
) -> Result<WalQuery, ApiError> {
    let q = parse_wal_query(uri.query(), allowed, required)?;
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

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(e) => {
            ApiError::new(ErrorCode::Internal, format!("encoding response: {e}")).into_response()
        }
    }
}

pub async fn register(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let q = query(&uri, &[], &[], &state)?;
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
    let q = query(&uri, &[APPEND_ID_PARAM], &[], &state)?;
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
    // The event's room in the budget is held until it is committed.
    drop(event.permit);
    Ok(json(&AppendResponse { sequence }))
}

pub async fn events(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let q = query(&uri, &[FROM_PARAM], &[FROM_PARAM], &state)?;
    let from = q.from.unwrap_or_default();
    let engine = state.engine.clone();
    // A log holds up to max_events events: scan and encode off the executor.
    let frame = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let (oldest, events) = engine.wal_read_from(&q.source, from)?;
        Ok(EventsFrame { oldest, events }.encode())
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("read task failed: {e}")))??;
    Ok(([(header::CONTENT_TYPE, OCTET_STREAM)], frame).into_response())
}

pub async fn prune(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let q = query(&uri, &[UP_TO_PARAM], &[UP_TO_PARAM], &state)?;
    let count = state
        .engine
        .wal_write(WalOp::Prune {
            source: q.source,
            up_to: q.up_to.unwrap_or_default(),
        })
        .await?;
    Ok(json(&CountResponse { count }))
}

pub async fn info(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let q = query(&uri, &[], &[], &state)?;
    Ok(json(&state.engine.wal_info(&q.source)?))
}

pub async fn delete(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let q = query(&uri, &[], &[], &state)?;
    state
        .engine
        .wal_write(WalOp::Delete { source: q.source })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

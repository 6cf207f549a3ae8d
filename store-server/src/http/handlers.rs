//! One handler per route. Each parses its target with the strict protocol
//! codec, checks limits before touching storage, and maps results to the
//! documented answers.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::routes::{JSON, KEY_NOT_FOUND_HEADER, OCTET_STREAM};
use drasi_store_protocol::{
    CountResponse, DeleteResponse, ErrorCode, KeyList, RequestTarget, StoreInfo, decode_entries,
    decode_keys, encode_entries, parse_query,
};
use serde::Serialize;

use super::SharedState;
use super::errors::ApiError;
use super::limits::{BodyLimit, check_target, read_body};
use super::openapi::OPENAPI_JSON;

type ApiResult = Result<Response, ApiError>;

fn target(uri: &Uri, with_key: bool, state: &SharedState) -> Result<RequestTarget, ApiError> {
    let target = parse_query(uri.query(), with_key)?;
    check_target(&target, &state.limits)?;
    Ok(target)
}

/// `parse_query(.., true)` guarantees the key.
fn key_of(target: &RequestTarget) -> &str {
    target.key.as_deref().unwrap_or_default()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(e) => {
            ApiError::new(ErrorCode::Internal, format!("encoding response: {e}")).into_response()
        }
    }
}

fn octets(body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, OCTET_STREAM)], body.into()).into_response()
}

/// Runs a blocking read (a partition scan or a big batch) off the executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("read task failed: {e}")))?
}

pub async fn kv_get(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let t = target(&uri, true, &state)?;
    match state.engine.get(&t.store, key_of(&t))? {
        Some(value) => Ok(octets(value)),
        None => Err(ApiError::key_not_found()),
    }
}

/// `contains_key`: like GET without reading the value; absence is a 404
/// carrying the key-not-found header, since HEAD answers have no body.
pub async fn kv_head(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let t = target(&uri, true, &state)?;
    if state.engine.contains_key(&t.store, key_of(&t))? {
        Ok(StatusCode::OK.into_response())
    } else {
        Ok((StatusCode::NOT_FOUND, [(KEY_NOT_FOUND_HEADER, "true")]).into_response())
    }
}

pub async fn kv_put(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, true, &state)?;
    let value = read_body(
        body,
        &headers,
        BodyLimit::value(&state.limits),
        state.body_timeout,
    )
    .await?;
    state.engine.set(&t.store, key_of(&t), value).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn kv_delete(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let t = target(&uri, true, &state)?;
    let existed = state.engine.delete(&t.store, key_of(&t)).await?;
    Ok(json(&DeleteResponse { existed }))
}

pub async fn get_many(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, false, &state)?;
    let frame = read_body(
        body,
        &headers,
        BodyLimit::batch(&state.limits),
        state.body_timeout,
    )
    .await?;
    let limits = state.limits;
    let engine = state.engine.clone();
    let answer = blocking(move || {
        let keys = decode_keys(&frame, &limits)?;
        let found = engine.get_many(&t.store, &keys)?;
        Ok(encode_entries(
            found.iter().map(|(k, v)| (*k, v.as_slice())),
        ))
    })
    .await?;
    Ok(octets(answer))
}

pub async fn set_many(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, false, &state)?;
    let frame = read_body(
        body,
        &headers,
        BodyLimit::batch(&state.limits),
        state.body_timeout,
    )
    .await?;
    // Validate everything before the writer sees it: a bad batch changes nothing.
    decode_entries(&frame, &state.limits)?;
    state.engine.set_many_frame(&t.store, frame).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_many(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, false, &state)?;
    let frame = read_body(
        body,
        &headers,
        BodyLimit::batch(&state.limits),
        state.body_timeout,
    )
    .await?;
    decode_keys(&frame, &state.limits)?;
    let count = state.engine.delete_many_frame(&t.store, frame).await?;
    Ok(json(&CountResponse { count }))
}

pub async fn store_info(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let t = target(&uri, false, &state)?;
    let (exists, key_count) = state.engine.store_info(&t.store)?;
    Ok(json(&StoreInfo { exists, key_count }))
}

pub async fn clear_store(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let t = target(&uri, false, &state)?;
    let count = state.engine.clear_store(&t.store).await?;
    Ok(json(&CountResponse { count }))
}

pub async fn list_keys(State(state): State<SharedState>, uri: Uri) -> ApiResult {
    let t = target(&uri, false, &state)?;
    let engine = state.engine.clone();
    let keys = blocking(move || Ok(engine.list_keys(&t.store)?)).await?;
    Ok(json(&KeyList { keys }))
}

pub async fn sync(State(state): State<SharedState>) -> ApiResult {
    state.engine.sync().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<SharedState>) -> Response {
    if state.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if state.engine.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "database writer is not healthy\n",
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<SharedState>) -> Response {
    let engine = state.engine.clone();
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render(&engine)).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            ApiError::new(ErrorCode::Internal, format!("rendering metrics: {e}")).into_response()
        }
    }
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, JSON)], OPENAPI_JSON).into_response()
}

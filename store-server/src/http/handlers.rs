//! One handler per route. Each parses its target with the strict protocol
//! codec, checks limits before touching storage, and maps results to the
//! documented answers.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drasi_store_protocol::routes::{JSON, KEY_NOT_FOUND_HEADER, OCTET_STREAM};
use drasi_store_protocol::{
    CountResponse, DeleteResponse, EntriesFrame, ErrorCode, KeyList, KeysFrame, RequestTarget,
    StoreInfo, decode_keys, encode_entries, parse_query,
};
use serde::Serialize;

use super::SharedState;
use super::errors::ApiError;
use super::limits::{BodyLimit, check_target, read_body};
use crate::engine::EngineHealth;

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

/// Reads a batch request's frame under the batch size limit and body timeout.
async fn read_batch(
    state: &SharedState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    read_body(
        body,
        headers,
        BodyLimit::batch(&state.limits),
        state.body_timeout,
    )
    .await
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
    let frame = read_batch(&state, &headers, body).await?;
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
    let frame = read_batch(&state, &headers, body).await?;
    // Decoded and validated once, here: a bad batch changes nothing, and the
    // writer applies the typed entries without looking at the frame again.
    let entries = EntriesFrame::decode(frame, &state.limits)?;
    state.engine.set_many(&t.store, entries).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_many(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, false, &state)?;
    let frame = read_batch(&state, &headers, body).await?;
    let keys = KeysFrame::decode(frame, &state.limits)?;
    let count = state.engine.delete_many(&t.store, keys).await?;
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

/// Liveness. Fails only on what a restart fixes: a writer thread that died
/// never comes back, so the kubelet must restart the container. Anything
/// the server recovers from by itself is left to `/readyz`, or a flapping
/// disk would turn into a restart loop.
pub async fn healthz(State(state): State<SharedState>) -> Response {
    probe(liveness(state.engine.health()))
}

/// Readiness: the server can serve writes right now.
pub async fn readyz(State(state): State<SharedState>) -> Response {
    probe(readiness(
        state.shutting_down.load(Ordering::Relaxed),
        state.engine.health(),
    ))
}

/// Why a probe fails: `reason` is stable for tooling, `message` is for
/// people reading `kubectl describe pod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct ProbeFailure {
    pub reason: &'static str,
    pub message: &'static str,
}

/// Every `reason` a probe can give, for the OpenAPI document.
pub(crate) const PROBE_REASONS: [&str; 4] = [
    "writer_dead",
    "commit_failing",
    "writer_stopped",
    "shutting_down",
];

const WRITER_DEAD: ProbeFailure = ProbeFailure {
    reason: "writer_dead",
    message: "the database writer thread stopped unexpectedly; writes fail until the server restarts",
};

pub(crate) fn liveness(engine: EngineHealth) -> Result<(), ProbeFailure> {
    match engine {
        EngineHealth::WriterDead => Err(WRITER_DEAD),
        // A failed commit is retried by the next one; a stopped writer
        // means shutdown is under way and the process exits by itself.
        EngineHealth::Healthy | EngineHealth::CommitFailing | EngineHealth::Stopped => Ok(()),
    }
}

pub(crate) fn readiness(shutting_down: bool, engine: EngineHealth) -> Result<(), ProbeFailure> {
    if shutting_down {
        return Err(ProbeFailure {
            reason: "shutting_down",
            message: "the server is shutting down",
        });
    }
    match engine {
        EngineHealth::Healthy => Ok(()),
        EngineHealth::CommitFailing => Err(ProbeFailure {
            reason: "commit_failing",
            message: "the last database commit failed; ready again after the next one succeeds",
        }),
        EngineHealth::Stopped => Err(ProbeFailure {
            reason: "writer_stopped",
            message: "the database writer has been stopped",
        }),
        EngineHealth::WriterDead => Err(WRITER_DEAD),
    }
}

#[derive(Serialize)]
struct ProbeBody {
    status: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    failure: Option<ProbeFailure>,
}

fn probe(result: Result<(), ProbeFailure>) -> Response {
    let (status, body) = match result {
        Ok(()) => (
            StatusCode::OK,
            ProbeBody {
                status: "ok",
                failure: None,
            },
        ),
        Err(failure) => (
            StatusCode::SERVICE_UNAVAILABLE,
            ProbeBody {
                status: "unavailable",
                failure: Some(failure),
            },
        ),
    };
    let mut response = json(&body);
    *response.status_mut() = status;
    response
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

pub async fn openapi(State(state): State<SharedState>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], state.openapi.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use drasi_store_protocol::Limits;

    use super::*;
    use crate::config::DurabilityMode;
    use crate::engine::{Engine, EngineError, EngineOptions};
    use crate::http::AppState;
    use crate::metrics::Metrics;

    fn state(dir: &tempfile::TempDir) -> SharedState {
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::open(
            &EngineOptions {
                path: dir.path().join("state.redb"),
                durability: DurabilityMode::Immediate,
                cache_bytes: 1 << 20,
            },
            metrics.clone(),
        )
        .unwrap();
        Arc::new(AppState {
            engine: Arc::new(engine),
            metrics,
            limits: Limits::default(),
            body_timeout: Duration::from_secs(5),
            tokens: None,
            shutting_down: AtomicBool::new(false),
            openapi: Bytes::new(),
        })
    }

    async fn answer(response: Response) -> (u16, serde_json::Value) {
        let status = response.status().as_u16();
        assert_eq!(response.headers()[header::CONTENT_TYPE], JSON);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_dead_writer_fails_liveness_and_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        let (status, body) = answer(healthz(State(state.clone())).await).await;
        assert_eq!((status, body), (200, serde_json::json!({"status": "ok"})));
        assert_eq!(answer(readyz(State(state.clone())).await).await.0, 200);

        state.engine.crash_writer();

        let (status, body) = answer(healthz(State(state.clone())).await).await;
        assert_eq!(status, 503);
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["reason"], "writer_dead");
        assert!(body["message"].as_str().unwrap().contains("restart"));
        let (status, body) = answer(readyz(State(state.clone())).await).await;
        assert_eq!((status, &body["reason"]), (503, &"writer_dead".into()));
        // And the store really is unwritable, which is why a restart is due.
        assert!(matches!(
            state
                .engine
                .set("s", "k", bytes::Bytes::from_static(b"v"))
                .await,
            Err(EngineError::Unavailable)
        ));
    }

    #[tokio::test]
    async fn a_failed_commit_only_affects_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        state.engine.mark_commit_failed();
        assert_eq!(answer(healthz(State(state.clone())).await).await.0, 200);
        let (status, body) = answer(readyz(State(state.clone())).await).await;
        assert_eq!((status, &body["reason"]), (503, &"commit_failing".into()));

        // The writer survives and the next successful commit heals it.
        state
            .engine
            .set("s", "k", bytes::Bytes::from_static(b"v"))
            .await
            .unwrap();
        assert_eq!(answer(readyz(State(state.clone())).await).await.0, 200);
    }

    #[tokio::test]
    async fn shutdown_is_not_a_liveness_failure() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir);
        state.shutting_down.store(true, Ordering::Relaxed);
        state.engine.shutdown().await.unwrap();
        assert_eq!(state.engine.health(), EngineHealth::Stopped);
        assert_eq!(answer(healthz(State(state.clone())).await).await.0, 200);
        let (status, body) = answer(readyz(State(state.clone())).await).await;
        assert_eq!((status, &body["reason"]), (503, &"shutting_down".into()));
    }

    #[test]
    fn probe_matrix() {
        use EngineHealth::*;
        for (health, live, ready) in [
            (Healthy, true, true),
            (CommitFailing, true, false),
            (Stopped, true, false),
            (WriterDead, false, false),
        ] {
            assert_eq!(liveness(health).is_ok(), live, "{health:?}");
            assert_eq!(readiness(false, health).is_ok(), ready, "{health:?}");
            assert!(readiness(true, health).is_err());
            for failure in [
                liveness(health),
                readiness(false, health),
                readiness(true, health),
            ]
            .into_iter()
            .filter_map(Result::err)
            {
                assert!(PROBE_REASONS.contains(&failure.reason), "{failure:?}");
            }
        }
    }
}

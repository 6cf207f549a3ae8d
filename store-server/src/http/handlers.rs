//! One handler per route. Each parses its target with the strict protocol
//! codec, checks limits before touching storage, and maps results to the
//! documented answers.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::routes::{JSON, KEY_NOT_FOUND_HEADER, OCTET_STREAM, TARGET_HEADER};
use drasi_store_protocol::{
    ClusterInfo, ClusterMember, ClusterRole, CountResponse, DeleteResponse, EntriesFrame,
    ErrorCode, KeyList, KeysFrame, RequestTarget, ServerInfo, StoreInfo, decode_keys, parse_query,
};
use serde::Serialize;

use super::SharedState;
use super::errors::ApiError;
use super::limits::{BodyLimit, Held, ReadBody, check_target, read_body};
use crate::engine::EngineHealth;
use crate::replication::NotReady;

type ApiResult = Result<Response, ApiError>;

/// The request's target, from the query string or, for targets too long
/// for a URI, from the target header; never both.
fn target(
    uri: &Uri,
    headers: &HeaderMap,
    with_key: bool,
    state: &SharedState,
) -> Result<RequestTarget, ApiError> {
    let target = parse_query(raw_target(uri, headers)?, with_key)?;
    check_target(&target, &state.limits)?;
    Ok(target)
}

/// The encoded target (query string) of a request: the URI's query, or
/// the target header that carries it when it is too long for a URI.
pub(super) fn raw_target<'a>(
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, ApiError> {
    Ok(match (uri.query(), headers.get(TARGET_HEADER)) {
        (Some(q), Some(_)) if !q.is_empty() => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("the target is given in both the query string and {TARGET_HEADER}"),
            ));
        }
        (_, Some(header)) => Some(header.to_str().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("{TARGET_HEADER} must be percent-encoded ASCII"),
            )
        })?),
        (query, None) => query,
    })
}

/// `parse_query(.., true)` guarantees the key.
fn key_of(target: &RequestTarget) -> &str {
    target.key.as_deref().unwrap_or_default()
}

pub(super) fn json<T: Serialize>(value: &T) -> Response {
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

/// How many blocking reads run at once. A read loads each value from redb
/// in full before it can ask the memory budget for room, so this bounds
/// what reads hold outside the budget: one value (at most
/// `--max-value-bytes`) per slot. Further reads wait their turn.
const READ_SLOTS: usize = 4;
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READ_SLOTS);

/// Runs a blocking read (a partition scan or a big batch) off the executor.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let slot = READS
        .acquire()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("read slots closed: {e}")))?;
    let result = tokio::task::spawn_blocking(f).await;
    drop(slot);
    result.map_err(|e| ApiError::new(ErrorCode::Internal, format!("read task failed: {e}")))?
}

/// Reads a batch request's frame under the batch size limit, the body
/// timeout and the in-flight body budget.
async fn read_batch(
    state: &SharedState,
    headers: &HeaderMap,
    body: Body,
) -> Result<ReadBody, ApiError> {
    read_body(
        body,
        headers,
        BodyLimit::batch(&state.limits),
        state.body_timeout,
        &state.body_budget,
    )
    .await
}

pub async fn kv_get(State(state): State<SharedState>, uri: Uri, headers: HeaderMap) -> ApiResult {
    let t = target(&uri, &headers, true, &state)?;
    let mut held = Held::default();
    let value = state.engine.get_admitted(&t.store, key_of(&t), |len| {
        held.take(&state.body_budget, len)
    })?;
    match value {
        Some(value) => Ok(octets(held.body(value))),
        None => Err(ApiError::key_not_found()),
    }
}

/// `contains_key`: like GET without reading the value; absence is a 404
/// carrying the key-not-found header, since HEAD answers have no body.
pub async fn kv_head(State(state): State<SharedState>, uri: Uri, headers: HeaderMap) -> ApiResult {
    let t = target(&uri, &headers, true, &state)?;
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
    let t = target(&uri, &headers, true, &state)?;
    let body = read_body(
        body,
        &headers,
        BodyLimit::value(&state.limits),
        state.body_timeout,
        &state.body_budget,
    )
    .await?;
    state.engine.set(&t.store, key_of(&t), body.bytes).await?;
    drop(body.permit);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn kv_delete(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let t = target(&uri, &headers, true, &state)?;
    let existed = state.engine.delete(&t.store, key_of(&t)).await?;
    Ok(json(&DeleteResponse { existed }))
}

pub async fn get_many(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, &headers, false, &state)?;
    let frame = read_batch(&state, &headers, body).await?;
    let limits = state.limits;
    let max_answer = state.max_response_bytes;
    let engine = state.engine.clone();
    let state2 = state.clone();
    let (answer, held) = blocking(move || {
        let keys = decode_keys(&frame.bytes, &limits)?;
        let mut held = Held::default();
        let answer = engine.get_many_frame(&t.store, &keys, max_answer, |len| {
            held.take(&state2.body_budget, len)
        })?;
        Ok((answer, held))
    })
    .await?;
    Ok(octets(held.body(answer)))
}

pub async fn set_many(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, &headers, false, &state)?;
    let frame = read_batch(&state, &headers, body).await?;
    // Decoded and validated once, here: a bad batch changes nothing, and the
    // writer applies the typed entries without looking at the frame again.
    let entries = EntriesFrame::decode(frame.bytes, &state.limits)?;
    state.engine.set_many(&t.store, entries).await?;
    drop(frame.permit);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_many(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = target(&uri, &headers, false, &state)?;
    let frame = read_batch(&state, &headers, body).await?;
    let keys = KeysFrame::decode(frame.bytes, &state.limits)?;
    let count = state.engine.delete_many(&t.store, keys).await?;
    drop(frame.permit);
    Ok(json(&CountResponse { count }))
}

pub async fn store_info(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let t = target(&uri, &headers, false, &state)?;
    let (exists, key_count) = state.engine.store_info(&t.store)?;
    Ok(json(&StoreInfo { exists, key_count }))
}

pub async fn clear_store(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let t = target(&uri, &headers, false, &state)?;
    let count = state.engine.clear_store(&t.store).await?;
    Ok(json(&CountResponse { count }))
}

pub async fn list_keys(
    State(state): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let t = target(&uri, &headers, false, &state)?;
    let state2 = state.clone();
    let (keys, mut held) = blocking(move || {
        let mut held = Held::default();
        let keys =
            state2
                .engine
                .list_keys_admitted(&t.store, state2.max_response_bytes, |len| {
                    held.take(&state2.body_budget, len)
                })?;
        Ok((keys, held))
    })
    .await?;
    let body = serde_json::to_vec(&KeyList { keys })
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("encoding response: {e}")))?;
    // On top of the list's room, which stays held until the answer is
    // sent: the count errs high, never low.
    held.take(&state.body_budget, body.len())?;
    Ok(([(header::CONTENT_TYPE, JSON)], held.body(body)).into_response())
}

pub async fn sync(State(state): State<SharedState>) -> ApiResult {
    state.engine.sync().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn info(State(state): State<SharedState>) -> Response {
    json(&ServerInfo {
        durability: state.durability,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// This node's view of the cluster; a single node answers as the leader of
/// a cluster of one, so tooling reads both the same way.
pub async fn cluster(State(state): State<SharedState>) -> Response {
    let info = match state.engine.replica() {
        Some(node) => node.cluster_info(),
        None => ClusterInfo {
            node_id: 0,
            role: ClusterRole::Leader,
            leader_id: Some(0),
            term: 0,
            commit_index: 0,
            applied_index: 0,
            members: vec![ClusterMember {
                id: 0,
                addr: String::new(),
                voter: true,
            }],
            lag: Default::default(),
        },
    };
    json(&info)
}

/// Hands leadership over before a planned restart of this node (the
/// operator calls it on a leader it is about to restart).
pub async fn step_down(State(state): State<SharedState>) -> ApiResult {
    let Some(node) = state.engine.replica() else {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this is a single-node store: there is no other node to hand leadership to",
        ));
    };
    Ok(json(&node.step_down().await?))
}

/// Liveness. Fails only on what a restart fixes: a writer thread that died
/// never comes back, so the kubelet must restart the container. Anything
/// the server recovers from by itself is left to `/readyz`, or a flapping
/// disk would turn into a restart loop.
pub async fn healthz(State(state): State<SharedState>) -> Response {
    probe(liveness(state.engine.health()).and_then(|()| {
        match state.engine.replica().map(|node| node.readiness()) {
            Some(Err(NotReady::Stopped)) => Err(RAFT_STOPPED),
            // No leader or a lagging node is not broken: restarting it
            // would not help, and would make a quorum harder to reach.
            _ => Ok(()),
        }
    }))
}

/// Readiness: the server can serve writes right now.
pub async fn readyz(State(state): State<SharedState>) -> Response {
    probe(
        readiness(
            state.shutting_down.load(Ordering::Relaxed),
            state.engine.health(),
        )
        .and_then(
            |()| match state.engine.replica().map(|node| node.readiness()) {
                None | Some(Ok(())) => Ok(()),
                Some(Err(NotReady::Stopped)) => Err(RAFT_STOPPED),
                Some(Err(NotReady::NoLeader)) => Err(ProbeFailure {
                    reason: "no_leader",
                    message: "this replica knows no leader (an election is under way, or it \
                          cannot reach a majority of the replicas)",
                }),
                Some(Err(NotReady::NoQuorum)) => Err(ProbeFailure {
                    reason: "no_quorum",
                    message: "this replica leads, but no majority of the replicas has \
                          acknowledged it lately (it may be cut off from them)",
                }),
                Some(Err(NotReady::CatchingUp)) => Err(ProbeFailure {
                    reason: "catching_up",
                    message: "this replica is applying the log (or a snapshot) it received \
                          from the leader",
                }),
            },
        ),
    )
}

const RAFT_STOPPED: ProbeFailure = ProbeFailure {
    reason: "raft_stopped",
    message: "replication stopped on a storage error; the server must be restarted",
};

/// Why a probe fails: `reason` is stable for tooling, `message` is for
/// people reading `kubectl describe pod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct ProbeFailure {
    pub reason: &'static str,
    pub message: &'static str,
}

/// Every `reason` a probe can give, for the OpenAPI document.
pub(crate) const PROBE_REASONS: [&str; 9] = [
    "raft_stopped",
    "no_leader",
    "catching_up",
    "writer_dead",
    "commit_failing",
    "database_reopening",
    "database_reopen_stuck",
    "writer_stopped",
    "shutting_down",
];

const WRITER_DEAD: ProbeFailure = ProbeFailure {
    reason: "writer_dead",
    message: "the database writer thread stopped unexpectedly; writes fail until the server restarts",
};

const REOPEN_STUCK: ProbeFailure = ProbeFailure {
    reason: "database_reopen_stuck",
    message: "the database could not be reopened after an I/O error (e.g. a full disk) \
              within the recovery timeout; restart the server once the cause is fixed",
};

pub(crate) fn liveness(engine: EngineHealth) -> Result<(), ProbeFailure> {
    match engine {
        EngineHealth::WriterDead => Err(WRITER_DEAD),
        EngineHealth::RecoveryStuck => Err(REOPEN_STUCK),
        // A failed commit is retried by the next one, a wedged database is
        // being reopened (until the recovery timeout); a stopped writer
        // means shutdown is under way and the process exits by itself.
        EngineHealth::Healthy
        | EngineHealth::CommitFailing
        | EngineHealth::Recovering
        | EngineHealth::Stopped => Ok(()),
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
        EngineHealth::Recovering => Err(ProbeFailure {
            reason: "database_reopening",
            message: "an I/O error (e.g. a full disk) closed the database; it is being reopened",
        }),
        EngineHealth::RecoveryStuck => Err(REOPEN_STUCK),
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
                recovery_timeout: Duration::from_secs(60),
                journal: true,
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
            openapi: bytes::Bytes::new(),
            spool_dir: dir.path().to_path_buf(),
            durability: drasi_store_protocol::Durability::Immediate,
            max_response_bytes: 1 << 30,
            body_budget: crate::http::limits::BodyBudget::new(1 << 30),
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
            (Recovering, true, false),
            (RecoveryStuck, false, false),
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

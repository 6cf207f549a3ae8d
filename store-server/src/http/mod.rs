//! The HTTP API (see docs/protocol.md): routing, auth, metrics per request.

pub mod auth;
pub mod errors;
mod handlers;
pub mod limits;
pub mod openapi;
mod wal;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use drasi_store_protocol::routes;
use drasi_store_protocol::{ErrorCode, Limits};

use crate::engine::Engine;
use crate::metrics::Metrics;
use auth::TokenSet;
use errors::ApiError;

pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub body_timeout: Duration,
    /// `None` only with `--insecure-no-auth`.
    pub tokens: Option<Arc<TokenSet>>,
    /// Set when shutdown starts, so `/readyz` turns away new traffic.
    pub shutting_down: AtomicBool,
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    let data = Router::new()
        .route(
            routes::KV,
            get(handlers::kv_get)
                .head(handlers::kv_head)
                .put(handlers::kv_put)
                .delete(handlers::kv_delete),
        )
        .route(routes::GET_MANY, post(handlers::get_many))
        .route(routes::SET_MANY, post(handlers::set_many))
        .route(routes::DELETE_MANY, post(handlers::delete_many))
        .route(
            routes::STORE,
            get(handlers::store_info).delete(handlers::clear_store),
        )
        .route(routes::STORE_KEYS, get(handlers::list_keys))
        .route(routes::SYNC, post(handlers::sync))
        .route(routes::WAL_REGISTER, put(wal::register))
        .route(routes::WAL_APPEND, post(wal::append))
        .route(routes::WAL_EVENTS, get(wal::events))
        .route(routes::WAL_PRUNE, post(wal::prune))
        .route(routes::WAL_INFO, get(wal::info))
        .route(routes::WAL, delete(wal::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let public = Router::new()
        .route(routes::HEALTHZ, get(handlers::healthz))
        .route(routes::READYZ, get(handlers::readyz))
        .route(routes::METRICS, get(handlers::metrics))
        .route(routes::OPENAPI, get(handlers::openapi));
    data.merge(public)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn require_token(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if let Some(tokens) = &state.tokens {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| auth::bearer(v.as_bytes()))
            .is_some_and(|t| tokens.verify(t));
        if !ok {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!(
            "no route for {} {}",
            req.method(),
            truncated(req.uri().path())
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            truncated(req.uri().path())
        ),
    )
}

fn truncated(path: &str) -> &str {
    match path.char_indices().nth(128) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

/// Records `requests_total` and `request_duration_seconds`.
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let operation = operation_name(req.method(), req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .observe_request(operation, response.status().as_u16(), started.elapsed());
    response
}

/// The metric label of a request: the StateStoreProvider operation it
/// serves, so dashboards read like the trait.
fn operation_name(method: &Method, path: &str) -> &'static str {
    match (path, method.as_str()) {
        (routes::KV, "GET") => "get",
        (routes::KV, "PUT") => "set",
        (routes::KV, "DELETE") => "delete",
        (routes::KV, "HEAD") => "contains_key",
        (routes::GET_MANY, _) => "get_many",
        (routes::SET_MANY, _) => "set_many",
        (routes::DELETE_MANY, _) => "delete_many",
        (routes::STORE, "GET") => "store_info",
        (routes::STORE, "DELETE") => "clear_store",
        (routes::STORE_KEYS, _) => "list_keys",
        (routes::SYNC, _) => "sync",
        (routes::WAL_REGISTER, _) => "wal_register",
        (routes::WAL_APPEND, _) => "wal_append",
        (routes::WAL_EVENTS, _) => "wal_read_from",
        (routes::WAL_PRUNE, _) => "wal_prune_up_to",
        (routes::WAL_INFO, _) => "wal_info",
        (routes::WAL, _) => "wal_delete",
        (routes::OPENAPI, _) => "openapi",
        (routes::HEALTHZ, _) => "healthz",
        (routes::READYZ, _) => "readyz",
        (routes::METRICS, _) => "metrics",
        _ => "other",
    }
}

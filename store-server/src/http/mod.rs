//! The HTTP API (see docs/protocol.md): routing from the protocol's
//! endpoint table, auth, metrics per request.

mod admin;
pub mod auth;
mod batch;
pub mod errors;
mod handlers;
pub mod limits;
pub mod openapi;
mod wal;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use drasi_store_protocol::endpoints::{self, Endpoint, Method, Operation};
use drasi_store_protocol::routes::DURABILITY_HEADER;
use drasi_store_protocol::{Durability, ErrorCode, Limits};

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
    /// The OpenAPI document, generated once from the endpoint table.
    pub openapi: bytes::Bytes,
    /// Where `POST /v1/admin/import` spools an upload before verifying it:
    /// the data dir (`--data-dir`), which has room for the database.
    pub spool_dir: PathBuf,
    /// `--durability`, advertised on every answer and by `/v1/info`.
    pub durability: Durability,
    /// `--max-response-bytes`: the largest `get_many` answer.
    pub max_response_bytes: usize,
    /// `--max-inflight-body-bytes`.
    pub body_budget: limits::BodyBudget,
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    let mut protected = Router::new();
    let mut public = Router::new();
    for e in endpoints::ALL {
        let route = method_router(e);
        if e.auth {
            protected = protected.route(e.path, route);
        } else {
            public = public.route(e.path, route);
        }
    }
    // Layers run outside in: the token is checked before the read barrier.
    let protected = protected
        .route_layer(middleware::from_fn_with_state(state.clone(), read_barrier))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    protected
        .merge(public)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The handler of one endpoint. Routes on the same path merge, so the
/// router gets one method router per path, as if written by hand.
fn method_router(e: &Endpoint) -> MethodRouter<SharedState> {
    let filter = match e.method {
        Method::Get => MethodFilter::GET,
        Method::Head => MethodFilter::HEAD,
        Method::Put => MethodFilter::PUT,
        Method::Post => MethodFilter::POST,
        Method::Delete => MethodFilter::DELETE,
    };
    match e.operation {
        Operation::Get => on(filter, handlers::kv_get),
        Operation::ContainsKey => on(filter, handlers::kv_head),
        Operation::Set => on(filter, handlers::kv_put),
        Operation::Delete => on(filter, handlers::kv_delete),
        Operation::GetMany => on(filter, handlers::get_many),
        Operation::SetMany => on(filter, handlers::set_many),
        Operation::DeleteMany => on(filter, handlers::delete_many),
        Operation::StoreInfo => on(filter, handlers::store_info),
        Operation::ClearStore => on(filter, handlers::clear_store),
        Operation::ListKeys => on(filter, handlers::list_keys),
        Operation::Sync => on(filter, handlers::sync),
        Operation::Snapshot => on(filter, admin::snapshot),
        Operation::Import => on(filter, admin::import),
        Operation::Info => on(filter, handlers::info),
        Operation::Cluster => on(filter, handlers::cluster),
        Operation::StepDown => on(filter, handlers::step_down),
        Operation::Batch => on(filter, batch::batch),
        Operation::OpenApi => on(filter, handlers::openapi),
        Operation::Healthz => on(filter, handlers::healthz),
        Operation::Readyz => on(filter, handlers::readyz),
        Operation::Metrics => on(filter, handlers::metrics),
        Operation::WalRegister => on(filter, wal::register),
        Operation::WalAppend => on(filter, wal::append),
        Operation::WalReadFrom => on(filter, wal::events),
        Operation::WalPruneUpTo => on(filter, wal::prune),
        Operation::WalInfo => on(filter, wal::info),
        Operation::WalDelete => on(filter, wal::delete),
    }
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

/// On a replicated store, a request that reads waits until this node has
/// applied everything committed before it arrived (a read index confirmed
/// by a majority), so reads on any node are linearizable. Writes need no
/// barrier: they are answered after their own commit.
async fn read_barrier(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if state.engine.replica().is_some() {
        let reads = Endpoint::find(req.method().as_str(), req.uri().path()).is_some_and(|e| {
            matches!(
                e.operation,
                Operation::Get
                    | Operation::ContainsKey
                    | Operation::GetMany
                    | Operation::StoreInfo
                    | Operation::ListKeys
                    | Operation::Snapshot
                    | Operation::Batch
                    | Operation::WalReadFrom
                    | Operation::WalInfo
            )
        });
        if reads && let Err(err) = state.engine.read_barrier().await {
            return ApiError::from(err).into_response();
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

/// Records `requests_total` and `request_duration_seconds`, labelled with
/// the endpoint's operation (the StateStoreProvider method where there is
/// one, so dashboards read like the trait), or `other` for requests that
/// match no endpoint.
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let operation = Endpoint::find(req.method().as_str(), req.uri().path())
        .map_or("other", |e| e.operation.as_str());
    let started = Instant::now();
    let mut response = next.run(req).await;
    state
        .metrics
        .observe_request(operation, response.status().as_u16(), started.elapsed());
    // Every answer says how durable an acknowledgement is, so a client
    // learns it from whatever call it makes first.
    response.headers_mut().insert(
        DURABILITY_HEADER,
        header::HeaderValue::from_static(state.durability.as_str()),
    );
    response
}

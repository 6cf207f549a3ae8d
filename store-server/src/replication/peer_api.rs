//! The peer listener (`--peer-listen`, port `peer`): openraft's RPCs and
//! the calls followers forward to the leader. Only peers holding the peer
//! token get in; the client port never serves these routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::LogPayload;
use super::network::routes;
use super::node::ReplicaNode;
use crate::http::auth::{self, TokenSet};
use crate::server::{ConnectionOptions, accept_loop};

/// Largest peer request: an append carries up to `max_payload_entries`
/// groups, each bounded by the proposer's group size (plus JSON and base64
/// overhead); a snapshot chunk is a few MiB.
const MAX_PEER_BODY_BYTES: usize = 512 * 1024 * 1024;

struct PeerState {
    node: Arc<ReplicaNode>,
    tokens: Option<Arc<TokenSet>>,
}

/// Connection limits of the peer port: a handful of peers keep a few
/// pooled connections each, so these are generous, but a stranger on the
/// port can neither hold sockets open nor stall the accept loop.
fn connection_options() -> ConnectionOptions {
    ConnectionOptions {
        first_request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_secs(5),
        max_connections: 256,
        max_header_bytes: 64 * 1024,
    }
}

/// Binds the peer listener and serves it (over mutual TLS with `tls`)
/// until `stop` turns true.
pub(crate) async fn serve(
    addr: SocketAddr,
    node: Arc<ReplicaNode>,
    tokens: Option<Arc<TokenSet>>,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the peer listener {addr}"))?;
    let local = listener.local_addr()?;
    let state = Arc::new(PeerState { node, tokens });
    let app = Router::new()
        .route(routes::APPEND, post(append))
        .route(routes::VOTE, post(vote))
        .route(routes::SNAPSHOT, post(snapshot))
        .route(routes::FORWARD_WRITE, post(forward_write))
        .route(routes::FORWARD_READ_INDEX, post(forward_read_index))
        .route(routes::CAMPAIGN, post(campaign))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_peer_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_PEER_BODY_BYTES))
        .with_state(state);
    // The client port's accept loop: the same connection limits, timeouts
    // and TLS handshake handling.
    let task = tokio::spawn(accept_loop(listener, app, tls, stop, connection_options()));
    Ok((local, task))
}

async fn require_peer_token(
    State(state): State<Arc<PeerState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(tokens) = &state.tokens {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| auth::bearer(v.as_bytes()))
            .is_some_and(|t| tokens.verify(t));
        if !ok {
            return (StatusCode::UNAUTHORIZED, "a valid peer token is required").into_response();
        }
    }
    next.run(req).await
}

#[expect(
    clippy::result_large_err,
    reason = "the error is the answer itself, returned at once"
)]
fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("malformed peer request: {e}"),
        )
            .into_response()
    })
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(s): State<Arc<PeerState>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => json(&s.node.raft.append_entries(rpc).await),
        Err(r) => r,
    }
}

async fn vote(State(s): State<Arc<PeerState>>, body: Bytes) -> Response {
    let rpc: openraft::raft::VoteRequest<super::NodeId> = match decode(&body) {
        Ok(rpc) => rpc,
        Err(r) => return r,
    };
    if !s.node.may_vote(rpc.last_log_id.map(|id| id.index)) {
        // An error rather than a refusal: the candidate counts no vote
        // from this node and learns nothing false about its term.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this node started with an empty log and votes again once it has caught up",
        )
            .into_response();
    }
    json(&s.node.raft.vote(rpc).await)
}

async fn snapshot(State(s): State<Arc<PeerState>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => json(&s.node.raft.install_snapshot(rpc).await),
        Err(r) => r,
    }
}

async fn forward_write(State(s): State<Arc<PeerState>>, body: Bytes) -> Response {
    let payload: LogPayload = match decode(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // A forwarded group must decode exactly as the state machine will
    // decode it: a peer bug must not become a log entry every node fails on.
    if let Err(e) = crate::engine::journal::decode(payload.group.clone().into()) {
        return (StatusCode::BAD_REQUEST, format!("malformed group: {e}")).into_response();
    }
    json(&s.node.propose_forwarded(payload).await)
}

async fn forward_read_index(State(s): State<Arc<PeerState>>) -> Response {
    json(&s.node.read_index().await)
}

async fn campaign(State(s): State<Arc<PeerState>>) -> Response {
    json(&s.node.campaign().await)
}

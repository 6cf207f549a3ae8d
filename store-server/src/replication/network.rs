//! The peer client: openraft's RPCs (and the forwarded client calls of
//! [`super::node`]) as JSON over HTTP to the other nodes' peer listeners
//! ([`super::peer_api`]), each carrying the peer token.

use std::sync::Arc;
use std::time::Duration;

use drasi_store_protocol::error::error_chain;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, TypeConfig};
use crate::http::auth::TokenSet;

/// Peer routes, served by [`super::peer_api`].
pub(crate) mod routes {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const SNAPSHOT: &str = "/raft/snapshot";
    pub const FORWARD_WRITE: &str = "/raft/forward/write";
    pub const FORWARD_READ_INDEX: &str = "/raft/forward/read-index";
    /// A leader handing over asks its successor to run for election now.
    pub const CAMPAIGN: &str = "/raft/campaign";
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerCallError {
    /// Nothing reached the peer (refused, unresolvable, connect timeout):
    /// it is down or partitioned away.
    #[error("peer {addr} is unreachable: {detail}")]
    Unreachable { addr: String, detail: String },
    /// The peer answered with a client error (4xx: its peer token, a
    /// limit, or a body it could not read): it refused the request before
    /// acting on it.
    #[error("peer {addr} refused {route}: {detail}")]
    Refused {
        addr: String,
        route: &'static str,
        detail: String,
    },
    /// The request may or may not have reached it.
    #[error("peer call to {addr}{route} failed: {detail}")]
    Network {
        addr: String,
        route: &'static str,
        detail: String,
    },
}

/// An HTTP client for the peer port, shared by every peer connection.
#[derive(Clone)]
pub(crate) struct PeerClient {
    http: reqwest::Client,
    /// `None` with `--insecure-no-auth`, or with mutual TLS alone.
    token: Option<Arc<TokenSet>>,
    /// `https` with mutual TLS, else `http`.
    scheme: &'static str,
}

impl PeerClient {
    pub(crate) fn new(
        token: Option<Arc<TokenSet>>,
        local_address: Option<std::net::IpAddr>,
        tls: Option<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .local_address(local_address)
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            // Peer addresses are in-cluster names: never through a proxy.
            .no_proxy();
        let scheme = match tls {
            Some(config) => {
                builder = builder.use_preconfigured_tls(config);
                "https"
            }
            None => "http",
        };
        Ok(PeerClient {
            http: builder.build()?,
            token,
            scheme,
        })
    }

    /// POSTs `body` as JSON to `route` on `addr` and decodes the JSON answer.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        route: &'static str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let network = |detail: String| PeerCallError::Network {
            addr: addr.to_string(),
            route,
            detail,
        };
        let body = serde_json::to_vec(body).map_err(|e| network(format!("encoding: {e}")))?;
        let mut request = self
            .http
            .post(format!("{}://{addr}{route}", self.scheme))
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = self.token.as_ref().and_then(|t| t.first()) {
            request = request.bearer_auth(String::from_utf8_lossy(&token));
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                PeerCallError::Unreachable {
                    addr: addr.to_string(),
                    detail: error_chain(&e),
                }
            } else {
                network(error_chain(&e))
            }
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| network(format!("reading the answer: {}", error_chain(&e))))?;
        if !status.is_success() {
            let detail = format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(256)])
            );
            // The peer routes answer a refusal of their own (not the
            // leader any more, not committed in time) inside a 200; a 4xx
            // comes from the layers in front of them, before anything ran.
            return Err(if status.is_client_error() {
                PeerCallError::Refused {
                    addr: addr.to_string(),
                    route,
                    detail,
                }
            } else {
                network(detail)
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| network(format!("decoding the answer: {e}")))
    }
}

/// openraft's network factory: one [`PeerConnection`] per target.
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

pub(crate) struct PeerConnection {
    client: PeerClient,
    target: NodeId,
    addr: String,
}

impl PeerConnection {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        route: &'static str,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .call(&self.addr, route, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerCallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                PeerCallError::Network { .. } | PeerCallError::Refused { .. } => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(routes::APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(routes::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(routes::VOTE, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that answers 401 on one route and 503 on another.
    async fn peer() -> String {
        use axum::http::StatusCode;
        let app = axum::Router::new()
            .route(
                "/refused",
                axum::routing::post(|| async { StatusCode::UNAUTHORIZED }),
            )
            .route(
                "/failing",
                axum::routing::post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// A 4xx means the peer refused before acting (a forwarded write was
    /// not applied and may be retried as such); a 5xx leaves the outcome
    /// open; no listener means nothing was sent.
    #[tokio::test]
    async fn answers_are_classified_by_what_they_say_about_the_outcome() {
        let addr = peer().await;
        let client = PeerClient::new(None, None, None).unwrap();
        let timeout = Duration::from_secs(5);
        let refused = client
            .call::<_, ()>(&addr, "/refused", &(), timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, PeerCallError::Refused { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("401"), "{refused}");
        let failing = client
            .call::<_, ()>(&addr, "/failing", &(), timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(failing, PeerCallError::Network { .. }),
            "{failing}"
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let unreachable = client
            .call::<_, ()>(&closed, "/refused", &(), timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(unreachable, PeerCallError::Unreachable { .. }),
            "{unreachable}"
        );
    }
}

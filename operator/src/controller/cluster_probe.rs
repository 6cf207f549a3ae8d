//! The replication probe: `GET /v1/cluster` on every replica of a
//! replicated store, over the client port, through each pod's stable DNS
//! name under the peers Service (`<name>-<i>.<name>-peers.<ns>.svc:7070`,
//! the per-replica URLs of the connection Secret), with the client token.
//!
//! Only I/O lives here; what the answers mean is decided by the pure
//! `status::replication`. The probe is a trait object in the [`Context`]
//! so tests supply answers instead of reaching pods. A replica that does
//! not answer is a result ("unreachable", with why), never an error of the
//! reconcile.
//!
//! [`Context`]: super::Context

use std::time::Duration;

use drasi_store_protocol::error::error_chain;
use drasi_store_protocol::routes::{CLUSTER, CLUSTER_STEP_DOWN, DEFAULT_PORT};
use drasi_store_protocol::{ClusterInfo, StepDownResponse};
use futures::future::BoxFuture;

use super::status::MemberProbe;
use crate::builders::replica_url;
use crate::validated::ValidatedStore;

/// How long each replica has to answer. The replicas are asked at once, so
/// this is also what a reconcile of a replicated store waits at most.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a leader may take to hand leadership over: the server waits
/// up to 5 s for a follower to catch up and 5 s for it to win.
pub const STEP_DOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The replicas of one store to probe, and how to talk to them.
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeTargets {
    /// `(pod name, ordinal, base URL)` of each replica, by ordinal.
    pub members: Vec<(String, i32, String)>,
    /// The client token (the first token of the store's token Secret).
    pub token: String,
    /// PEM of the CA that signed the server certificate, with TLS.
    pub ca_cert_pem: Option<String>,
    /// `spec.networkPolicy.enabled`: named in the message of a replica
    /// that does not answer, since the policy may not admit the operator.
    pub network_policy: bool,
}

// Not derived: the token must never reach a log.
impl std::fmt::Debug for ProbeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeTargets")
            .field("members", &self.members)
            .field("token", &"<redacted>")
            .field("tls", &self.ca_cert_pem.is_some())
            .field("network_policy", &self.network_policy)
            .finish()
    }
}

impl ProbeTargets {
    /// The `replicas` replicas of `store` (the group size its StatefulSet
    /// was built for).
    pub fn of(store: &ValidatedStore<'_>, replicas: i32) -> Self {
        Self {
            members: (0..replicas)
                .map(|ordinal| {
                    (
                        format!("{}-{ordinal}", store.name),
                        ordinal,
                        replica_url(store.store(), ordinal),
                    )
                })
                .collect(),
            token: store.token.client.clone(),
            ca_cert_pem: store.tls.as_ref().map(|tls| tls.ca_cert_pem.clone()),
            network_policy: store
                .spec()
                .network_policy
                .as_ref()
                .is_some_and(|p| p.enabled),
        }
    }

    fn unreachable(&self, why: &str) -> Vec<MemberProbe> {
        self.members
            .iter()
            .map(|(name, ordinal, _)| MemberProbe {
                name: name.clone(),
                ordinal: *ordinal,
                answer: Err(why.to_owned()),
            })
            .collect()
    }
}

/// Asks each replica of a store for its view of the cluster.
pub trait ClusterProbe: Send + Sync {
    /// One result per member of `targets`, in order. Never fails: a
    /// replica that does not answer gets an `Err` with why.
    fn probe<'a>(&'a self, targets: &'a ProbeTargets) -> BoxFuture<'a, Vec<MemberProbe>>;

    /// Asks the replica with this ordinal to hand leadership over
    /// (`POST /v1/cluster/step-down`) before the operator restarts it.
    fn step_down<'a>(
        &'a self,
        targets: &'a ProbeTargets,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<StepDownResponse, String>>;
}

/// The real probe: HTTP(S) with [`PROBE_TIMEOUT`], all replicas at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpClusterProbe;

impl ClusterProbe for HttpClusterProbe {
    fn probe<'a>(&'a self, targets: &'a ProbeTargets) -> BoxFuture<'a, Vec<MemberProbe>> {
        Box::pin(async move {
            let client = match http_client(targets.ca_cert_pem.as_deref(), PROBE_TIMEOUT) {
                Ok(client) => client,
                Err(why) => return targets.unreachable(&why),
            };
            let asks = targets.members.iter().map(|(name, ordinal, url)| {
                let client = &client;
                async move {
                    MemberProbe {
                        name: name.clone(),
                        ordinal: *ordinal,
                        answer: ask(client, url, &targets.token)
                            .await
                            .map_err(|why| hint(why, targets.network_policy)),
                    }
                }
            });
            futures::future::join_all(asks).await
        })
    }

    fn step_down<'a>(
        &'a self,
        targets: &'a ProbeTargets,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<StepDownResponse, String>> {
        Box::pin(async move {
            let Some((_, _, url)) = targets.members.iter().find(|(_, o, _)| *o == ordinal) else {
                return Err(format!("no replica with ordinal {ordinal}"));
            };
            let client = http_client(targets.ca_cert_pem.as_deref(), STEP_DOWN_TIMEOUT)?;
            let response = client
                .post(format!("{url}{CLUSTER_STEP_DOWN}"))
                .bearer_auth(&targets.token)
                .send()
                .await
                .map_err(|e| hint(describe(&e, STEP_DOWN_TIMEOUT), targets.network_policy))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| describe(&e, STEP_DOWN_TIMEOUT))?;
            if !status.is_success() {
                // The server's error body says why (no caught-up follower,
                // no successor won); it never holds a secret.
                let why = serde_json::from_slice::<drasi_store_protocol::ErrorBody>(&body)
                    .map_or_else(
                        |_| String::from_utf8_lossy(&body).into_owned(),
                        |e| e.message,
                    );
                return Err(format!(
                    "POST {CLUSTER_STEP_DOWN} answered HTTP {status}: {why}"
                ));
            }
            serde_json::from_slice(&body)
                .map_err(|e| format!("POST {CLUSTER_STEP_DOWN} answered unreadable JSON: {e}"))
        })
    }
}

fn http_client(ca_cert_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(PROBE_TIMEOUT)
        // In-cluster names: never through an HTTP(S)_PROXY of the
        // operator's environment.
        .no_proxy();
    if let Some(pem) = ca_cert_pem {
        // Only the store's CA: the certificate must name the replicas
        // (e.g. `*.<name>-peers.<ns>.svc`), as for clients that use the
        // per-replica URLs.
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("the store's CA certificate does not parse: {e}"))?;
        if certs.is_empty() {
            return Err("the store's CA certificate holds no certificate".to_owned());
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", error_chain(&e)))
}

async fn ask(client: &reqwest::Client, base: &str, token: &str) -> Result<ClusterInfo, String> {
    let response = client
        .get(format!("{base}{CLUSTER}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| describe(&e, PROBE_TIMEOUT))?;
    let status = response.status();
    if !status.is_success() {
        return Err(match status.as_u16() {
            401 | 403 => format!("the server refused the client token (HTTP {status})"),
            _ => format!("GET {CLUSTER} answered HTTP {status}"),
        });
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| describe(&e, PROBE_TIMEOUT))?;
    serde_json::from_slice(&body)
        .map_err(|e| format!("GET {CLUSTER} answered unreadable JSON: {e}"))
}

fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        format!("no answer within {} s", timeout.as_secs())
    } else if error.is_connect() {
        let why = error_chain(error);
        if why.contains("certificate") {
            format!(
                "the server's certificate is not trusted (it must be issued by the store's CA \
                 and name the replica): {why}"
            )
        } else {
            format!("cannot connect: {why}")
        }
    } else {
        error_chain(error)
    }
}

fn hint(why: String, network_policy: bool) -> String {
    if network_policy && (why.starts_with("no answer") || why.starts_with("cannot connect")) {
        format!(
            "{why} (spec.networkPolicy is enabled: its clients must admit the operator's pods \
             on port {DEFAULT_PORT})"
        )
    } else {
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let targets = ProbeTargets {
            members: vec![("s-0".into(), 0, "http://s-0.s-peers.ns.svc:7070".into())],
            token: "secret-token".into(),
            ca_cert_pem: None,
            network_policy: false,
        };
        let shown = format!("{targets:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("s-0.s-peers.ns.svc"), "{shown}");
    }

    #[test]
    fn a_network_policy_is_named_only_for_connection_failures() {
        let timeout = "no answer within 2 s".to_owned();
        assert!(hint(timeout.clone(), true).contains("spec.networkPolicy"));
        assert_eq!(hint(timeout.clone(), false), timeout);
        let refused = "the server refused the client token (HTTP 401 Unauthorized)".to_owned();
        assert_eq!(hint(refused.clone(), true), refused);
    }

    #[test]
    fn a_bad_ca_makes_every_replica_unreachable_with_the_reason() {
        let targets = ProbeTargets {
            members: (0..3)
                .map(|i| {
                    (
                        format!("s-{i}"),
                        i,
                        format!("https://s-{i}.s-peers.ns.svc:7070"),
                    )
                })
                .collect(),
            token: "t".into(),
            ca_cert_pem: Some(
                "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into(),
            ),
            network_policy: false,
        };
        let results = futures::executor::block_on(HttpClusterProbe.probe(&targets));
        assert_eq!(results.len(), 3);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result.ordinal, i as i32);
            let why = result.answer.as_ref().unwrap_err();
            assert!(why.contains("CA certificate"), "{why}");
        }
    }

    #[tokio::test]
    async fn a_replica_answers_with_the_token_and_its_view() {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        let answer = ClusterInfo {
            node_id: 1,
            role: drasi_store_protocol::ClusterRole::Follower,
            leader_id: Some(0),
            term: 3,
            commit_index: 10,
            applied_index: 9,
            members: Vec::new(),
            lag: Default::default(),
        };
        let body = serde_json::to_string(&answer).unwrap();
        let app = axum::Router::new().route(
            CLUSTER,
            axum::routing::get(move |headers: HeaderMap| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                if auth == Some("Bearer good") {
                    (StatusCode::OK, body).into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut targets = ProbeTargets {
            members: vec![("s-1".into(), 1, url)],
            token: "good".into(),
            ca_cert_pem: None,
            network_policy: false,
        };
        let results = HttpClusterProbe.probe(&targets).await;
        assert_eq!(results[0].answer, Ok(answer));
        targets.token = "bad".into();
        let results = HttpClusterProbe.probe(&targets).await;
        let why = results[0].answer.as_ref().unwrap_err();
        assert!(
            why.starts_with("the server refused the client token (HTTP 401"),
            "{why}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_replica_that_refuses_the_connection_is_unreachable() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let targets = ProbeTargets {
            members: vec![("s-0".into(), 0, format!("http://127.0.0.1:{port}"))],
            token: "t".into(),
            ca_cert_pem: None,
            network_policy: true,
        };
        let results = HttpClusterProbe.probe(&targets).await;
        let why = results[0].answer.as_ref().unwrap_err();
        assert!(why.starts_with("cannot connect"), "{why}");
        assert!(why.contains("spec.networkPolicy"), "{why}");
    }

    /// A one-shot HTTPS server for `localhost` with a certificate issued by
    /// a fresh CA; answers `body` to one request. Returns its URL and the
    /// CA's PEM.
    async fn tls_server(body: String) -> (String, String, tokio::task::JoinHandle<()>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // A failed handshake (an untrusted client) is the test's
                // business, not the server's.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        (format!("https://localhost:{port}"), ca.pem(), server)
    }

    #[tokio::test]
    async fn with_tls_only_the_stores_ca_is_trusted() {
        let answer = ClusterInfo {
            node_id: 0,
            role: drasi_store_protocol::ClusterRole::Leader,
            leader_id: Some(0),
            term: 1,
            commit_index: 5,
            applied_index: 5,
            members: Vec::new(),
            lag: Default::default(),
        };
        let (url, ca_pem, server) = tls_server(serde_json::to_string(&answer).unwrap()).await;
        let mut targets = ProbeTargets {
            members: vec![("s-0".into(), 0, url)],
            token: "t".into(),
            ca_cert_pem: Some(ca_pem),
            network_policy: false,
        };
        let results = HttpClusterProbe.probe(&targets).await;
        assert_eq!(results[0].answer, Ok(answer));

        // Another CA: refused, with a message that says why.
        let (_, other_ca, other) = tls_server(String::new()).await;
        targets.ca_cert_pem = Some(other_ca);
        let results = HttpClusterProbe.probe(&targets).await;
        let why = results[0].answer.as_ref().unwrap_err();
        assert!(
            why.starts_with("the server's certificate is not trusted"),
            "{why}"
        );
        server.abort();
        other.abort();
    }
}

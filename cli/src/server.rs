//! Talking to a store's server. Everything here works on "a base URL and a
//! token" ([`ServerAccess`]); [`access`] finds both for a store: the token
//! (and CA) from the store's connection Secret, the URL from `--server-url`
//! or a port-forward to a ready pod ([`crate::tunnel`]).
//!
//! Why a port-forward and not the API server's pod proxy: the API server
//! authenticates the caller with the `Authorization` header and removes it
//! before proxying, so the server's bearer token cannot travel through the
//! proxy, and the proxy does not verify the server's TLS certificate. A
//! port-forward carries our own HTTP (or TLS) connection end to end.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use drasi_store_operator::builders::connection_secret_name;
use drasi_store_operator::crd::DrasiStateStore;
use drasi_store_operator::labels::selector_string;
use drasi_store_protocol::env;
use drasi_store_protocol::routes::{DEFAULT_PORT, METRICS};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt as _;
use kube::api::ListParams;
use serde::Serialize;

use crate::cluster::{Cluster, Reach};
use crate::tunnel::Tunnel;

/// Connecting and receiving an answer's headers; transfers themselves have
/// no deadline (a large export takes as long as it takes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A base URL, the token to send there, and an HTTP client set up for it.
pub struct ServerAccess {
    base_url: String,
    token: String,
    client: reqwest::Client,
    /// Keeps the port-forward open as long as this access is used.
    _tunnel: Option<Tunnel>,
}

impl ServerAccess {
    /// `ca_pem`: extra CA certificates for an `https` URL. `resolve`: send
    /// requests for this host to this address (a port-forward), so TLS
    /// still checks the certificate against the store's real host name.
    pub fn new(
        base_url: &str,
        token: &str,
        ca_pem: Option<&[u8]>,
        resolve: Option<(&str, SocketAddr)>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .context("parsing the CA certificate of the connection Secret")?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((host, addr)) = resolve {
            builder = builder.resolve(host, addr);
        }
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: builder.build().context("building the HTTP client")?,
            _tunnel: None,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bearer token (the report redacts it from everything it writes).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(&self.token)
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let response = tokio::time::timeout(CONNECT_TIMEOUT, self.get(METRICS).send())
            .await
            .with_context(|| {
                format!(
                    "no answer from {} within {CONNECT_TIMEOUT:?}",
                    self.base_url
                )
            })?
            .with_context(|| format!("requesting {}", self.url(METRICS)))?;
        let status = response.status();
        if !status.is_success() {
            bail!("{} answered {status}", self.url(METRICS));
        }
        tokio::time::timeout(CONNECT_TIMEOUT, response.text())
            .await
            .context("the metrics answer did not arrive in time")?
            .context("reading the metrics answer")
    }

    pub async fn metrics(&self) -> anyhow::Result<ServerMetrics> {
        parse_metrics(&self.metrics_text().await?)
    }
}

/// The database gauges of the server's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServerMetrics {
    /// `drasi_store_keys`: keys across all store_ids.
    pub keys: u64,
    /// `drasi_store_stores`: store_ids holding at least one key.
    pub stores: u64,
}

/// Reads `drasi_store_keys` and `drasi_store_stores` from Prometheus or
/// OpenMetrics text.
pub fn parse_metrics(text: &str) -> anyhow::Result<ServerMetrics> {
    let mut keys = None;
    let mut stores = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let slot = match name {
            "drasi_store_keys" => &mut keys,
            "drasi_store_stores" => &mut stores,
            _ => continue,
        };
        let value: f64 = value
            .parse()
            .with_context(|| format!("metric {name} has the value {value:?}"))?;
        // Gauges of counts: integral and non-negative by construction.
        *slot = Some(value.max(0.0) as u64);
    }
    match (keys, stores) {
        (Some(keys), Some(stores)) => Ok(ServerMetrics { keys, stores }),
        _ => bail!("the server's metrics have no drasi_store_keys and drasi_store_stores gauges"),
    }
}

/// What a client of the store is handed: its connection Secret.
#[derive(Debug, Clone)]
pub struct Connection {
    pub secret: String,
    /// The first URL of `DRASI_STATE_STORE_URL`, the client Service
    /// `http(s)://<name>.<namespace>.svc:7070` (a replicated store lists
    /// each replica after it).
    pub url: String,
    pub token: String,
    pub ca_pem: Option<Vec<u8>>,
}

/// Reads the store's connection Secret (`status.connectionSecret`, else
/// `<store>-connection`).
pub async fn connection(cluster: &Cluster, store: &DrasiStateStore) -> anyhow::Result<Connection> {
    let name = store
        .status
        .as_ref()
        .and_then(|s| s.connection_secret.clone())
        .unwrap_or_else(|| connection_secret_name(&store.name_any()));
    let secret = cluster
        .api::<Secret>()
        .get_opt(&name)
        .await
        .with_context(|| format!("reading the connection Secret {name}"))?
        .with_context(|| {
            format!(
                "the connection Secret {name} of DrasiStateStore {} does not exist (yet)",
                store.name_any()
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| -> anyhow::Result<Option<String>> {
        data.get(key)
            .map(|v| {
                String::from_utf8(v.0.clone())
                    .with_context(|| format!("key {key} of Secret {name} is not UTF-8"))
            })
            .transpose()
    };
    let token = text(env::TOKEN)?
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .with_context(|| format!("Secret {name} holds no {}", env::TOKEN))?;
    let url = text(env::URL)?
        .as_deref()
        .and_then(first_url)
        .with_context(|| format!("Secret {name} holds no {}", env::URL))?;
    Ok(Connection {
        secret: name,
        url,
        token,
        ca_pem: data.get(env::CA_CERT).map(|v| v.0.clone()),
    })
}

/// The first of the comma-separated URLs of `DRASI_STATE_STORE_URL`.
fn first_url(urls: &str) -> Option<String> {
    urls.split(',')
        .map(str::trim)
        .find(|u| !u.is_empty())
        .map(str::to_owned)
}

/// The store's pods (by the operator's selector labels), sorted by name.
pub async fn pods(cluster: &Cluster, store: &str) -> anyhow::Result<Vec<Pod>> {
    let mut pods = cluster
        .pods()
        .list(&ListParams::default().labels(&selector_string(store)))
        .await
        .with_context(|| format!("listing the pods of DrasiStateStore {store}"))?
        .items;
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A base URL and the token for the store's server.
pub async fn access(cluster: &Cluster, store: &DrasiStateStore) -> anyhow::Result<ServerAccess> {
    let connection = connection(cluster, store).await?;
    let ca = connection.ca_pem.as_deref();
    match &cluster.reach {
        Reach::Url(url) => ServerAccess::new(url, &connection.token, ca, None),
        Reach::PortForward => {
            let name = store.name_any();
            let pods = pods(cluster, &name).await?;
            let pod = pods.iter().find(|p| pod_ready(p)).with_context(|| {
                format!(
                    "no ready pod of DrasiStateStore {name} to port-forward to ({} pod(s) found)",
                    pods.len()
                )
            })?;
            let endpoint = reqwest::Url::parse(&connection.url).with_context(|| {
                format!("{} in Secret {} is not a URL", env::URL, connection.secret)
            })?;
            let port = endpoint.port_or_known_default().unwrap_or(DEFAULT_PORT);
            let tunnel = Tunnel::open(cluster.pods(), &pod.name_any(), port).await?;
            let local = tunnel.addr();
            let mut access = if endpoint.scheme() == "https" {
                let host = endpoint
                    .host_str()
                    .with_context(|| format!("{} has no host", connection.url))?;
                let base = format!("https://{host}:{}", local.port());
                ServerAccess::new(&base, &connection.token, ca, Some((host, local)))?
            } else {
                ServerAccess::new(&format!("http://{local}"), &connection.token, ca, None)?
            };
            access._tunnel = Some(tunnel);
            Ok(access)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_two_gauges_and_ignores_the_rest() {
        let text = "# HELP drasi_store_keys Keys across all stores.\n\
                    # TYPE drasi_store_keys gauge\n\
                    drasi_store_keys 42\n\
                    drasi_store_requests_total{operation=\"get\",status=\"200\"} 7\n\
                    drasi_store_stores 3\n\
                    # EOF\n";
        assert_eq!(
            parse_metrics(text).unwrap(),
            ServerMetrics {
                keys: 42,
                stores: 3
            }
        );
    }

    #[test]
    fn the_client_service_url_is_the_first_of_several() {
        assert_eq!(
            first_url("http://s.ns.svc:7070").as_deref(),
            Some("http://s.ns.svc:7070")
        );
        assert_eq!(
            first_url("https://s.ns.svc:7070,https://s-0.s-peers.ns.svc:7070").as_deref(),
            Some("https://s.ns.svc:7070")
        );
        assert_eq!(first_url(" , ").as_deref(), None);
    }

    #[test]
    fn missing_or_broken_gauges_are_errors() {
        assert!(parse_metrics("drasi_store_keys 1\n").is_err());
        assert!(parse_metrics("drasi_store_keys x\ndrasi_store_stores 1\n").is_err());
        assert!(parse_metrics("").is_err());
    }
}

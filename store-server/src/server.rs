//! Listener, connections and graceful shutdown.
//!
//! The accept loop is our own (hyper-util's auto HTTP/1.1 + h2c/h2 server)
//! rather than `axum::serve`: it lets one code path serve plain TCP and
//! TLS, set TCP_NODELAY on every socket, cap connections, put deadlines on
//! every connection ([`crate::connections`]), and drain connections with a
//! deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::connections;
use crate::engine::{Engine, EngineOptions};
use crate::http::auth::TokenSet;
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::reload;

/// A running server. Dropping it without [`Server::shutdown`] leaves the
/// listener task running until the runtime stops.
pub struct Server {
    local_addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
    /// Pollers of the token files and the TLS files.
    reloaders: Vec<JoinHandle<()>>,
    /// Raft and the peer listener, on a replicated store.
    replication: Option<crate::replication::Replication>,
}

/// Opens the database, binds the listener and returns once it accepts.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate()?;
    crate::backup::refuse_interrupted_restore(&config.data_dir)?;
    let tokens = match &config.auth_token_file {
        Some(path) => Some(TokenSet::load(path)?),
        None => {
            tracing::warn!("authentication is disabled (--insecure-no-auth)");
            None
        }
    };
    let certs = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::ReloadingCert::load(cert, key)?),
        _ => None,
    };
    let tls = certs.as_ref().map(|c| c.acceptor()).transpose()?;
    let metrics = Arc::new(Metrics::new());
    let options = EngineOptions {
        path: config.db_path(),
        durability: config.durability,
        cache_bytes: config.cache_bytes,
        recovery_timeout: config.db_recovery_timeout(),
        // On a replicated store the Raft log makes a group durable; a
        // second local log would only add an fsync (docs/replication.md).
        journal: config.journal && config.peers.is_none(),
    };
    let engine_metrics = metrics.clone();
    // Opening may repair a large file after a crash: keep it off the executor.
    let engine = tokio::task::spawn_blocking(move || Engine::open(&options, engine_metrics))
        .await
        .context("database open task failed")??;
    let engine = Arc::new(engine);
    let replication = match (&config.peers, config.node_id) {
        (Some(peers), Some(node_id)) => {
            let peer_tokens = config
                .peer_token_file
                .as_deref()
                .map(TokenSet::load)
                .transpose()?;
            let peer_tls = match (&config.peer_tls_ca_file, &certs) {
                (Some(ca), Some(certs)) => {
                    let roots = crate::tls::load_roots(ca)?;
                    Some(crate::replication::PeerTls {
                        acceptor: certs.peer_acceptor(roots.clone())?,
                        client: certs.peer_client_config(roots)?,
                    })
                }
                _ => None,
            };
            let options = crate::replication::Options {
                node_id,
                peers: peers.clone(),
                peer_listen: config.peer_listen,
                peer_tokens: peer_tokens.clone(),
                peer_tls,
                snapshot_logs: config.raft_snapshot_logs,
            };
            let replication = crate::replication::Replication::start(&engine, options).await?;
            engine.set_replica(replication.node.clone());
            Some((replication, peer_tokens))
        }
        _ => None,
    };

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local_addr = listener.local_addr()?;

    let peer_tokens = replication.as_ref().and_then(|(_, t)| t.clone());
    let reloaders: Vec<_> = tokens
        .iter()
        .chain(peer_tokens.iter())
        .map(|t| reload::spawn(t.clone()))
        .chain(certs.iter().map(|c| reload::spawn(c.clone())))
        .collect();
    let replication = replication.map(|(r, _)| r);
    let state = Arc::new(AppState {
        engine,
        metrics,
        limits: config.limits(),
        body_timeout: config.request_body_timeout(),
        tokens,
        shutting_down: AtomicBool::new(false),
        openapi: crate::http::openapi::document_json().into(),
        spool_dir: config.data_dir.clone(),
        durability: config.durability.into(),
        max_response_bytes: config.max_response_bytes,
        body_budget: crate::http::limits::BodyBudget::new(config.max_inflight_body_bytes),
    });
    let app = router(state.clone());
    let (stop, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(
        listener,
        app,
        tls.clone(),
        stop_rx,
        ConnectionOptions {
            first_request_timeout: config.request_body_timeout(),
            idle_timeout: config.idle_timeout(),
            drain_timeout: config.shutdown_timeout(),
            max_connections: connections::effective_cap(config.max_connections),
            max_header_bytes: header_room(config.max_key_bytes),
        },
    ));
    tracing::info!(
        addr = %local_addr,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        durability = ?config.durability,
        "listening"
    );
    Ok(Server {
        local_addr,
        state,
        stop,
        accept,
        reloaders,
        replication,
    })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the peer listener is bound, on a replicated store.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.replication.as_ref().map(|r| r.peer_addr)
    }

    /// Stops accepting, waits (bounded) for in-flight requests, then makes
    /// everything acknowledged durable and stops the writer.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.shutting_down.store(true, Ordering::Relaxed);
        // Before the listener stops: writes arriving meanwhile wait for the
        // new leader and are forwarded to it instead of failing.
        if let Some(replication) = &self.replication {
            replication.node.hand_over_before_stopping().await;
        }
        let _ = self.stop.send(true);
        if let Err(e) = self.accept.await {
            tracing::warn!(error = %e, "accept loop ended abnormally");
        }
        for reloader in self.reloaders {
            reloader.abort();
        }
        if let Some(replication) = self.replication {
            replication.shutdown().await;
        }
        self.state.engine.shutdown().await?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Connection settings, from the flags.
pub(crate) struct ConnectionOptions {
    /// TLS handshake + protocol detection + first request headers.
    pub(crate) first_request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) max_connections: usize,
    /// Room for request headers: a target header with a store id and a key
    /// of `--max-key-bytes` each, percent-encoded.
    pub(crate) max_header_bytes: usize,
}

/// hyper's default HTTP/1 read buffer, the floor of `max_header_bytes`.
const DEFAULT_HEADER_BYTES: usize = 8192 + 4096 * 100;

/// Every UTF-8 byte of a store id or key may become `%XX`: three bytes
/// each, plus room for the rest of the headers.
fn header_room(max_key_bytes: usize) -> usize {
    (max_key_bytes.saturating_mul(6) + 64 * 1024).max(DEFAULT_HEADER_BYTES)
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    options: ConnectionOptions,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.first_request_timeout)
        .max_buf_size(options.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(connections::H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(connections::H2_KEEP_ALIVE_TIMEOUT);
    let builder = Arc::new(builder);
    let normal = Arc::new(Semaphore::new(options.max_connections));
    let reserve = Arc::new(Semaphore::new(connections::PROBE_RESERVE));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                backoff = ACCEPT_BACKOFF_MIN;
                conn
            }
            Err(err) => {
                // Typically EMFILE: every accept fails until descriptors
                // are freed, so back off (up to a second) instead of
                // spinning and flooding the log.
                if backoff == ACCEPT_BACKOFF_MIN {
                    tracing::warn!(error = %err, "accept failed; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let accepted_at = tokio::time::Instant::now();
        let (permit, admission, deadlines) = if let Ok(p) = normal.clone().try_acquire_owned() {
            (
                p,
                connections::Admission::Normal,
                connections::Deadlines {
                    first_request: accepted_at + options.first_request_timeout,
                    idle: options.idle_timeout,
                },
            )
        } else if let Ok(p) = reserve.clone().try_acquire_owned() {
            (
                p,
                connections::Admission::ProbesOnly,
                connections::Deadlines {
                    first_request: accepted_at
                        + connections::RESERVE_DEADLINE.min(options.first_request_timeout),
                    idle: Duration::from_millis(100),
                },
            )
        } else {
            tracing::debug!(%peer, "connection limit and probe reserve full; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => connections::serve(&builder, stream, app, admission, deadlines, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadlines.first_request, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => {
                            connections::serve(
                                &builder, tls_stream, app, admission, deadlines, stop,
                            )
                            .await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = (options.max_connections - normal.available_permits())
        + (connections::PROBE_RESERVE - reserve.available_permits());
    tracing::info!(
        connections = open,
        "stopped accepting; draining in-flight requests"
    );
    // Every connection holds a permit until it ends, so getting all of them
    // back means every connection drained.
    let drained = async {
        let _a = normal.acquire_many(options.max_connections as u32).await;
        let _b = reserve
            .acquire_many(connections::PROBE_RESERVE as u32)
            .await;
    };
    if tokio::time::timeout(options.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = options.drain_timeout.as_millis() as u64,
            "some connections did not finish before the shutdown timeout"
        );
    }
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

//! Listener, connections and graceful shutdown.
//!
//! The accept loop is our own (hyper-util's auto HTTP/1.1 + h2c/h2 server)
//! rather than `axum::serve`: it lets one code path serve plain TCP and
//! TLS, set TCP_NODELAY on every socket, bound header read time, and drain
//! connections through hyper-util's `GracefulShutdown` with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
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
    /// Pollers of the token file and the TLS files.
    reloaders: Vec<JoinHandle<()>>,
}

/// Opens the database, binds the listener and returns once it accepts.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate()?;
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
    };
    let engine_metrics = metrics.clone();
    // Opening may repair a large file after a crash: keep it off the executor.
    let engine = tokio::task::spawn_blocking(move || Engine::open(&options, engine_metrics))
        .await
        .context("database open task failed")??;
    let engine = Arc::new(engine);

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local_addr = listener.local_addr()?;

    let reloaders: Vec<_> = tokens
        .iter()
        .map(|t| reload::spawn(t.clone()))
        .chain(certs.iter().map(|c| reload::spawn(c.clone())))
        .collect();
    let state = Arc::new(AppState {
        engine,
        metrics,
        limits: config.limits(),
        body_timeout: config.request_body_timeout(),
        tokens,
        shutting_down: AtomicBool::new(false),
        openapi: crate::http::openapi::document_json().into(),
    });
    let app = router(state.clone());
    let (stop, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(
        listener,
        app,
        tls.clone(),
        stop_rx,
        config.request_body_timeout(),
        config.shutdown_timeout(),
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
    })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, waits (bounded) for in-flight requests, then makes
    /// everything acknowledged durable and stops the writer.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.shutting_down.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        if let Err(e) = self.accept.await {
            tracing::warn!(error = %e, "accept loop ended abnormally");
        }
        for reloader in self.reloaders {
            reloader.abort();
        }
        self.state.engine.shutdown().await?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    header_timeout: Duration,
    drain_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => serve(&builder, watcher, stream, service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serve(&builder, watcher, tls_stream, service).await,
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
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining in-flight requests"
    );
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = drain_timeout.as_millis() as u64,
            "some connections did not finish before the shutdown timeout"
        );
    }
}

type Service = TowerToHyperService<Router>;

async fn serve<IO>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: IO,
    service: Service,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), service);
    watcher.watch(conn.into_owned()).await
}

//! drasi-store-server: a durable, redb-backed network state store serving
//! the DrasiLib `StateStoreProvider` contract over HTTP.
//!
//! Layout: [`config`] (flags), [`engine`] (redb storage and the
//! group-commit writer), [`http`] (routes, auth, limits, errors),
//! [`metrics`], `tls`, `reload` (polled-file reloading for tokens and
//! certificates), [`server`] (listener and graceful shutdown) and
//! `telemetry` (logging). docs/server.md ("Where things live") and
//! docs/protocol.md describe the behaviour.

pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
mod reload;
pub mod server;
mod telemetry;
mod tls;

use std::process::ExitCode;

use clap::Parser as _;

pub use config::{Config, DurabilityMode, LogFormat};
pub use server::{Server, start};

/// The `drasi-store-server` binary: parse flags, serve until SIGTERM or
/// SIGINT, drain, commit, exit 0.
pub fn cli_main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("drasi-store")
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "drasi-store-server failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutdown requested");
    server.shutdown().await
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

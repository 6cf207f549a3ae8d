//! drasi-store-server: a durable, redb-backed network state store serving
//! the DrasiLib `StateStoreProvider` contract over HTTP.
//!
//! Layout: [`config`] (flags), [`backup`] (backup/restore subcommands), [`engine`] (redb storage and the
//! group-commit writer), [`http`] (routes, auth, limits, errors),
//! [`metrics`], `tls`, `reload` (polled-file reloading for tokens and
//! certificates), [`server`] (listener and graceful shutdown),
//! `telemetry` (logging) and [`replication`] (Raft groundwork, not yet
//! used; see docs/replication.md). docs/server.md ("Where things live") and
//! docs/protocol.md describe the behaviour.

pub mod backup;
mod bridge;
pub mod config;
mod connections;
pub mod engine;
pub mod http;
pub mod metrics;
mod process;
mod reload;
pub mod replication;
pub mod server;
mod telemetry;
mod tls;

use std::process::ExitCode;

use clap::Parser as _;

pub use config::{Config, DurabilityMode, LogFormat};
pub use server::{Server, start};

/// The `drasi-store-server` binary: parse flags, serve until SIGTERM or
/// SIGINT, drain, commit, exit 0. A first argument naming a data-protection
/// subcommand (`backup`, `restore`, ...) runs that instead.
pub fn cli_main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if backup::is_subcommand(&args) {
        telemetry::init(LogFormat::Text);
        return backup::main(backup::AdminCli::parse_from(args));
    }
    let config = Config::parse_from(args);
    telemetry::init(config.log_format);
    process::harden();
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

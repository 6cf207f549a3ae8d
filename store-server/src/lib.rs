//! drasi-store-server: a durable, redb-backed network state store serving
//! the DrasiLib `StateStoreProvider` contract over HTTP.
//!
//! Layout: [`config`] (flags), [`engine`] (redb storage and the
//! group-commit writer), `http` (routes, auth, limits, errors),
//! [`metrics`], `tls`, `server` (listener and graceful shutdown) and
//! `telemetry` (logging).

pub mod config;
pub mod engine;
pub mod metrics;

pub use config::{Config, DurabilityMode, LogFormat};

pub fn cli_main() -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}

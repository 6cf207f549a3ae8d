//! A [`drasi_lib::StateStoreProvider`] that keeps DrasiLib plugin state in a
//! `drasi-store-server`, so sources, bootstrap providers and reactions keep
//! their checkpoints across pod restarts and reschedules.
//!
//! A DrasiLib application swaps one line:
//!
//! ```no_run
//! # async fn app() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use drasi_lib::DrasiLib;
//! use drasi_state_store_remote::RemoteStateStoreProvider;
//!
//! let drasi = DrasiLib::builder()
//!     .with_state_store_provider(Arc::new(RemoteStateStoreProvider::from_env()?))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! [`RemoteStateStoreProvider::from_env`] reads the variables the operator
//! puts in the `<name>-connection` Secret (use it with `envFrom`):
//!
//! * `DRASI_STATE_STORE_URL` (required), e.g. `http://my-store.my-ns.svc:7070`
//! * `DRASI_STATE_STORE_TOKEN` (inline) or `DRASI_STATE_STORE_TOKEN_FILE`
//!   (re-read when the file changes; wins when both are set)
//! * for TLS only: `DRASI_STATE_STORE_CA_CERT` (PEM inline) or
//!   `DRASI_STATE_STORE_CA_FILE` (wins when both are set)
//!
//! Or configure it in code:
//!
//! ```no_run
//! # fn f() -> Result<(), drasi_lib::StateStoreError> {
//! use std::time::Duration;
//! use drasi_state_store_remote::RemoteStateStoreProvider;
//!
//! let provider = RemoteStateStoreProvider::builder("https://my-store.my-ns.svc:7070")
//!     .token_file("/var/run/secrets/drasi-store/token")
//!     .ca_file("/var/run/secrets/drasi-store/ca.crt")
//!     .timeout(Duration::from_secs(10))
//!     .max_retries(3)
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! * Each call is one HTTP request over a pooled keep-alive connection;
//!   values travel as raw bytes, batches in the protocol's binary frames.
//!   When single-key calls (`get`, `set`, `delete`, `contains_key`) pile up
//!   behind requests in flight, the queued ones go out together in one
//!   request, each with its own result and guarantee: many concurrent
//!   writes then share one round trip and one durable commit, while a lone
//!   call never waits.
//! * A call made on a multi-thread tokio runtime with I/O and timers (what
//!   `#[tokio::main]` builds) sends its request itself, over connections of
//!   that runtime's own, with no hand-off to another thread. Calls from
//!   anywhere else — current-thread runtimes, including the short-lived
//!   per-call runtimes DrasiLib uses for dynamically loaded plugins, or no
//!   runtime at all — run on a small I/O runtime owned by the provider.
//!   Do not block a runtime's every worker waiting for a call (for example
//!   with `futures::executor::block_on`): its request needs a worker to run.
//!   [`RemoteStateStoreProviderBuilder::requests_on_caller_runtime`] turns
//!   the first path off.
//! * Failures that are safe to repeat are retried with exponential backoff
//!   and jitter: connect errors and 503 `unavailable` for every operation;
//!   timeouts and other transport errors only for operations whose replay
//!   gives the same answer (not `delete`, `delete_many`, `clear_store`).
//! * Errors are [`drasi_lib::StateStoreError`]s whose messages name the
//!   operation, the store and the server; they never contain the token or
//!   values. Size limits are the server's (configurable); a request over
//!   them fails with a message saying so and changes nothing.

mod answer;
mod batcher;
mod builder;
mod error;
mod provider;
mod retry;
mod runtimes;
mod token;
mod transport;
mod wal;
pub mod wal_codec;

pub use builder::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FAILOVER_TIMEOUT, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT,
    RemoteStateStoreProviderBuilder,
};
pub use provider::RemoteStateStoreProvider;
pub use wal::{RemoteWalProvider, RemoteWalProviderBuilder};

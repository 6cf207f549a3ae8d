//! The providers the suite runs against, each fresh per test.

use std::sync::Arc;
use std::time::Duration;

use drasi_lib::{MemoryStateStoreProvider, StateStoreProvider};
use drasi_state_store_redb::RedbStateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;
use tempfile::TempDir;

/// The key limit the remote server is started with: small enough that the
/// over-limit case is cheap, large enough for every other case.
pub const REMOTE_MAX_KEY_BYTES: usize = 1024;

/// All three providers accept every case unrestricted: the embedded redb
/// provider maps a store_id to a table named `store_<id>`, and redb takes
/// any string as a table name, so even "" and "../x" behave as in memory.
pub struct Subject {
    pub provider: Arc<dyn StateStoreProvider>,
    /// Key/store_id byte limit the provider enforces, if any.
    pub key_limit: Option<usize>,
    _dir: Option<TempDir>,
    _server: Option<ServerProcess>,
}

pub fn memory() -> Subject {
    Subject {
        provider: Arc::new(MemoryStateStoreProvider::new()),
        key_limit: None,
        _dir: None,
        _server: None,
    }
}

pub fn redb() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let provider =
        RedbStateStoreProvider::new(dir.path().join("state.redb")).expect("open redb provider");
    Subject {
        provider: Arc::new(provider),
        key_limit: None,
        _dir: Some(dir),
        _server: None,
    }
}

pub fn remote() -> Subject {
    let (server, dir) = start_server(&["--max-key-bytes", &REMOTE_MAX_KEY_BYTES.to_string()]);
    let provider = remote_provider(&server);
    Subject {
        provider: Arc::new(provider),
        key_limit: Some(REMOTE_MAX_KEY_BYTES),
        _dir: Some(dir),
        _server: Some(server),
    }
}

/// The remote provider with every single-key call sent through the batch
/// route (`POST /v1/batch`), so the whole suite holds that path to the same
/// contract; under concurrency (`concurrent_writers`) calls also share
/// batches.
pub fn remote_batched() -> Subject {
    let (server, dir) = start_server(&["--max-key-bytes", &REMOTE_MAX_KEY_BYTES.to_string()]);
    let provider = batched_provider(&server);
    Subject {
        provider: Arc::new(provider),
        key_limit: Some(REMOTE_MAX_KEY_BYTES),
        _dir: Some(dir),
        _server: Some(server),
    }
}

/// A real server process with a token on a temp data dir.
pub fn start_server(args: &[&str]) -> (ServerProcess, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut builder = ServerProcess::builder(
        env!("CARGO_BIN_EXE_store-server-under-test"),
        dir.path().join("data"),
    )
    .token("conformance-token");
    for arg in args {
        builder = builder.arg(*arg);
    }
    (builder.start().expect("start drasi-store-server"), dir)
}

pub fn remote_provider(server: &ServerProcess) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(server.url())
        .token(server.token().expect("server has a token"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build remote provider")
}

pub fn batched_provider(server: &ServerProcess) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(server.url())
        .token(server.token().expect("server has a token"))
        .timeout(Duration::from_secs(30))
        .batch_every_call(true)
        .build()
        .expect("build remote provider")
}

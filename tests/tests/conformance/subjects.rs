//! The providers the suite runs against, each fresh per test.

use std::sync::Arc;
use std::time::Duration;

use drasi_lib::{MemoryStateStoreProvider, StateStoreProvider};
use drasi_state_store_redb::RedbStateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::cluster::{self, Cluster};
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
    /// Declared before `_dir`, so its processes stop before their data
    /// directories go.
    _cluster: Option<Cluster>,
    _dir: Option<TempDir>,
    _server: Option<ServerProcess>,
}

pub fn memory() -> Subject {
    Subject {
        provider: Arc::new(MemoryStateStoreProvider::new()),
        key_limit: None,
        _dir: None,
        _server: None,
        _cluster: None,
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
        _cluster: None,
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
        _cluster: None,
    }
}

/// A replicated store: three real server processes on loopback, reached
/// through one provider given every node's URL (as `DRASI_STATE_STORE_URL`
/// lists them). The first URL is a follower's, so writes and linearizable
/// reads take the forwarding path to the leader.
pub fn replicated() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let limit = REMOTE_MAX_KEY_BYTES.to_string();
    let cluster = Cluster::start(
        env!("CARGO_BIN_EXE_store-server-under-test"),
        dir.path(),
        3,
        &["--max-key-bytes", &limit],
    )
    .expect("start a 3-node cluster");
    let cluster = Arc::new(cluster);
    let waiting = Arc::clone(&cluster);
    let leader = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(waiting.wait_for_leader(Duration::from_secs(30)))
    })
    .join()
    .expect("leader wait panicked")
    .expect("the cluster elects a leader");
    let follower = (leader + 1) % cluster.len();
    let urls: Vec<String> = (0..cluster.len())
        .map(|i| cluster.url((follower + i) % cluster.len()))
        .collect();
    let provider = RemoteStateStoreProvider::builder(urls.join(","))
        .token(cluster::CLIENT_TOKEN)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build remote provider");
    let cluster = Arc::into_inner(cluster).expect("the waiting thread has ended");
    Subject {
        provider: Arc::new(provider),
        key_limit: Some(REMOTE_MAX_KEY_BYTES),
        _dir: Some(dir),
        _server: None,
        _cluster: Some(cluster),
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
        _cluster: None,
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

/// A server on a data dir that `drasi-store-server restore` filled from a
/// `backup` of another server holding data (including a cleared store, so
/// the source had garbage to leave behind): a restored database must behave
/// exactly like any other.
pub fn restored() -> Subject {
    let limit = REMOTE_MAX_KEY_BYTES.to_string();
    let (source, source_dir) = start_server(&["--max-key-bytes", &limit]);
    let provider = remote_provider(&source);
    // Built here, used only on the setup thread's runtime: a client's pooled
    // connections belong to the runtime that opened them.
    on_own_runtime(async move {
        provider
            .set_many("restored-a", &[("k1", &b"v1"[..]), ("k2", &b""[..])])
            .await
            .unwrap();
        provider.set("restored-b", "", vec![0, 255]).await.unwrap();
        provider
            .set("restored-gone", "x", b"x".to_vec())
            .await
            .unwrap();
        provider.clear_store("restored-gone").await.unwrap();
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = dir.path().join("source.snap");
    let token_file = source.data_dir().with_extension("token");
    admin(&[
        "backup",
        "--url",
        &source.url(),
        "--token-file",
        &token_file.display().to_string(),
        "--output",
        &snapshot.display().to_string(),
    ]);
    drop(source);
    drop(source_dir);
    let data = dir.path().join("data");
    admin(&[
        "restore",
        "--input",
        &snapshot.display().to_string(),
        "--data-dir",
        &data.display().to_string(),
    ]);
    let server = ServerProcess::builder(env!("CARGO_BIN_EXE_store-server-under-test"), &data)
        .token("conformance-token")
        .arg("--max-key-bytes")
        .arg(limit)
        .start()
        .expect("start drasi-store-server on the restored data dir");
    let check = remote_provider(&server);
    on_own_runtime(async move {
        assert_eq!(
            check.get("restored-a", "k1").await.unwrap(),
            Some(b"v1".to_vec())
        );
        assert_eq!(check.key_count("restored-a").await.unwrap(), 2);
        assert_eq!(
            check.get("restored-b", "").await.unwrap(),
            Some(vec![0, 255])
        );
        assert!(!check.store_exists("restored-gone").await.unwrap());
    });
    Subject {
        provider: Arc::new(remote_provider(&server)),
        key_limit: Some(REMOTE_MAX_KEY_BYTES),
        _dir: Some(dir),
        _server: Some(server),
        _cluster: None,
    }
}

/// Runs a server subcommand (`backup`, `restore`) and insists on success.
fn admin(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_store-server-under-test"))
        .args(args)
        .env_remove("DRASI_STORE_DATA_DIR")
        .output()
        .expect("run drasi-store-server");
    assert!(
        out.status.success(),
        "drasi-store-server {} failed: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Subjects are built from inside the tests' runtime; setup that needs to
/// await runs on a separate thread with its own runtime.
fn on_own_runtime<F: std::future::Future<Output = ()> + Send + 'static>(work: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("setup thread panicked");
}

pub fn batched_provider(server: &ServerProcess) -> RemoteStateStoreProvider {
    RemoteStateStoreProvider::builder(server.url())
        .token(server.token().expect("server has a token"))
        .timeout(Duration::from_secs(30))
        .batch_every_call(true)
        .build()
        .expect("build remote provider")
}

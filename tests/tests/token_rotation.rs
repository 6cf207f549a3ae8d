//! Token rotation end to end, without downtime: the real `drasi-store-server`
//! reads its token file, a real `RemoteStateStoreProvider` reads its token
//! from a file (`DRASI_STATE_STORE_TOKEN_FILE`, as a consumer that mounts
//! the connection Secret), and the files are written exactly as the
//! operator's passes would have the kubelet write them: each step comes from
//! `rotation::generated_token` + `validate` + `build`, the same functions the
//! reconciler runs, on a simulated clock.
//!
//! The kubelet refreshes each pod's Secret volumes on its own schedule, so
//! the test takes the worst order at every step: the consumer's file changes
//! before the server's. Under a steady stream of writes and reads it checks
//! that no request fails and that the server answered no 401 at all (the
//! client would retry a 401 after re-reading its file, which could hide a
//! lock-out), and that once the rotation is over, a client still holding the
//! old token is refused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_operator::builders::{BuildContext, DesiredObjects, build, generate_token};
use drasi_store_operator::crd::DrasiStateStore;
use drasi_store_operator::rotation::{self, Transition};
use drasi_store_operator::validated::{Referenced, validate};
use drasi_store_protocol::env;
use drasi_store_tests::ServerProcess;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_store-server-under-test");
/// The server re-reads its token file every second, the client its file at
/// most once a second: 2.5 s covers both with margin.
const PICK_UP: Duration = Duration::from_millis(2500);
const GRACE_SECONDS: i64 = 300;

fn store(trigger: &str) -> DrasiStateStore {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "drasi.io/v1alpha1",
        "kind": "DrasiStateStore",
        "metadata": { "name": "orders", "namespace": "apps", "uid": "00000000-0000-4000-8000-000000000011" },
        "spec": { "auth": { "rotation": { "trigger": trigger, "gracePeriodSeconds": GRACE_SECONDS } } },
    }))
    .unwrap()
}

/// One reconcile pass as the operator runs it, minus the API calls: the
/// objects it would apply and the rotation step it took.
fn pass(
    store: &DrasiStateStore,
    applied_auth: Option<&Secret>,
    now: Timestamp,
) -> (DesiredObjects, Option<Transition>) {
    let generated = rotation::generated_token(store, applied_auth, now, generate_token);
    let referenced = Referenced {
        token: generated.source,
        rotation: generated.rotation,
        ..Referenced::default()
    };
    let ctx = BuildContext::new("ghcr.io/drasi-project/drasi-store-server:test");
    let valid = validate(store, &ctx, &referenced).expect("valid store");
    (build(&valid), generated.transition)
}

fn value(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// The server's token file: the `token` key of `<name>-auth`.
fn server_file(objects: &DesiredObjects) -> String {
    value(objects.auth_secret.as_ref().unwrap(), "token")
}

/// The consumer's token file: `DRASI_STATE_STORE_TOKEN` of
/// `<name>-connection`, mounted as a file.
fn client_file(objects: &DesiredObjects) -> String {
    value(&objects.connection_secret, env::TOKEN)
}

/// Replaces `path` atomically, as the kubelet's symlink swap does.
fn kubelet_write(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Requests with `token`, straight over HTTP: the status the server answers.
async fn status_with(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}/v1/kv?store=probe&key=k"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn unauthorized_count(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("drasi_store_requests_total{") && l.contains("status=\"401\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// Writes and reads back through `provider` until stopped.
async fn run_load(provider: Arc<RemoteStateStoreProvider>, load: Arc<Load>) {
    let mut i = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        i += 1;
        let value = format!("offset={i}").into_bytes();
        let result = match provider.set("checkpoints", "source-1", value.clone()).await {
            Ok(()) => provider
                .get("checkpoints", "source-1")
                .await
                .map(|v| (v, 2)),
            Err(e) => Err(e),
        };
        match result {
            Ok((Some(read), n)) if read == value => {
                load.ok.fetch_add(n, Ordering::Relaxed);
            }
            Ok(other) => load
                .failures
                .lock()
                .await
                .push(format!("request {i}: read {other:?}")),
            Err(e) => load.failures.lock().await.push(format!("request {i}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_overlaps_tokens_so_no_request_fails_and_the_old_token_dies_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let server_token = dir.path().join("server-token");
    let client_token = dir.path().join("client-token");
    let mut clock = Timestamp::from_second(1_800_000_000).unwrap();

    // The store exists: `<name>-auth` was generated under trigger "1".
    let (objects, transition) = pass(&store("1"), None, clock);
    assert_eq!(transition, None);
    let old = client_file(&objects);
    assert_eq!(server_file(&objects), old);
    kubelet_write(&server_token, &server_file(&objects));
    kubelet_write(&client_token, &client_file(&objects));
    let server = ServerProcess::builder(BIN, dir.path().join("data"))
        .arg("--auth-token-file")
        .arg(server_token.to_str().unwrap())
        .start()
        .unwrap();
    let url = server.url();

    let provider = Arc::new(
        RemoteStateStoreProvider::builder(url.clone())
            .token_file(&client_token)
            .build()
            .unwrap(),
    );
    let load = Arc::new(Load::default());
    let worker = tokio::spawn(run_load(provider, load.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(load.ok.load(Ordering::Relaxed) > 0, "{}", server.log());

    // Pass 1, trigger "2": the server file gets the new token next to the
    // current one; clients are still handed the current one.
    let rotating = store("2");
    let (staged, transition) = pass(&rotating, objects.auth_secret.as_ref(), clock);
    assert_eq!(transition, Some(Transition::Started));
    let lines: Vec<String> = server_file(&staged).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], old);
    let new = lines[1].clone();
    assert_eq!(
        client_file(&staged),
        old,
        "not handed out before the server has it"
    );
    kubelet_write(&server_token, &server_file(&staged));
    tokio::time::sleep(PICK_UP).await;
    assert_eq!(
        status_with(&url, &new).await,
        404,
        "new token accepted (key absent)"
    );
    assert_eq!(status_with(&url, &old).await, 404, "old token accepted");

    // Pass 2, after the propagation delay: clients are handed the new token.
    // Worst case: the consumer's kubelet is faster than the server's.
    clock = clock
        .checked_add(SignedDuration::try_from(rotation::PROPAGATION).unwrap())
        .unwrap();
    let (switched, transition) = pass(&rotating, staged.auth_secret.as_ref(), clock);
    assert_eq!(transition, Some(Transition::Switched));
    assert_eq!(client_file(&switched), new);
    assert_eq!(server_file(&switched), format!("{new}\n{old}"));
    kubelet_write(&client_token, &client_file(&switched));
    tokio::time::sleep(PICK_UP).await;
    kubelet_write(&server_token, &server_file(&switched));
    tokio::time::sleep(PICK_UP).await;
    // A consumer that has not restarted yet still works during the grace period.
    assert_eq!(status_with(&url, &old).await, 404);

    // A pass before the grace period is over changes nothing.
    let early = clock
        .checked_add(SignedDuration::from_secs(GRACE_SECONDS - 1))
        .unwrap();
    let (waiting, transition) = pass(&rotating, switched.auth_secret.as_ref(), early);
    assert_eq!(transition, None);
    assert_eq!(server_file(&waiting), server_file(&switched));

    // Pass 3, after the grace period: the previous token is removed.
    clock = clock
        .checked_add(SignedDuration::from_secs(GRACE_SECONDS))
        .unwrap();
    let (finished, transition) = pass(&rotating, switched.auth_secret.as_ref(), clock);
    assert_eq!(transition, Some(Transition::Finished));
    assert_eq!(server_file(&finished), new);
    assert_eq!(client_file(&finished), new);
    kubelet_write(&server_token, &server_file(&finished));
    tokio::time::sleep(PICK_UP).await;
    let ok_at_removal = load.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.stop.store(true, Ordering::Relaxed);
    worker.await.unwrap();
    let failures = load.failures.lock().await.clone();
    assert!(
        failures.is_empty(),
        "{} requests failed during the rotation: {failures:#?}\nserver log:\n{}",
        failures.len(),
        server.log()
    );
    let ok = load.ok.load(Ordering::Relaxed);
    assert!(
        ok > ok_at_removal,
        "the live client kept working on the new token after the old one was removed"
    );
    assert!(
        ok >= 100,
        "too little load to prove anything: {ok} requests"
    );
    // Not one request was refused, not even one the client retried.
    assert_eq!(unauthorized_count(&url).await, 0, "{}", server.log());

    // A client still on the old token is refused now.
    assert_eq!(status_with(&url, &old).await, 401);
    let stale = RemoteStateStoreProvider::builder(url.clone())
        .token(old.clone())
        .build()
        .unwrap();
    assert!(stale.get("checkpoints", "source-1").await.is_err());
    assert_eq!(status_with(&url, &new).await, 404);
    // And the server's log never names a token.
    let log = server.log();
    assert!(!log.contains(&old) && !log.contains(&new), "{log}");
}

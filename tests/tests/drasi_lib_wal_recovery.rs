//! End to end with a real DrasiLib and no local state at all: an
//! application source with WAL durability, a continuous query and an
//! application reaction, with both providers remote
//! (`RemoteStateStoreProvider` and `RemoteWalProvider`).
//!
//! The app pushes changes; each `send` returns only after the change is in
//! the remote WAL. Mid-stream the server is killed with SIGKILL, so the
//! sends in flight fail. The server restarts on the same data, a fresh
//! DrasiLib instance (a restarted pod) starts, the source replays its log,
//! and every change the source acknowledged must reach the reaction (at
//! least once). The log's head must not move backwards across the crash,
//! and the new instance keeps numbering after it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use drasi_lib::channels::ResultDiff;
use drasi_lib::wal::WalProvider;
use drasi_lib::{CapacityPolicy, DrasiLib, DurabilityConfig, Query};
use drasi_reaction_application::application::ResultStream;
use drasi_reaction_application::{ApplicationReaction, ApplicationReactionHandle};
use drasi_source_application::{
    ApplicationSource, ApplicationSourceConfig, ApplicationSourceHandle,
};
use drasi_state_store_remote::{RemoteStateStoreProvider, RemoteWalProvider};
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::order_change;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "drasi-lib-wal-token";
const SOURCE: &str = "orders";
const QUERY: &str = "all-orders";
const REACTION: &str = "order-sink";
/// Sends before the kill; more keep going until the server is gone.
const SENDS_BEFORE_KILL: u64 = 40;
const MAX_SENDS: u64 = 2_000;

struct App {
    drasi: DrasiLib,
    source: ApplicationSourceHandle,
    reaction: ApplicationReactionHandle,
}

async fn start_app(url: &str) -> anyhow::Result<App> {
    let state = RemoteStateStoreProvider::builder(url)
        .token(TOKEN)
        .timeout(Duration::from_secs(5))
        .build()?;
    let wal = RemoteWalProvider::builder(url)
        .token(TOKEN)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .max_retries(1)
        .build()?;
    let (source, source_handle) = ApplicationSource::new(
        SOURCE,
        ApplicationSourceConfig {
            properties: Default::default(),
            durability: Some(DurabilityConfig {
                enabled: true,
                max_events: 10_000,
                capacity_policy: CapacityPolicy::RejectIncoming,
            }),
        },
    )?;
    let (reaction, reaction_handle) = ApplicationReaction::builder(REACTION)
        .with_query(QUERY)
        .build();
    let drasi = DrasiLib::builder()
        .with_id("wal-recovery-test")
        .with_state_store_provider(Arc::new(state))
        .with_wal_provider(Arc::new(wal))
        .with_source(source)
        .with_query(
            Query::cypher(QUERY)
                .query("MATCH (o:Order) RETURN o.n AS n")
                .from_source(SOURCE)
                .build(),
        )
        .with_reaction(reaction)
        .build()
        .await
        .context("building DrasiLib")?;
    drasi.start().await.context("starting DrasiLib")?;
    Ok(App {
        drasi,
        source: source_handle,
        reaction: reaction_handle,
    })
}

/// The `n` of every order the reaction was told about, until `wanted` are
/// all seen or the deadline passes.
async fn collect(
    stream: &mut ResultStream,
    wanted: &BTreeSet<u64>,
    deadline: Duration,
) -> anyhow::Result<BTreeSet<u64>> {
    let mut seen = BTreeSet::new();
    let until = Instant::now() + deadline;
    while !wanted.is_subset(&seen) {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(Some(result)) = tokio::time::timeout(left, stream.next()).await else {
            break;
        };
        for diff in result.results {
            if let ResultDiff::Add { data, .. } = diff
                && let Some(n) = data.get("n").and_then(|v| v.as_u64())
            {
                seen.insert(n);
            }
        }
    }
    Ok(seen)
}

async fn wal_head(url: &str) -> anyhow::Result<u64> {
    let wal = RemoteWalProvider::builder(url).token(TOKEN).build()?;
    wal.register(SOURCE, DurabilityConfig::default().to_wal_config())
        .await?;
    Ok(wal.head_sequence(SOURCE).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_reach_the_reaction_after_kill9_and_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::builder(SERVER, dir.path())
        .token(TOKEN)
        .start()?;
    let url = server.url();
    let app = start_app(&url).await?;

    // Push changes; the kill lands while sends are still going.
    let mut acked = BTreeSet::new();
    let mut server = Some(server);
    for n in 0..MAX_SENDS {
        if n == SENDS_BEFORE_KILL {
            server.take().expect("killed once").kill9()?;
        }
        match app.source.send(order_change(SOURCE, n)).await {
            Ok(()) => {
                acked.insert(n);
            }
            Err(_) if server.is_none() => break,
            Err(e) => return Err(e.context(format!("send {n} before the kill"))),
        }
    }
    ensure!(
        acked.len() as u64 >= SENDS_BEFORE_KILL,
        "only {} sends were acknowledged before the kill",
        acked.len()
    );
    // The pod dies with the server; nothing of it is kept.
    let _ = tokio::time::timeout(Duration::from_secs(10), app.drasi.stop()).await;
    drop(app);

    let server = ServerProcess::builder(SERVER, dir.path())
        .token(TOKEN)
        .start()
        .context("restarting the server after kill -9")?;
    let url = server.url();
    let head_after_crash = wal_head(&url).await?;
    ensure!(
        head_after_crash >= acked.len() as u64,
        "WAL head {head_after_crash} is behind the {} acknowledged sends",
        acked.len()
    );

    // A fresh DrasiLib instance, as a rescheduled pod: the source replays
    // its remote log into the query and the reaction sees every change.
    let app = start_app(&url).await?;
    let mut stream = app
        .reaction
        .as_stream()
        .await
        .ok_or_else(|| anyhow!("the reaction's stream was already taken"))?;
    let seen = collect(&mut stream, &acked, Duration::from_secs(30)).await?;
    let missing: Vec<_> = acked.difference(&seen).collect();
    ensure!(
        missing.is_empty(),
        "acknowledged changes never reached the reaction: {missing:?}"
    );

    // New changes continue the log after the replayed ones.
    app.source
        .send(order_change(SOURCE, MAX_SENDS + 1))
        .await
        .context("send after recovery")?;
    let head_now = wal_head(&url).await?;
    ensure!(
        head_now > head_after_crash,
        "WAL head went from {head_after_crash} to {head_now}"
    );
    let wanted = BTreeSet::from([MAX_SENDS + 1]);
    ensure!(
        collect(&mut stream, &wanted, Duration::from_secs(10))
            .await?
            .contains(&(MAX_SENDS + 1)),
        "a change sent after recovery did not reach the reaction"
    );
    app.drasi.stop().await?;
    server.terminate(Duration::from_secs(30))?;
    Ok(())
}

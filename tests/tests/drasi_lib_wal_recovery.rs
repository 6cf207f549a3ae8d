//! End to end with a real DrasiLib and no local state at all: an
//! application source with WAL durability, a continuous query and a
//! reaction, with both providers remote (`RemoteStateStoreProvider` and
//! `RemoteWalProvider`). The reaction is a few lines here rather than
//! `drasi-reaction-application`, which would pull a second major version of
//! utoipa into the workspace.
//!
//! The app pushes changes; each `send` returns only after the change is in
//! the remote WAL. Mid-stream the server is killed with SIGKILL, so the
//! sends in flight fail. The server restarts on the same data, a fresh
//! DrasiLib instance (a restarted pod) starts, the source replays its log,
//! and every change the source acknowledged must reach the reaction (at
//! least once). The log's head must not move backwards across the crash,
//! and the new instance keeps numbering after it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use async_trait::async_trait;
use drasi_lib::channels::{QueryResult, ResultDiff};
use drasi_lib::wal::WalProvider;
use drasi_lib::{
    CapacityPolicy, ComponentStatus, DrasiLib, DurabilityConfig, Query, Reaction, ReactionBase,
    ReactionBaseParams, ReactionRuntimeContext,
};
use drasi_source_application::{
    ApplicationSource, ApplicationSourceConfig, ApplicationSourceHandle,
};
use drasi_state_store_remote::{RemoteStateStoreProvider, RemoteWalProvider};
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::order_change;
use tokio::sync::mpsc;

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
    results: mpsc::UnboundedReceiver<QueryResult>,
}

/// A reaction that hands every query result to the test over a channel,
/// standing in for an app's own reaction.
struct ChannelReaction {
    base: ReactionBase,
    results: mpsc::UnboundedSender<QueryResult>,
}

impl ChannelReaction {
    fn new(id: &str, query: &str) -> (Self, mpsc::UnboundedReceiver<QueryResult>) {
        let (results, rx) = mpsc::unbounded_channel();
        let base = ReactionBase::new(ReactionBaseParams::new(id, vec![query.to_string()]));
        (Self { base, results }, rx)
    }
}

#[async_trait]
impl Reaction for ChannelReaction {
    fn id(&self) -> &str {
        &self.base.id
    }

    fn type_name(&self) -> &str {
        "test-channel"
    }

    fn properties(&self) -> HashMap<String, serde_json::Value> {
        HashMap::new()
    }

    fn query_ids(&self) -> Vec<String> {
        self.base.queries.clone()
    }

    async fn initialize(&self, context: ReactionRuntimeContext) {
        self.base.initialize(context).await;
    }

    async fn start(&self) -> anyhow::Result<()> {
        self.base
            .set_status(ComponentStatus::Running, Some("started".to_string()))
            .await;
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.base.stop_common().await
    }

    async fn status(&self) -> ComponentStatus {
        self.base.get_status().await
    }

    async fn enqueue_query_result(&self, result: QueryResult) -> anyhow::Result<()> {
        // The test may have stopped listening; the result is then unwanted.
        let _ = self.results.send(result);
        Ok(())
    }
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
    let (reaction, results) = ChannelReaction::new(REACTION, QUERY);
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
        results,
    })
}

/// The `n` of every order the reaction was told about, until `wanted` are
/// all seen or the deadline passes.
async fn collect(
    stream: &mut mpsc::UnboundedReceiver<QueryResult>,
    wanted: &BTreeSet<u64>,
    deadline: Duration,
) -> anyhow::Result<BTreeSet<u64>> {
    let mut seen = BTreeSet::new();
    let until = Instant::now() + deadline;
    while !wanted.is_subset(&seen) {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(Some(result)) = tokio::time::timeout(left, stream.recv()).await else {
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
    let mut app = start_app(&url).await?;
    let stream = &mut app.results;
    let seen = collect(stream, &acked, Duration::from_secs(30)).await?;
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
        collect(stream, &wanted, Duration::from_secs(10))
            .await?
            .contains(&(MAX_SENDS + 1)),
        "a change sent after recovery did not reach the reaction"
    );
    app.drasi.stop().await?;
    server.terminate(Duration::from_secs(30))?;
    Ok(())
}

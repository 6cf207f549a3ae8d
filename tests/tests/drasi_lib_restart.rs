//! End to end with a real DrasiLib: a source plugin keeps its read position
//! in the state store DrasiLib hands it, through the remote provider. The
//! app and the server are stopped (SIGTERM) and restarted on the same data
//! dir, and the plugin resumes from its checkpoint instead of from zero.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use drasi_lib::component_graph::ComponentStatusHandle;
use drasi_lib::config::SourceSubscriptionSettings;
use drasi_lib::{
    ComponentStatus, DrasiLib, Source, SourceRuntimeContext, StateStoreProvider,
    SubscriptionResponse,
};
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;

const TOKEN: &str = "drasi-lib-restart-token";
const SOURCE_ID: &str = "orders-cdc";
const CHECKPOINT_KEY: &str = "checkpoint";
/// Events the source "reads" from its upstream on every start.
const EVENTS_PER_RUN: u64 = 5;

/// What the plugin saw, for the test to assert on.
#[derive(Default)]
struct Probe {
    /// The checkpoint read at start: `Some(None)` when there was none.
    resumed_from: Mutex<Option<Option<u64>>>,
    error: Mutex<Option<String>>,
}

/// A source that, like a CDC source, resumes from the position saved in its
/// state store partition and saves its position after every event.
struct CheckpointingSource {
    id: String,
    status: ComponentStatusHandle,
    state_store: tokio::sync::RwLock<Option<Arc<dyn StateStoreProvider>>>,
    probe: Arc<Probe>,
}

impl CheckpointingSource {
    fn new(id: &str, probe: Arc<Probe>) -> Self {
        Self {
            id: id.to_string(),
            status: ComponentStatusHandle::new(id),
            state_store: tokio::sync::RwLock::new(None),
            probe,
        }
    }

    async fn run(&self) -> anyhow::Result<()> {
        let store = self
            .state_store
            .read()
            .await
            .clone()
            .ok_or_else(|| anyhow!("DrasiLib gave the source no state store"))?;
        let resumed = store
            .get(&self.id, CHECKPOINT_KEY)
            .await?
            .map(|bytes| -> anyhow::Result<u64> {
                Ok(u64::from_be_bytes(
                    bytes.try_into().map_err(|_| anyhow!("bad checkpoint"))?,
                ))
            })
            .transpose()?;
        *self.probe.resumed_from.lock().unwrap() = Some(resumed);
        let start = resumed.unwrap_or(0);
        for position in start + 1..=start + EVENTS_PER_RUN {
            store
                .set(&self.id, CHECKPOINT_KEY, position.to_be_bytes().to_vec())
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for CheckpointingSource {
    fn id(&self) -> &str {
        &self.id
    }

    fn type_name(&self) -> &str {
        "checkpointing-test-source"
    }

    fn properties(&self) -> HashMap<String, serde_json::Value> {
        HashMap::new()
    }

    fn supports_replay(&self) -> bool {
        false
    }

    async fn start(&self) -> anyhow::Result<()> {
        self.status
            .set_status(ComponentStatus::Starting, Some("Starting".into()))
            .await;
        if let Err(e) = self.run().await {
            *self.probe.error.lock().unwrap() = Some(format!("{e:#}"));
            return Err(e);
        }
        self.status
            .set_status(ComponentStatus::Running, Some("Running".into()))
            .await;
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.status
            .set_status(ComponentStatus::Stopping, Some("Stopping".into()))
            .await;
        self.status
            .set_status(ComponentStatus::Stopped, Some("Stopped".into()))
            .await;
        Ok(())
    }

    async fn status(&self) -> ComponentStatus {
        self.status.get_status().await
    }

    async fn subscribe(
        &self,
        _settings: SourceSubscriptionSettings,
    ) -> anyhow::Result<SubscriptionResponse> {
        Err(anyhow!(
            "this test source only checkpoints; no query subscribes to it"
        ))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn initialize(&self, context: SourceRuntimeContext) {
        self.status.wire(context.update_tx.clone()).await;
        *self.state_store.write().await = context.state_store.clone();
    }
}

/// One lifetime of the application: build DrasiLib on the remote provider,
/// start it (the source runs), stop it. Returns where the source resumed.
async fn run_app(url: &str) -> anyhow::Result<Option<u64>> {
    let provider = RemoteStateStoreProvider::builder(url)
        .token(TOKEN)
        .build()?;
    let probe = Arc::new(Probe::default());
    let drasi = DrasiLib::builder()
        .with_id("restart-test")
        .with_state_store_provider(Arc::new(provider))
        .with_source(CheckpointingSource::new(SOURCE_ID, Arc::clone(&probe)))
        .build()
        .await
        .context("building DrasiLib")?;
    drasi.start().await.context("starting DrasiLib")?;
    let resumed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(e) = probe.error.lock().unwrap().clone() {
                return Err(anyhow!("source failed: {e}"));
            }
            if let Some(resumed) = *probe.resumed_from.lock().unwrap() {
                return Ok(resumed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the source never started")??;
    drasi.stop().await.context("stopping DrasiLib")?;
    Ok(resumed)
}

fn start_server(data_dir: &std::path::Path, listen: &str) -> ServerProcess {
    ServerProcess::builder(env!("CARGO_BIN_EXE_store-server-under-test"), data_dir)
        .token(TOKEN)
        .listen(listen)
        .start()
        .expect("start drasi-store-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_checkpoint_survives_app_and_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let server = start_server(&data_dir, "127.0.0.1:0");
    let addr = server.addr().to_string();
    let url = server.url();
    assert_eq!(run_app(&url).await.unwrap(), None, "first run starts fresh");
    let status = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "server exit after SIGTERM: {status}");

    // Same data dir and address, as a restarted pod behind its Service.
    let server = start_server(&data_dir, &addr);
    assert_eq!(
        run_app(&url).await.unwrap(),
        Some(EVENTS_PER_RUN),
        "second run resumes from the first run's checkpoint"
    );
    // The second run's progress is durable too, and sits in the plugin's
    // own partition.
    let check = RemoteStateStoreProvider::builder(&url)
        .token(TOKEN)
        .build()
        .unwrap();
    assert_eq!(
        check.get(SOURCE_ID, CHECKPOINT_KEY).await.unwrap(),
        Some((2 * EVENTS_PER_RUN).to_be_bytes().to_vec())
    );
    assert_eq!(check.list_keys(SOURCE_ID).await.unwrap(), [CHECKPOINT_KEY]);
    let status = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "server exit after SIGTERM: {status}");
}

//! The server's memory must not grow with the number of distinct store_ids
//! it has seen (the embedded redb provider leaks a string per store_id).
//! Target from the issue: RSS under 64 MiB after 100,000 distinct store_ids
//! were each written once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drasi_lib::StateStoreProvider;
use drasi_state_store_remote::RemoteStateStoreProvider;
use drasi_store_tests::ServerProcess;
use drasi_store_tests::bench::rss::{vm_rss_bytes, write_distinct_stores};
use drasi_store_tests::bench::{RSS_TARGET_BYTES, RSS_TARGET_STORE_IDS};

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "memory-growth-token";
const MIB: f64 = 1024.0 * 1024.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_bounded_after_100k_distinct_store_ids() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::builder(SERVER, data_dir)
            .token(TOKEN)
            .arg("--durability")
            .arg("immediate")
            .start()
    })
    .await??;
    let provider: Arc<dyn StateStoreProvider> = Arc::new(
        RemoteStateStoreProvider::builder(server.url())
            .token(TOKEN)
            .timeout(Duration::from_secs(30))
            .build()?,
    );
    let start_rss = vm_rss_bytes(server.pid())?;

    // Half way, then all: a per-store_id leak shows up as growth between the
    // two readings even when the total happens to fit under the limit.
    let t0 = Instant::now();
    write_distinct_stores(Arc::clone(&provider), 0..RSS_TARGET_STORE_IDS / 2, 32).await?;
    let half_rss = vm_rss_bytes(server.pid())?;
    write_distinct_stores(
        Arc::clone(&provider),
        RSS_TARGET_STORE_IDS / 2..RSS_TARGET_STORE_IDS,
        32,
    )
    .await?;
    let full_rss = vm_rss_bytes(server.pid())?;
    let elapsed = t0.elapsed();

    eprintln!(
        "server RSS: {:.1} MiB at start, {:.1} MiB after {} store_ids, {:.1} MiB after {} store_ids ({:.1} s)",
        start_rss as f64 / MIB,
        half_rss as f64 / MIB,
        RSS_TARGET_STORE_IDS / 2,
        full_rss as f64 / MIB,
        RSS_TARGET_STORE_IDS,
        elapsed.as_secs_f64()
    );
    assert!(
        full_rss < RSS_TARGET_BYTES,
        "server RSS {:.1} MiB after {RSS_TARGET_STORE_IDS} distinct store_ids exceeds {:.0} MiB",
        full_rss as f64 / MIB,
        RSS_TARGET_BYTES as f64 / MIB
    );

    // Every store_id must really be there: the memory is bounded because
    // nothing is kept per store_id, not because writes were dropped.
    for i in [0, 1, RSS_TARGET_STORE_IDS / 2, RSS_TARGET_STORE_IDS - 1] {
        let id = drasi_store_tests::bench::rss::store_id(i);
        assert!(provider.store_exists(&id).await?, "{id} is missing");
        assert_eq!(provider.key_count(&id).await?, 1, "{id}");
    }
    Ok(())
}

//! Resident memory of a server process after many distinct store_ids, shared
//! by the benchmark and the `memory_growth` test.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use drasi_lib::StateStoreProvider;

/// `VmRSS` of a live process, in bytes (Linux `/proc`).
pub fn vm_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// The store_id used for the `i`-th distinct partition.
pub fn store_id(i: usize) -> String {
    format!("tenant-{i:07}/checkpoints")
}

/// Writes one 16-byte checkpoint into each store_id numbered in `range`
/// (`concurrency` callers sharing `provider`), then reads a sample back so a
/// silently dropped write fails the run.
pub async fn write_distinct_stores(
    provider: Arc<dyn StateStoreProvider>,
    range: Range<usize>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let count = range.end;
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let provider = Arc::clone(&provider);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let value = (i as u128).to_le_bytes().to_vec();
                provider
                    .set(&store_id(i), "checkpoint", value)
                    .await
                    .with_context(|| format!("set in store #{i}"))?;
            }
        }));
    }
    for task in tasks {
        task.await.context("writer task panicked")??;
    }
    let step = (range.len() / 97).max(1);
    for i in range.step_by(step) {
        let got = provider.get(&store_id(i), "checkpoint").await?;
        if got.as_deref() != Some(&(i as u128).to_le_bytes()[..]) {
            bail!("store #{i} lost its checkpoint: {got:?}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tdrasi\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_own_rss() {
        let rss = vm_rss_bytes(std::process::id()).unwrap();
        assert!(rss > 0);
    }

    #[test]
    fn store_ids_are_distinct() {
        assert_ne!(store_id(1), store_id(10));
    }
}

//! `backup`: create a `DrasiStateStoreBackup` and optionally follow it.

use std::time::Duration;

use anyhow::{Context as _, bail};
use drasi_store_operator::crd::{BackupPhase, DrasiStateStoreBackup, DrasiStateStoreBackupSpec};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::{ObjectMeta, PostParams};

use crate::cluster::Cluster;

/// Longest backup name (the CRD's rule: it names the backup Job).
pub const MAX_BACKUP_NAME: usize = 63;

/// `<store>-<UTCyyyymmdd-hhmmss>-<4 hex>`: sorts by time in `kubectl get`,
/// and the random part keeps two backups in the same second apart. A long
/// store name is shortened to keep within [`MAX_BACKUP_NAME`].
pub fn backup_name(store: &str, now: Timestamp, random: u16) -> String {
    let suffix = format!("-{}-{random:04x}", now.strftime("%Y%m%d-%H%M%S"));
    let room = MAX_BACKUP_NAME - suffix.len();
    let prefix = store
        .get(..store.len().min(room))
        .unwrap_or(store)
        .trim_end_matches('-');
    format!("{prefix}{suffix}")
}

/// Creates a backup of `store`. Refuses, creating nothing, when the store
/// does not exist, declares no destination, or has no destination named
/// `destination`: the operator would only mark such a backup Failed.
pub async fn create(
    cluster: &Cluster,
    store: &str,
    destination: Option<&str>,
) -> anyhow::Result<DrasiStateStoreBackup> {
    let target = cluster.store(store).await?;
    let names: Vec<&str> = target
        .spec
        .backup
        .as_ref()
        .map(|b| b.destinations.iter().map(|d| d.name.as_str()).collect())
        .unwrap_or_default();
    if names.is_empty() {
        bail!(
            "DrasiStateStore {store} declares no spec.backup.destinations; add one before taking a backup (see docs/backup.md)"
        );
    }
    if let Some(wanted) = destination
        && !names.contains(&wanted)
    {
        bail!(
            "DrasiStateStore {store} has no backup destination named {wanted} (it has: {})",
            names.join(", ")
        );
    }
    let backup = DrasiStateStoreBackup {
        metadata: ObjectMeta {
            name: Some(backup_name(store, Timestamp::now(), rand::random())),
            namespace: Some(cluster.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: DrasiStateStoreBackupSpec {
            store: store.to_string(),
            destination: destination.map(str::to_string),
        },
        status: None,
    };
    cluster
        .backups()
        .create(&PostParams::default(), &backup)
        .await
        .with_context(|| format!("creating a DrasiStateStoreBackup of {store}"))
}

/// Polls the backup until it is Completed (returned) or Failed (an error
/// carrying its reason and message), calling `on_phase` at each change of
/// phase. Gives up after `timeout`, leaving the backup running.
pub async fn wait(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
    poll: Duration,
    mut on_phase: impl FnMut(&DrasiStateStoreBackup),
) -> anyhow::Result<DrasiStateStoreBackup> {
    let backups = cluster.backups();
    let deadline = tokio::time::Instant::now() + timeout;
    // `Some(None)` is "seen, no phase yet": the first look is always reported.
    let mut last: Option<Option<BackupPhase>> = None;
    loop {
        let backup = backups
            .get_opt(name)
            .await
            .with_context(|| format!("reading DrasiStateStoreBackup {name}"))?
            .with_context(|| format!("DrasiStateStoreBackup {name} was deleted while waiting"))?;
        let status = backup.status.clone().unwrap_or_default();
        if last != Some(status.phase) {
            last = Some(status.phase);
            on_phase(&backup);
        }
        match status.phase {
            Some(BackupPhase::Completed) => return Ok(backup),
            Some(BackupPhase::Failed) => bail!(
                "backup {name} failed ({}): {}",
                status.reason.as_deref().unwrap_or("no reason given"),
                status.message.as_deref().unwrap_or("no message")
            ),
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "backup {name} is still {} after {timeout:?}; it goes on in the cluster (kubectl get dssbackup {name})",
                status
                    .phase
                    .map_or("without a phase".to_string(), |p| p.to_string())
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// One line per phase change, for `--wait`.
pub fn describe(backup: &DrasiStateStoreBackup) -> String {
    let status = backup.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map_or("Pending".to_string(), |p| p.to_string());
    let mut line = format!("{}: {phase}", backup.name_any());
    if let Some(reason) = &status.reason {
        line.push_str(&format!(" ({reason})"));
    }
    if status.phase == Some(BackupPhase::Completed) {
        if let Some(records) = status.records {
            line.push_str(&format!(", {records} records"));
        }
        if let Some(size) = status.size_bytes {
            line.push_str(&format!(", {}", crate::format::bytes(size.max(0) as u64)));
        }
        if let Some(location) = &status.location {
            line.push_str(&format!(" at {location}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_fit_the_limit() {
        let now: Timestamp = "2026-11-30T16:15:07Z".parse().unwrap();
        assert_eq!(
            backup_name("orders", now, 0xab),
            "orders-20261130-161507-00ab"
        );
        let long = "a".repeat(52);
        let name = backup_name(&long, now, 0xffff);
        assert_eq!(name.len(), MAX_BACKUP_NAME);
        assert!(name.ends_with("-20261130-161507-ffff"));
        // Shortening never leaves a dash before the time.
        let dashed = format!("{}-{}", "a".repeat(41), "b".repeat(10));
        assert_eq!(
            backup_name(&dashed, now, 1),
            format!("{}-20261130-161507-0001", "a".repeat(41))
        );
    }
}

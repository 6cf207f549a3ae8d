//! `status`: what an operator of the store wants to see at a glance.

use anyhow::Context as _;
use drasi_store_operator::builders::data_pvc_name;
use drasi_store_operator::crd::{DrasiStateStore, DrasiStateStoreBackup};
use drasi_store_operator::labels::selector_string;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt as _;
use kube::api::ListParams;
use serde::Serialize;

use crate::args::OutputFormat;
use crate::cluster::Cluster;
use crate::format;
use crate::server::{self, ServerMetrics};
use crate::table;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub store: String,
    pub namespace: String,
    pub phase: Option<String>,
    pub paused: bool,
    pub endpoint: Option<String>,
    pub conditions: Vec<ConditionRow>,
    pub pods: Vec<PodRow>,
    pub volumes: Vec<VolumeRow>,
    pub metrics: MetricsRow,
    pub last_backup: Option<BackupRow>,
    /// A replicated store's leader, term and replicas, as the operator
    /// last observed them (`status.replication`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRow {
    pub leader: Option<String>,
    pub term: Option<i64>,
    pub commit_index: Option<i64>,
    /// When the operator observed it (RFC 3339).
    pub observed_at: Option<String>,
    pub replicas: Vec<ReplicaRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRow {
    pub name: String,
    pub role: Option<String>,
    pub applied_index: Option<i64>,
    pub lag: Option<i64>,
    pub reachable: bool,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRow {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub name: String,
    pub ready: bool,
    /// Ready containers / containers, as kubectl shows it.
    pub containers_ready: String,
    pub phase: String,
    pub restarts: i32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRow {
    pub name: String,
    pub phase: String,
    pub capacity: Option<String>,
    pub requested: Option<String>,
}

/// The server's gauges, or why they could not be read.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsRow {
    pub keys: Option<u64>,
    pub stores: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRow {
    pub name: String,
    pub phase: Option<String>,
    /// Completion time, else start time, else creation time (RFC 3339).
    pub time: Option<String>,
    pub size_bytes: Option<i64>,
    pub location: Option<String>,
    pub message: Option<String>,
}

/// Reads everything `status` shows. A missing store or an object list the
/// user may not read is an error; the server's metrics, which need a ready
/// pod and a port-forward, are shown as unavailable with the reason.
pub async fn collect(cluster: &Cluster, name: &str) -> anyhow::Result<StatusReport> {
    let store = cluster.store(name).await?;
    let status = store.status.clone().unwrap_or_default();
    let conditions = status
        .conditions
        .iter()
        .map(|c| ConditionRow {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: c.last_transition_time.0.to_string(),
        })
        .collect();
    let pods = server::pods(cluster, name).await?;
    let volumes = volumes(cluster, name).await?;
    let metrics = match metrics(cluster, &store).await {
        Ok(m) => MetricsRow {
            keys: Some(m.keys),
            stores: Some(m.stores),
            error: None,
        },
        Err(err) => MetricsRow {
            keys: None,
            stores: None,
            error: Some(format!("{err:#}")),
        },
    };
    let last_backup = newest_backup(&store_backups(cluster, name).await?).map(backup_row);
    let replication = status.replication.as_ref().map(|r| ReplicationRow {
        leader: r.leader.clone(),
        term: r.term,
        commit_index: r.commit_index,
        observed_at: r.observed_at.as_ref().map(|t| t.0.to_string()),
        replicas: r
            .members
            .iter()
            .map(|m| ReplicaRow {
                name: m.name.clone(),
                role: m.role.map(|role| role.to_string()),
                applied_index: m.applied_index,
                lag: m.lag,
                reachable: m.reachable,
                message: m.message.clone(),
            })
            .collect(),
    });
    Ok(StatusReport {
        store: name.to_string(),
        namespace: cluster.namespace.clone(),
        phase: status.phase.map(|p| p.to_string()),
        paused: store.spec.paused,
        endpoint: status.endpoint,
        conditions,
        pods: pods.iter().map(pod_row).collect(),
        volumes,
        metrics,
        last_backup,
        replication,
    })
}

async fn metrics(cluster: &Cluster, store: &DrasiStateStore) -> anyhow::Result<ServerMetrics> {
    server::access(cluster, store).await?.metrics().await
}

/// The store's backups (`spec.store == name`).
pub async fn store_backups(
    cluster: &Cluster,
    name: &str,
) -> anyhow::Result<Vec<DrasiStateStoreBackup>> {
    let all = cluster
        .backups()
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the DrasiStateStoreBackups of {name}"))?;
    Ok(all
        .items
        .into_iter()
        .filter(|b| b.spec.store == name)
        .collect())
}

/// The most recently created backup (the name breaks ties, as backups
/// created within one second are named by time).
pub fn newest_backup(backups: &[DrasiStateStoreBackup]) -> Option<&DrasiStateStoreBackup> {
    backups
        .iter()
        .max_by_key(|b| (b.metadata.creation_timestamp.clone(), b.name_any()))
}

pub fn backup_row(backup: &DrasiStateStoreBackup) -> BackupRow {
    let status = backup.status.clone().unwrap_or_default();
    let time = status
        .completion_time
        .or(status.start_time)
        .or_else(|| backup.metadata.creation_timestamp.clone())
        .map(|t| t.0.to_string());
    BackupRow {
        name: backup.name_any(),
        phase: status.phase.map(|p| p.to_string()),
        time,
        size_bytes: status.size_bytes,
        location: status.location,
        message: status.message,
    }
}

fn pod_row(pod: &Pod) -> PodRow {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map_or(statuses.len(), |s| s.containers.len());
    PodRow {
        name: pod.name_any(),
        ready: server::pod_ready(pod),
        containers_ready: format!(
            "{}/{}",
            statuses.iter().filter(|s| s.ready).count(),
            containers
        ),
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        restarts: statuses.iter().map(|s| s.restart_count).sum(),
    }
}

/// The store's data volumes: the claims carrying its selector labels, or
/// the first pod's claim (`data-<store>-0`) by name when none does.
async fn volumes(cluster: &Cluster, name: &str) -> anyhow::Result<Vec<VolumeRow>> {
    let claims = cluster.api::<PersistentVolumeClaim>();
    let mut found = claims
        .list(&ListParams::default().labels(&selector_string(name)))
        .await
        .with_context(|| format!("listing the volume claims of DrasiStateStore {name}"))?
        .items;
    if found.is_empty()
        && let Some(claim) = claims
            .get_opt(&data_pvc_name(name))
            .await
            .with_context(|| format!("reading PVC {}", data_pvc_name(name)))?
    {
        found.push(claim);
    }
    found.sort_by_key(|c| c.name_any());
    Ok(found.iter().map(volume_row).collect())
}

fn volume_row(claim: &PersistentVolumeClaim) -> VolumeRow {
    let status = claim.status.clone().unwrap_or_default();
    VolumeRow {
        name: claim.name_any(),
        phase: status.phase.unwrap_or_default(),
        capacity: status
            .capacity
            .and_then(|c| c.get("storage").map(|q| q.0.clone())),
        requested: claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage").map(|q| q.0.clone())),
    }
}

pub fn render(report: &StatusReport, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_string_pretty(report)? + "\n",
        OutputFormat::Yaml => serde_yaml::to_string(report)?,
        OutputFormat::Table => render_table(report),
    })
}

fn render_table(r: &StatusReport) -> String {
    let or_none = |v: Option<&str>| v.unwrap_or("<none>").to_string();
    let mut out = String::new();
    let mut phase = or_none(r.phase.as_deref());
    if r.paused {
        phase.push_str(" (spec.paused)");
    }
    let (keys, stores) = match (&r.metrics.keys, &r.metrics.stores, &r.metrics.error) {
        (Some(k), Some(s), _) => (k.to_string(), s.to_string()),
        (_, _, Some(err)) => (format!("unavailable: {err}"), "unavailable".to_string()),
        _ => ("unavailable".to_string(), "unavailable".to_string()),
    };
    out.push_str(&format!(
        "Store:      {} (namespace {})\n",
        r.store, r.namespace
    ));
    out.push_str(&format!("Phase:      {phase}\n"));
    out.push_str(&format!("Endpoint:   {}\n", or_none(r.endpoint.as_deref())));
    out.push_str(&format!("Keys:       {keys}\n"));
    out.push_str(&format!("Store IDs:  {stores}\n"));

    out.push_str("\nCONDITIONS\n");
    let rows: Vec<Vec<String>> = r
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.last_transition_time.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"],
        &rows,
    ));

    if let Some(replication) = &r.replication {
        out.push_str(&format!(
            "\nREPLICATION (leader {}, term {}, commit index {}; observed {})\n",
            or_none(replication.leader.as_deref()),
            replication
                .term
                .map_or_else(|| "<none>".into(), |t| t.to_string()),
            replication
                .commit_index
                .map_or_else(|| "<none>".into(), |c| c.to_string()),
            or_none(replication.observed_at.as_deref()),
        ));
        let rows: Vec<Vec<String>> = replication
            .replicas
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.role.clone().unwrap_or_default(),
                    m.applied_index.map(|a| a.to_string()).unwrap_or_default(),
                    m.lag.map(|l| l.to_string()).unwrap_or_default(),
                    if m.reachable { "yes" } else { "no" }.to_string(),
                    m.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["NAME", "ROLE", "APPLIED", "LAG", "ANSWERS", "MESSAGE"],
            &rows,
        ));
    }

    out.push_str("\nPODS\n");
    let rows: Vec<Vec<String>> = r
        .pods
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.containers_ready.clone(),
                p.phase.clone(),
                p.restarts.to_string(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["NAME", "READY", "STATUS", "RESTARTS"],
        &rows,
    ));

    out.push_str("\nVOLUMES\n");
    let rows: Vec<Vec<String>> = r
        .volumes
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.phase.clone(),
                v.capacity.clone().unwrap_or_default(),
                v.requested.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["NAME", "STATUS", "CAPACITY", "REQUESTED"],
        &rows,
    ));

    out.push_str("\nLAST BACKUP\n");
    let rows: Vec<Vec<String>> = r
        .last_backup
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.phase.clone().unwrap_or_default(),
                b.time.clone().unwrap_or_default(),
                b.size_bytes
                    .map(|s| format::bytes(s.max(0) as u64))
                    .unwrap_or_default(),
                b.location.clone().unwrap_or_default(),
                b.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["NAME", "PHASE", "TIME", "SIZE", "LOCATION", "MESSAGE"],
        &rows,
    ));
    out
}

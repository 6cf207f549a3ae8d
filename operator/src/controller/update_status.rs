//! The `update_status` step: the status from a pure function of what the
//! pass observed, written only when it changed, and Events on transitions.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Context;
use super::api::{self, ApiError};
use super::events::EventReason;
use super::status::{
    Observation, ProgressingReason, ReplicationObservation, Workload, compute_status,
    find_condition, has_reason, pending_status,
};
use super::store_key;
use crate::builders::{RESTORE_CONTAINER, connection_secret_name, endpoint, resolved_image};
use crate::crd::{ConditionType, DrasiStateStore, DrasiStateStoreStatus, Phase, StorageStatus};

/// Writing a store's status failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the status of DrasiStateStore {store}: {source}")]
pub struct StatusError {
    pub store: String,
    #[source]
    pub source: ApiError,
}

/// What every observation of `store` starts from: the names it publishes
/// and the storage it asks for.
pub fn observation(store: &DrasiStateStore, ctx: &Context, workload: Workload) -> Observation {
    Observation {
        generation: store.metadata.generation,
        paused: false,
        endpoint: endpoint(store),
        connection_secret: connection_secret_name(&store.name_any()),
        image: resolved_image(store, &ctx.build),
        storage: StorageStatus {
            requested: Some(store.spec.storage.size.clone()),
            capacity: None,
        },
        workload,
        problem: None,
        progress: None,
        // Kept on every pass once recorded, even when the store turns
        // invalid: it says where the data in the volume came from.
        restored_from: store.status.as_ref().and_then(|s| s.restored_from.clone()),
        // Probed only after a successful apply (`reconcile_store`); until
        // then what was last observed is kept.
        replication: if store.spec.replicas.is_replicated() {
            ReplicationObservation::NotProbed
        } else {
            ReplicationObservation::NotReplicated
        },
    }
}

/// Gives a store without a phase the `Pending` status, before anything
/// that can fail: a store whose objects cannot be applied (API errors, an
/// admission webhook) would otherwise show no phase at all while it backs
/// off. Returns the store with that status, `None` when it already had one.
pub async fn mark_pending(
    store: &DrasiStateStore,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<DrasiStateStore>, StatusError> {
    if previous_phase(store).is_some() {
        return Ok(None);
    }
    let status = pending_status(store.metadata.generation, &Time(Timestamp::now()));
    write(store, ctx, namespace, &status).await?;
    ctx.metrics
        .set_phase(&store_key(store), Some(Phase::Pending));
    Ok(Some(DrasiStateStore {
        status: Some(status),
        ..store.clone()
    }))
}

/// Computes the status, writes it when it differs from the current one and
/// publishes the Events of the transitions it makes.
pub async fn update_status(
    store: &DrasiStateStore,
    ctx: &Context,
    namespace: &str,
    observation: &Observation,
    regarding: &ObjectReference,
) -> Result<DrasiStateStoreStatus, StatusError> {
    let status = compute_status(store.status.as_ref(), observation, &Time(Timestamp::now()));
    if store.status.as_ref() != Some(&status) {
        write(store, ctx, namespace, &status).await?;
    }
    ctx.metrics.set_phase(&store_key(store), status.phase);
    publish_transition_events(store, ctx, regarding, observation, &status).await;
    Ok(status)
}

async fn write(
    store: &DrasiStateStore,
    ctx: &Context,
    namespace: &str,
    status: &DrasiStateStoreStatus,
) -> Result<(), StatusError> {
    api::apply_status::<DrasiStateStore>(&ctx.client, namespace, &store.name_any(), status)
        .await
        .map_err(|source| StatusError {
            store: store_key(store),
            source,
        })
}

async fn publish_transition_events(
    store: &DrasiStateStore,
    ctx: &Context,
    regarding: &ObjectReference,
    observation: &Observation,
    status: &DrasiStateStoreStatus,
) {
    let before = previous_phase(store);
    let events = &ctx.events;
    match (before, status.phase) {
        (Some(Phase::Paused), Some(Phase::Paused)) => {}
        (_, Some(Phase::Paused)) => {
            let note = "spec.paused is true: the operator leaves every object as it is";
            events
                .normal(regarding, EventReason::Paused, "Pause", note.to_string())
                .await;
            return;
        }
        (Some(Phase::Paused), _) => {
            let note = "spec.paused is false: reconciling again";
            events
                .normal(regarding, EventReason::Resumed, "Resume", note.to_string())
                .await;
        }
        _ => {}
    }
    if status.phase == Some(Phase::Paused) {
        return;
    }
    let was_expanding = has_reason(store.status.as_ref(), ProgressingReason::VolumeExpanding);
    if was_expanding && observation.progress.is_none() {
        let note = format!(
            "the data volume now has {}",
            observation
                .storage
                .capacity
                .as_ref()
                .map_or("the requested size", |q| q.0.as_str())
        );
        events
            .normal(
                regarding,
                EventReason::VolumeExpansionFinished,
                "ExpandVolume",
                note,
            )
            .await;
    }
    if let Some(from) = &status.restored_from
        && store
            .status
            .as_ref()
            .is_none_or(|s| s.restored_from.is_none())
    {
        let what = match &from.backup {
            Some(backup) => format!("DrasiStateStoreBackup {backup} ({})", from.location),
            None => from.location.clone(),
        };
        let note = format!(
            "the init container {RESTORE_CONTAINER} fills the empty data volume from {what} \
             before the server first starts; on later starts it finds the database and skips"
        );
        events
            .normal(regarding, EventReason::Restoring, "Restore", note)
            .await;
    }
    if has_reason(Some(status), ProgressingReason::RestoreBackupNotCompleted)
        && !has_reason(
            store.status.as_ref(),
            ProgressingReason::RestoreBackupNotCompleted,
        )
    {
        let note = observation
            .progress
            .as_ref()
            .map(|p| p.message.clone())
            .unwrap_or_default();
        events
            .normal(regarding, EventReason::RestoreWaiting, "Restore", note)
            .await;
    }
    if status.phase == Some(Phase::Ready) && before != Some(Phase::Ready) {
        let note = format!(
            "the store serves at {}; mount Secret {} with envFrom",
            status.endpoint.as_deref().unwrap_or_default(),
            status.connection_secret.as_deref().unwrap_or_default()
        );
        events
            .normal(regarding, EventReason::Ready, "Reconcile", note)
            .await;
    }
    let degraded = |status: Option<&DrasiStateStoreStatus>| {
        find_condition(status, ConditionType::Degraded)
            .filter(|c| c.status == "True")
            .cloned()
    };
    if let Some(now) = degraded(Some(status))
        && degraded(store.status.as_ref()).is_none_or(|b| b.reason != now.reason)
    {
        let note = format!("{}: {}", now.reason, now.message);
        events
            .warning(regarding, EventReason::Degraded, "Reconcile", note)
            .await;
    }
}

/// The phase the store had when the pass started.
pub fn previous_phase(store: &DrasiStateStore) -> Option<Phase> {
    store.status.as_ref().and_then(|s| s.phase)
}

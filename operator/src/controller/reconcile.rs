//! One reconcile pass of a `DrasiStateStore`.
//!
//! Flow: finalizer -> paused? -> `Pending` status on the first pass ->
//! validate -> resolve token and CA -> build -> apply Secrets and Services
//! -> StatefulSet (with volume expansion) -> observe StatefulSet and PVC ->
//! pure status -> status write only when it changed -> events on
//! transitions -> requeue by phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};

use super::Context;
use super::apply;
use super::error::Error;
use super::events::reasons as event_reasons;
use super::expansion::{self, ExpansionPlan};
use super::finalizer::cleanup;
use super::inputs;
use super::status::{
    Observation, Reasoned, Workload, compute_status, find_condition, pending_status, reasons,
};
use crate::builders::{
    connection_secret_name, data_pvc_name, desired_objects, endpoint, resolved_image,
};
use crate::crd::{
    DrasiStateStore, DrasiStateStoreStatus, Phase, StorageStatus, condition_types, validate,
};
use crate::labels::FINALIZER;

/// Re-check a ready store every 5 minutes. Referenced Secrets are watched
/// (see `secret_watch`), so this is only a safety net against missed watch
/// events, e.g. while the operator was down.
pub const READY_REQUEUE: Duration = Duration::from_secs(300);
/// Poll while the server rolls out or a volume expands.
pub const PROGRESSING_REQUEUE: Duration = Duration::from_secs(10);
/// Re-check a degraded store. Fixes to referenced Secrets trigger a pass
/// through the Secret watch; some fixes are not watched at all (a
/// StorageClass that now allows expansion, a pod that recovers on its own).
pub const DEGRADED_REQUEUE: Duration = Duration::from_secs(30);

/// `namespace/name`, the key of per-store metrics and backoff.
pub fn store_key(store: &DrasiStateStore) -> String {
    format!(
        "{}/{}",
        store.namespace().unwrap_or_default(),
        store.name_any()
    )
}

/// Reconciles one store: the entry point of the controller and of the tests.
pub async fn reconcile(store: Arc<DrasiStateStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = store_key(&store);
    let namespace = store
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<DrasiStateStore> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, store, |event| async {
        match event {
            FinalizerEvent::Apply(store) => apply_store(&store, &ctx).await,
            FinalizerEvent::Cleanup(store) => cleanup(&store, &ctx).await,
        }
    })
    .await
    .map_err(Error::from);
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::metric_reason),
    );
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

/// Error policy: per-store exponential backoff, 1 s doubling to 5 minutes.
pub fn error_policy(store: Arc<DrasiStateStore>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = store_key(&store);
    let delay = ctx.backoff.next_delay(&key);
    tracing::warn!(store = %key, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply_store(store: &DrasiStateStore, ctx: &Context) -> Result<Action, Error> {
    let namespace = store
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = store
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let regarding = store.object_ref(&());
    let client = &ctx.client;

    if store.spec.paused {
        let observation = Observation {
            paused: true,
            ..base_observation(store, ctx, Workload::Missing)
        };
        let status = write_status(store, ctx, &observation).await?;
        if previous_phase(store) != Some(Phase::Paused) {
            let note = "spec.paused is true: the operator leaves every object as it is".to_string();
            ctx.events
                .normal(&regarding, event_reasons::PAUSED, "Pause", note)
                .await;
        }
        tracing::info!(store = %store_key(store), "paused, nothing applied");
        return Ok(requeue_for(&status));
    }
    if previous_phase(store) == Some(Phase::Paused) {
        let note = "spec.paused is false: reconciling again".to_string();
        ctx.events
            .normal(&regarding, event_reasons::RESUMED, "Resume", note)
            .await;
    }

    // The first pass gives the store a phase before anything that can fail:
    // a store whose objects cannot be applied (API errors, an admission
    // webhook) would otherwise show no phase at all while it backs off.
    let with_pending;
    let store = if previous_phase(store).is_none() {
        let status = pending_status(store.metadata.generation, &Time(Timestamp::now()));
        apply::apply_status(client, &namespace, &name, &status).await?;
        ctx.metrics
            .set_phase(&store_key(store), Some(Phase::Pending.as_str()));
        with_pending = DrasiStateStore {
            status: Some(status),
            ..store.clone()
        };
        &with_pending
    } else {
        store
    };

    let existing_sts = apply::get_opt::<StatefulSet>(client, &namespace, &name).await?;

    let errors = validate(store);
    if !errors.is_empty() {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let problem = Reasoned::new(reasons::INVALID_SPEC, message);
        return degraded(store, ctx, &regarding, existing_sts.as_ref(), problem).await;
    }

    let inputs = match inputs::resolve(client, store).await? {
        Ok(inputs) => inputs,
        Err(problem) => {
            return degraded(store, ctx, &regarding, existing_sts.as_ref(), problem).await;
        }
    };
    let desired =
        desired_objects(store, &ctx.build, &inputs.resolved).map_err(|source| Error::Build {
            store: store_key(store),
            source,
        })?;

    // Secrets before the pod that mounts them; the headless Service before
    // the StatefulSet it governs.
    if let Some(auth) = &desired.auth_secret {
        apply::apply(client, &namespace, auth).await?;
        if inputs.generated_token {
            tracing::info!(store = %store_key(store), secret = %auth.name_any(), "generated the store's token");
        }
    }
    apply::apply(client, &namespace, &desired.connection_secret).await?;
    apply::apply(client, &namespace, &desired.headless_service).await?;
    apply::apply(client, &namespace, &desired.service).await?;

    let was_expanding = find_condition(store.status.as_ref(), condition_types::PROGRESSING)
        .is_some_and(|c| c.status == "True" && c.reason == reasons::VOLUME_EXPANDING);
    let mut problem = None;
    let mut progress = None;
    let statefulset = match existing_sts {
        // Left over from a volume expansion: wait until it is gone, because
        // applying now would patch the object being deleted.
        Some(old) if old.metadata.deletion_timestamp.is_some() => {
            progress = Some(Reasoned::new(
                reasons::VOLUME_EXPANDING,
                "waiting for the old StatefulSet to be deleted (its pods keep running) before \
                 re-creating it with the new volume size",
            ));
            None
        }
        Some(existing) => {
            match expansion::plan(client, &namespace, &existing, &desired.statefulset).await? {
                ExpansionPlan::NotNeeded => {
                    Some(apply::apply(client, &namespace, &desired.statefulset).await?)
                }
                ExpansionPlan::Blocked(reason) => {
                    problem = Some(reason);
                    Some(existing)
                }
                ExpansionPlan::Expand { from, to, pvcs } => {
                    let note = format!(
                        "expanding {} from {} to {}; re-creating StatefulSet {name} with orphaned pods",
                        if pvcs.is_empty() {
                            "the volume template".to_string()
                        } else {
                            pvcs.join(", ")
                        },
                        from.0,
                        to.0
                    );
                    ctx.events
                        .normal(
                            &regarding,
                            event_reasons::VOLUME_EXPANSION_STARTED,
                            "ExpandVolume",
                            note,
                        )
                        .await;
                    expansion::execute(client, &namespace, &name, &to, &pvcs).await?;
                    match apply::get_opt::<StatefulSet>(client, &namespace, &name).await? {
                        // Orphan deletion is asynchronous on a real API server.
                        Some(_) => {
                            progress = Some(Reasoned::new(
                                reasons::VOLUME_EXPANDING,
                                format!(
                                    "expanding the volume to {}: re-creating the StatefulSet",
                                    to.0
                                ),
                            ));
                            None
                        }
                        None => Some(apply::apply(client, &namespace, &desired.statefulset).await?),
                    }
                }
            }
        }
        None => {
            let created = apply::apply(client, &namespace, &desired.statefulset).await?;
            // After a volume expansion the StatefulSet is re-created, not new.
            if !was_expanding {
                let note = format!(
                    "created StatefulSet {name}, Services {name} and {name}-headless, and Secret {}",
                    connection_secret_name(&name)
                );
                ctx.events
                    .normal(&regarding, event_reasons::CREATED, "Create", note)
                    .await;
            }
            Some(created)
        }
    };

    let mut observation =
        base_observation(store, ctx, Workload::from_statefulset(statefulset.as_ref()));
    let pvc =
        apply::get_opt::<PersistentVolumeClaim>(client, &namespace, &data_pvc_name(&name)).await?;
    if let Some(pvc) = &pvc {
        observation.storage.capacity = expansion::pvc_capacity(pvc);
        if progress.is_none() {
            progress = expansion::pvc_progress(pvc);
        }
    }
    observation.problem = problem;
    observation.progress = progress;
    let status = write_status(store, ctx, &observation).await?;
    if was_expanding && observation.progress.is_none() {
        let note = format!(
            "the data volume now has {}",
            observation
                .storage
                .capacity
                .as_ref()
                .map_or("the requested size", |q| q.0.as_str())
        );
        ctx.events
            .normal(
                &regarding,
                event_reasons::VOLUME_EXPANSION_FINISHED,
                "ExpandVolume",
                note,
            )
            .await;
    }
    publish_transition_events(store, ctx, &regarding, &status).await;
    Ok(requeue_for(&status))
}

/// Reports a user-fixable problem without applying anything.
async fn degraded(
    store: &DrasiStateStore,
    ctx: &Context,
    regarding: &ObjectReference,
    existing_sts: Option<&StatefulSet>,
    problem: Reasoned,
) -> Result<Action, Error> {
    tracing::warn!(store = %store_key(store), reason = problem.reason, message = %problem.message, "degraded");
    let observation = Observation {
        problem: Some(problem),
        ..base_observation(store, ctx, Workload::from_statefulset(existing_sts))
    };
    let status = write_status(store, ctx, &observation).await?;
    publish_transition_events(store, ctx, regarding, &status).await;
    Ok(requeue_for(&status))
}

fn base_observation(store: &DrasiStateStore, ctx: &Context, workload: Workload) -> Observation {
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
    }
}

/// Computes the status and writes it only when it differs from the current one.
async fn write_status(
    store: &DrasiStateStore,
    ctx: &Context,
    observation: &Observation,
) -> Result<DrasiStateStoreStatus, Error> {
    let now = Time(Timestamp::now());
    let status = compute_status(store.status.as_ref(), observation, &now);
    if store.status.as_ref() != Some(&status) {
        let namespace = store
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        apply::apply_status(&ctx.client, &namespace, &store.name_any(), &status).await?;
    }
    let phase = status.phase.map(Phase::as_str);
    ctx.metrics.set_phase(&store_key(store), phase);
    Ok(status)
}

async fn publish_transition_events(
    store: &DrasiStateStore,
    ctx: &Context,
    regarding: &ObjectReference,
    status: &DrasiStateStoreStatus,
) {
    let before = previous_phase(store);
    if status.phase == Some(Phase::Ready) && before != Some(Phase::Ready) {
        let note = format!(
            "the store serves at {}; mount Secret {} with envFrom",
            status.endpoint.as_deref().unwrap_or_default(),
            status.connection_secret.as_deref().unwrap_or_default()
        );
        ctx.events
            .normal(regarding, event_reasons::READY, "Reconcile", note)
            .await;
    }
    let degraded_now =
        find_condition(Some(status), condition_types::DEGRADED).filter(|c| c.status == "True");
    let degraded_before = find_condition(store.status.as_ref(), condition_types::DEGRADED)
        .filter(|c| c.status == "True");
    if let Some(now) = degraded_now
        && degraded_before.is_none_or(|b| b.reason != now.reason)
    {
        let note = format!("{}: {}", now.reason, now.message);
        ctx.events
            .warning(regarding, event_reasons::DEGRADED, "Reconcile", note)
            .await;
    }
}

fn previous_phase(store: &DrasiStateStore) -> Option<Phase> {
    store.status.as_ref().and_then(|s| s.phase)
}

fn requeue_for(status: &DrasiStateStoreStatus) -> Action {
    match status.phase {
        Some(Phase::Ready) => Action::requeue(READY_REQUEUE),
        Some(Phase::Degraded) => Action::requeue(DEGRADED_REQUEUE),
        // Paused stores change only with their spec, which bumps the
        // generation and triggers a reconcile anyway.
        Some(Phase::Paused) => Action::await_change(),
        _ => Action::requeue(PROGRESSING_REQUEUE),
    }
}

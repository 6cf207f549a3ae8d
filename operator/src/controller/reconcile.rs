//! One reconcile pass of a `DrasiStateStore`, as a pipeline:
//!
//! dereference (reads) -> validate (pure) -> build (pure) -> apply (writes,
//! volume expansion) -> update_status (pure status, conditional write,
//! transition events) -> requeue by phase.
//!
//! A paused store skips straight to the status; a store that fails
//! validation skips build and apply and reports why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};

use super::apply::{Applied, apply};
use super::cluster_probe::ProbeTargets;
use super::dereference::{Dereferenced, dereference};
use super::error::Error;
use super::events::EventReason;
use super::expansion::{data_pvc, pvc_capacity, pvc_progress};
use super::finalizer::{FINALIZER, cleanup};
use super::restore::Blocked;
use super::rollout;
use super::status::{Observation, Problem, ReplicationObservation, Workload};
use super::update_status::{mark_pending, observation, update_status};
use super::{Context, store_key};
use crate::builders::{build, built_replicas, connection_secret_name};
use crate::crd::{DrasiStateStore, DrasiStateStoreStatus, Phase};
use crate::rotation::{PROPAGATION, Requested, Transition};
use crate::validated::{Invalid, ValidatedStore, validate};

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
/// Re-probe a replicated store's replicas (`status.replication`): leader
/// changes and lag are not watch events. A pass that finds nothing
/// meaningful changed writes nothing.
pub const REPLICATION_REQUEUE: Duration = Duration::from_secs(30);

/// Reconciles one store: the entry point of the controller and of the tests.
pub async fn reconcile(store: Arc<DrasiStateStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = store_key(&store);
    let namespace = store
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<DrasiStateStore> = Api::namespaced(ctx.client.clone(), &namespace);
    // Boxed: the pass's state machine is large (every API call it awaits is
    // part of it), and unboxed it would live on the caller's stack, which
    // for a test's `block_on` in a debug build is a 2 MiB thread stack.
    let result = Box::pin(finalizer(&api, FINALIZER, store, |event| async {
        match event {
            FinalizerEvent::Apply(store) => {
                Box::pin(reconcile_store(&store, &ctx, &namespace)).await
            }
            FinalizerEvent::Cleanup(store) => Box::pin(cleanup(&store, &ctx)).await,
        }
    }))
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

async fn reconcile_store(
    store: &DrasiStateStore,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    let regarding = store.object_ref(&());
    if store.spec.paused {
        // Nothing is read or applied.
        let paused = Observation {
            paused: true,
            ..observation(store, ctx, Workload::Missing)
        };
        let status = update_status(store, ctx, namespace, &paused, &regarding).await?;
        tracing::info!(store = %store_key(store), "paused, nothing applied");
        return Ok(requeue_for(&status, None, false));
    }
    let pending = mark_pending(store, ctx, namespace).await?;
    let store = pending.as_ref().unwrap_or(store);

    let found = dereference(&ctx.client, store, namespace).await?;
    let mut rotation_due = None;
    let observed = match validate(store, &ctx.build, &found.referenced) {
        Err(invalid) => invalid_observation(store, ctx, invalid, &found),
        // A spec error is reported first; then a restore that cannot be
        // set up yet keeps the whole store from being created.
        Ok(_) if found.restore.is_err() => restore_blocked_observation(store, ctx, &found),
        Ok(valid) => {
            let desired = build(&valid);
            let transition = found.rotation_transition;
            rotation_due = found.rotation_due;
            let applied = apply(ctx, &valid, &desired, found, &regarding).await?;
            if let Some(transition) = transition {
                rotation_event(ctx, &valid, transition, &regarding).await;
            }
            let statefulset = applied.statefulset.clone();
            let mut observed = applied_observation(store, ctx, applied);
            observed.restored_from = valid.restore.clone();
            let replicated = statefulset
                .map(|sts| (built_replicas(&sts), sts))
                .filter(|(replicas, _)| *replicas > 1);
            if let Some((replicas, sts)) = replicated {
                let targets = ProbeTargets::of(&valid, replicas);
                let probes = ctx.cluster_probe.probe(&targets).await;
                // A volume expansion or a restore in flight owns the pods.
                if observed.progress.is_none() && observed.problem.is_none() {
                    observed.progress = rollout::step(
                        ctx,
                        namespace,
                        &valid.name,
                        &sts,
                        &probes,
                        &targets,
                        &regarding,
                    )
                    .await?;
                }
                observed.replication = ReplicationObservation::Probed(probes);
            }
            observed
        }
    };
    let probed = matches!(observed.replication, ReplicationObservation::Probed(_));
    let status = update_status(store, ctx, namespace, &observed, &regarding).await?;
    Ok(requeue_for(&status, rotation_due, probed))
}

/// Records a step of a token rotation once it is applied. The note names
/// Secrets and times, never a token.
async fn rotation_event(
    ctx: &Context,
    store: &ValidatedStore<'_>,
    transition: Transition,
    regarding: &ObjectReference,
) {
    let auth = store.token.secret.name();
    let connection = connection_secret_name(&store.name);
    let grace = Requested::of(store.store()).grace_period.as_secs();
    let (reason, note) = match transition {
        Transition::Started => (
            EventReason::TokenRotationStarted,
            format!(
                "added a new token to {auth}; the server accepts both, clients keep the current \
                 one for {} s until the server has it",
                PROPAGATION.as_secs()
            ),
        ),
        Transition::Switched => (
            EventReason::TokenRotationSwitched,
            format!(
                "{connection} now hands out the new token; the previous one stays valid for {grace} \
                 s: restart consumers that read it from their environment before then"
            ),
        ),
        Transition::Finished => (
            EventReason::TokenRotationFinished,
            format!("removed the previous token from {auth}; only the new one is accepted"),
        ),
    };
    tracing::info!(store = %format!("{}/{}", store.namespace, store.name), %reason, "token rotation");
    ctx.events
        .normal(regarding, reason, "RotateToken", note)
        .await;
}

/// A store that cannot be built: nothing is applied; the running server (if
/// any) is left alone and its readiness still reported.
fn invalid_observation(
    store: &DrasiStateStore,
    ctx: &Context,
    invalid: Invalid,
    found: &Dereferenced,
) -> Observation {
    let problem = Problem::new(invalid.reason(), invalid.to_string());
    tracing::warn!(store = %store_key(store), reason = %problem.reason, message = %problem.message, "degraded");
    let mut observed = observation(
        store,
        ctx,
        Workload::from_statefulset(found.statefulset.as_ref()),
    );
    observed.storage.capacity = data_pvc(store, &found.pvcs).and_then(pvc_capacity);
    observed.problem = Some(problem);
    observed
}

/// A store whose `spec.restore` cannot be set up yet: nothing is applied;
/// it waits for the backup or needs a human.
fn restore_blocked_observation(
    store: &DrasiStateStore,
    ctx: &Context,
    found: &Dereferenced,
) -> Observation {
    let mut observed = observation(
        store,
        ctx,
        Workload::from_statefulset(found.statefulset.as_ref()),
    );
    observed.storage.capacity = data_pvc(store, &found.pvcs).and_then(pvc_capacity);
    if let Err(blocked) = &found.restore {
        tracing::info!(store = %store_key(store), reason = %blocked, "restore not set up yet");
        match blocked.status() {
            Blocked::Waiting(progress) => observed.progress = Some(progress),
            Blocked::Problem(problem) => observed.problem = Some(problem),
        }
    }
    observed
}

fn applied_observation(store: &DrasiStateStore, ctx: &Context, applied: Applied) -> Observation {
    let mut observed = observation(
        store,
        ctx,
        Workload::from_statefulset(applied.statefulset.as_ref()),
    );
    let pvc = data_pvc(store, &applied.pvcs);
    observed.storage.capacity = pvc.and_then(pvc_capacity);
    observed.problem = applied.problem;
    observed.progress = applied.progress.or_else(|| pvc.and_then(pvc_progress));
    observed
}

/// The phase's requeue, at most [`REPLICATION_REQUEUE`] for a store whose
/// replicas were probed, or sooner when a token rotation takes its next
/// step (one second late, so the step is due when the pass runs).
fn requeue_for(
    status: &DrasiStateStoreStatus,
    rotation_due: Option<Duration>,
    probed: bool,
) -> Action {
    let by_phase = match status.phase {
        Some(Phase::Ready) => READY_REQUEUE,
        Some(Phase::Degraded) => DEGRADED_REQUEUE,
        // Paused stores change only with their spec, which bumps the
        // generation and triggers a reconcile anyway.
        Some(Phase::Paused) => return Action::await_change(),
        _ => PROGRESSING_REQUEUE,
    };
    let by_phase = if probed {
        by_phase.min(REPLICATION_REQUEUE)
    } else {
        by_phase
    };
    match rotation_due {
        Some(due) => Action::requeue(by_phase.min(due + Duration::from_secs(1))),
        None => Action::requeue(by_phase),
    }
}

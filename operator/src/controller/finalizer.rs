//! Cleanup when a `DrasiStateStore` is deleted (finalizer
//! `drasi.io/state-store-cleanup`).
//!
//! Owned objects (StatefulSet, Services, Secrets) carry owner references and
//! are removed by Kubernetes garbage collection. PVCs created from the
//! volumeClaimTemplate are not owned by the store, so the finalizer honours
//! `pvcRetention.whenDeleted`: `Retain` keeps them, `Delete` deletes every
//! PVC labelled for this instance.
//!
//! While cleanup runs the status says so: phase `Terminating`,
//! `Ready=False/Terminating`, `Progressing=True/Terminating` (what cleanup
//! does) and, while it keeps failing, `Degraded=True/CleanupFailed`. These
//! writes are best effort: the status is informational and must never be
//! the reason a deletion hangs.
//!
//! The finalizer never blocks deletion forever: when the namespace is
//! terminating (everything in it goes anyway) or cleanup failed
//! [`MAX_CLEANUP_ATTEMPTS`] times in a row, it is removed regardless, with a
//! warning event.

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::api::{self, ApiError};
use super::error::Error;
use super::events::EventReason;
use super::status::terminating_status;
use super::{Context, store_key};
use crate::crd::{DrasiStateStore, Phase, PvcRetentionPolicy};
use crate::labels::selector_string;

/// The finalizer that lets the operator honour `pvcRetention.whenDeleted`.
pub const FINALIZER: &str = "drasi.io/state-store-cleanup";

/// Consecutive failed cleanups (about four minutes with the backoff) after
/// which the finalizer is removed anyway.
pub const MAX_CLEANUP_ATTEMPTS: u32 = 8;

pub async fn cleanup(store: &DrasiStateStore, ctx: &Context) -> Result<Action, Error> {
    let key = store_key(store);
    let namespace = store
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let regarding = store.object_ref(&());
    // Counted as Terminating until the finalizer is released (the store
    // then leaves the gauge), including while cleanup keeps failing.
    ctx.metrics.set_phase(&key, Some(Phase::Terminating));

    if namespace_terminating(ctx, &namespace).await {
        // No status write: everything in the namespace goes at once anyway.
        tracing::info!(store = %key, "namespace is terminating, releasing the finalizer");
        ctx.metrics.set_phase(&key, None);
        return Ok(Action::await_change());
    }

    let plan = cleanup_plan(store);
    // Once per deletion: a retry after a failure keeps the failure status
    // (rewritten below only if the error changes) instead of flapping
    // Degraded back to False before each attempt.
    let already_terminating =
        store.status.as_ref().and_then(|s| s.phase) == Some(Phase::Terminating);
    if !already_terminating {
        report_terminating(store, ctx, &namespace, plan, None).await;
    }

    match delete_pvcs_if_requested(store, ctx, &namespace).await {
        Ok(note) => {
            ctx.metrics.set_phase(&key, None);
            tracing::info!(store = %key, "{note}");
            ctx.events
                .normal(&regarding, EventReason::Cleanup, "Delete", note)
                .await;
            Ok(Action::await_change())
        }
        Err(error) => {
            // The error policy counts this failure only after we return; the
            // count so far is the number of earlier consecutive failures.
            let failures = ctx.backoff.failures(&key) + 1;
            if failures >= MAX_CLEANUP_ATTEMPTS {
                let note = format!(
                    "cleanup failed {failures} times, removing the finalizer anyway so deletion \
                     is not blocked; delete leftover PVCs by hand: {error}"
                );
                tracing::error!(store = %key, "{note}");
                ctx.events
                    .warning(&regarding, EventReason::CleanupSkipped, "Delete", note)
                    .await;
                ctx.metrics.set_phase(&key, None);
                Ok(Action::await_change())
            } else {
                let failure = error.to_string();
                report_terminating(store, ctx, &namespace, plan, Some(&failure)).await;
                Err(error)
            }
        }
    }
}

/// What cleanup does, for the `Progressing` condition.
fn cleanup_plan(store: &DrasiStateStore) -> &'static str {
    match store.spec.pvc_retention.when_deleted {
        PvcRetentionPolicy::Retain => {
            "deleting: pvcRetention.whenDeleted is Retain, the data volume is kept; owned \
             objects are garbage-collected once the finalizer is released"
        }
        PvcRetentionPolicy::Delete => {
            "deleting: pvcRetention.whenDeleted is Delete, the data volume is being deleted; \
             owned objects are garbage-collected once the finalizer is released"
        }
    }
}

/// Writes the `Terminating` status when it differs from the current one.
/// Best effort: a failure is logged and does not hold up the deletion.
async fn report_terminating(
    store: &DrasiStateStore,
    ctx: &Context,
    namespace: &str,
    plan: &str,
    failure: Option<&str>,
) {
    let now = Time(Timestamp::now());
    let status = terminating_status(
        store.status.as_ref(),
        store.metadata.generation,
        plan,
        failure,
        &now,
    );
    if store.status.as_ref() == Some(&status) {
        return;
    }
    let name = store.name_any();
    if let Err(error) =
        api::apply_status::<DrasiStateStore>(&ctx.client, namespace, &name, &status).await
    {
        tracing::warn!(store = %store_key(store), %error, "could not write the Terminating status");
    }
}

async fn delete_pvcs_if_requested(
    store: &DrasiStateStore,
    ctx: &Context,
    namespace: &str,
) -> Result<String, Error> {
    let name = store.name_any();
    let selector = selector_string(&name);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let pvcs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            ApiError::new(
                "listing",
                format!("PersistentVolumeClaims of {namespace}/{name}"),
                e,
            )
        })?;
    let names: Vec<String> = pvcs.items.iter().map(ResourceExt::name_any).collect();
    match store.spec.pvc_retention.when_deleted {
        PvcRetentionPolicy::Retain if names.is_empty() => {
            Ok("no data volume to retain".to_string())
        }
        PvcRetentionPolicy::Retain => Ok(format!(
            "pvcRetention.whenDeleted is Retain: kept PVC(s) {}",
            names.join(", ")
        )),
        PvcRetentionPolicy::Delete => {
            for pvc in &names {
                api::delete::<PersistentVolumeClaim>(
                    &ctx.client,
                    namespace,
                    pvc,
                    &DeleteParams::default(),
                )
                .await?;
            }
            Ok(if names.is_empty() {
                "pvcRetention.whenDeleted is Delete: no PVC to delete".to_string()
            } else {
                format!(
                    "pvcRetention.whenDeleted is Delete: deleted PVC(s) {}",
                    names.join(", ")
                )
            })
        }
    }
}

/// Whether the namespace is being deleted. Errors count as "no": the normal
/// cleanup then runs and the attempt limit still bounds it.
async fn namespace_terminating(ctx: &Context, namespace: &str) -> bool {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(ns)) => {
            ns.metadata.deletion_timestamp.is_some()
                || ns.status.and_then(|s| s.phase).as_deref() == Some("Terminating")
        }
        Ok(None) => true,
        Err(error) => {
            tracing::debug!(namespace, %error, "could not read namespace");
            false
        }
    }
}

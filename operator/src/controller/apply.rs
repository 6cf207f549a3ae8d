//! The `apply` step: server-side applies the desired objects in order
//! (deleting the store's NetworkPolicy when `networkPolicy.enabled` is
//! turned off, and the peers Service and PodDisruptionBudget of a store
//! that does not need them) and runs the volume-expansion state machine around the
//! StatefulSet.
//!
//! StatefulSet states, per pass:
//! - none: create it (event `Created`, unless it is being re-created at the
//!   end of an expansion);
//! - being deleted (left from an expansion): wait, `VolumeExpanding`;
//! - template size unchanged: apply;
//! - size grew, a PVC cannot expand: leave it alone, `Degraded`;
//! - size grew: patch the PVCs, orphan-delete the StatefulSet (event
//!   `VolumeExpansionStarted`) and re-create it once it is gone.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Context;
use super::api::{self, ApiError, describe};
use super::dereference::Dereferenced;
use super::events::EventReason;
use super::expansion::{self, ExpansionPlan};
use super::status::{Problem, Progress, ProgressingReason, has_reason};
use super::unchanged;
use crate::builders::{
    DesiredObjects, connection_secret_name, peer_token_secret_name, peers_service_name,
};
use crate::validated::ValidatedStore;

/// Applying a store's objects failed.
#[derive(Debug, thiserror::Error)]
#[error("applying the objects of DrasiStateStore {store}: {source}")]
pub struct ApplyError {
    pub store: String,
    #[source]
    pub source: ApiError,
}

/// What the pass left behind, for the status.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The StatefulSet as the API server returned it; `None` while it is
    /// re-created for a volume expansion.
    pub statefulset: Option<StatefulSet>,
    /// The store's PVCs, after any expansion patch.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The volume must grow but cannot.
    pub problem: Option<Problem>,
    /// A volume expansion in flight.
    pub progress: Option<Progress>,
}

pub async fn apply(
    ctx: &Context,
    store: &ValidatedStore<'_>,
    desired: &DesiredObjects,
    found: Dereferenced,
    regarding: &ObjectReference,
) -> Result<Applied, ApplyError> {
    Applier {
        client: &ctx.client,
        ctx,
        store,
        regarding,
    }
    .run(desired, found)
    .await
    .map_err(|source| ApplyError {
        store: format!("{}/{}", store.namespace, store.name),
        source,
    })
}

struct Applier<'a> {
    client: &'a Client,
    ctx: &'a Context,
    store: &'a ValidatedStore<'a>,
    regarding: &'a ObjectReference,
}

impl Applier<'_> {
    async fn run(
        &self,
        desired: &DesiredObjects,
        found: Dereferenced,
    ) -> Result<Applied, ApiError> {
        // Secrets before the pod that mounts them; the headless Service
        // before the StatefulSet it governs.
        let existing = &found.existing;
        if let Some(auth) = &desired.auth_secret {
            self.apply_changed(existing.auth_secret.as_ref(), auth)
                .await?;
            if self.store.token.generated {
                tracing::info!(store = %self.key(), secret = %auth.name_any(), "generated the store's token");
            }
        }
        if let Some(peer) = &desired.peer_token_secret {
            self.apply_changed(existing.peer_token_secret.as_ref(), peer)
                .await?;
            if self.store.peer_token.as_ref().is_some_and(|t| t.generated) {
                tracing::info!(store = %self.key(), secret = %peer.name_any(), "generated the replicas' peer token");
            }
        }
        self.apply_changed(
            existing.connection_secret.as_ref(),
            &desired.connection_secret,
        )
        .await?;
        match (&desired.network_policy, &existing.network_policy) {
            (Some(policy), found) => {
                self.apply_changed(found.as_ref(), policy).await?;
            }
            // `networkPolicy.enabled` was turned off: remove ours.
            (None, Some(policy)) => self.delete_unneeded(policy).await?,
            (None, None) => {}
        }
        self.apply_changed(
            existing.headless_service.as_ref(),
            &desired.headless_service,
        )
        .await?;
        // A store with one replica has no peers and nothing for a budget to
        // protect: remove its own leftovers, such as those of a store whose
        // StatefulSet was deleted and re-created with `replicas: 1`.
        match (&desired.peers_service, &existing.peers_service) {
            (Some(service), found) => {
                self.apply_changed(found.as_ref(), service).await?;
            }
            (None, Some(service)) => self.delete_unneeded(service).await?,
            (None, None) => {}
        }
        self.apply_changed(existing.service.as_ref(), &desired.service)
            .await?;
        match (
            &desired.pod_disruption_budget,
            &existing.pod_disruption_budget,
        ) {
            (Some(budget), found) => {
                self.apply_changed(found.as_ref(), budget).await?;
            }
            (None, Some(budget)) => self.delete_unneeded(budget).await?,
            (None, None) => {}
        }

        let mut applied = Applied {
            statefulset: None,
            pvcs: found.pvcs,
            problem: None,
            progress: None,
        };
        match found.statefulset {
            Some(old) if old.metadata.deletion_timestamp.is_some() => {
                // Applying now would patch the object being deleted.
                applied.progress = Some(Progress::new(
                    ProgressingReason::VolumeExpanding,
                    "waiting for the old StatefulSet to be deleted (its pods keep running) before \
                     re-creating it with the new volume size",
                ));
            }
            Some(existing) => {
                let plan = expansion::plan(
                    &existing,
                    &desired.statefulset,
                    &applied.pvcs,
                    &found.storage_classes,
                );
                match plan {
                    ExpansionPlan::NotNeeded => {
                        // `kubectl scale` goes through the scale
                        // subresource, which the skip of unchanged applies
                        // does not see. A replicated store's pods list
                        // exactly their peers: an extra pod cannot join
                        // and a missing one is a lost voter, so its count
                        // is taken back at once. (A single server keeps
                        // today's behaviour: a hand-made scale to 0 stays
                        // until the spec changes.)
                        let scaled = desired.peers_service.is_some()
                            && existing.spec.replicas != desired.statefulset.spec.replicas;
                        let current = (!scaled).then_some(&existing);
                        applied.statefulset =
                            Some(self.apply_changed(current, &desired.statefulset).await?);
                    }
                    ExpansionPlan::Blocked(problem) => {
                        applied.problem = Some(problem);
                        applied.statefulset = Some(existing);
                    }
                    ExpansionPlan::Expand { from, to, pvcs } => {
                        self.expand(desired, &mut applied, &from, &to, &pvcs)
                            .await?;
                    }
                }
            }
            None => {
                let created = self.apply_changed(None, &desired.statefulset).await?;
                // At the end of a volume expansion the StatefulSet is
                // re-created, not new.
                let expanding = has_reason(
                    self.store.store().status.as_ref(),
                    ProgressingReason::VolumeExpanding,
                );
                if !expanding {
                    let name = &self.store.name;
                    let note = if desired.peers_service.is_some() {
                        format!(
                            "created StatefulSet {name} of {} replicas, Services {name}, \
                             {name}-headless and {}, PodDisruptionBudget {name}, and Secrets {} \
                             and {}",
                            self.store.replicas,
                            peers_service_name(name),
                            connection_secret_name(name),
                            peer_token_secret_name(name)
                        )
                    } else {
                        format!(
                            "created StatefulSet {name}, Services {name} and {name}-headless, and Secret {}",
                            connection_secret_name(name)
                        )
                    };
                    self.ctx
                        .events
                        .normal(self.regarding, EventReason::Created, "Create", note)
                        .await;
                }
                applied.statefulset = Some(created);
            }
        }
        Ok(applied)
    }

    /// Patches the PVCs to `to` and deletes the StatefulSet, orphaning its
    /// pods, then re-creates it if the API server already removed it.
    async fn expand(
        &self,
        desired: &DesiredObjects,
        applied: &mut Applied,
        from: &Quantity,
        to: &Quantity,
        pvcs: &[String],
    ) -> Result<(), ApiError> {
        let (client, namespace, name) = (
            self.client,
            self.store.namespace.as_str(),
            self.store.name.as_str(),
        );
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
        self.ctx
            .events
            .normal(
                self.regarding,
                EventReason::VolumeExpansionStarted,
                "ExpandVolume",
                note,
            )
            .await;
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        // A merge patch of only the request: the StatefulSet controller owns
        // the rest of the PVC, and a second pass re-sends the same size
        // harmlessly.
        let patch =
            serde_json::json!({ "spec": { "resources": { "requests": { "storage": to } } } });
        for pvc in pvcs {
            let patched = api
                .patch(pvc, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| {
                    ApiError::new(
                        "expanding",
                        describe::<PersistentVolumeClaim>(namespace, pvc),
                        e,
                    )
                })?;
            if let Some(slot) = applied.pvcs.iter_mut().find(|p| p.name_any() == *pvc) {
                *slot = patched;
            }
        }
        api::delete::<StatefulSet>(client, namespace, name, &DeleteParams::orphan()).await?;
        match api::get_opt::<StatefulSet>(client, namespace, name).await? {
            // Orphan deletion is asynchronous on a real API server.
            Some(_) => {
                applied.progress = Some(Progress::new(
                    ProgressingReason::VolumeExpanding,
                    format!(
                        "expanding the volume to {}: re-creating the StatefulSet",
                        to.0
                    ),
                ));
            }
            None => {
                applied.statefulset = Some(self.apply_changed(None, &desired.statefulset).await?);
            }
        }
        Ok(())
    }

    /// Deletes an object the store controls but no longer needs (`dereference`
    /// hands out only objects this store controls in that case).
    async fn delete_unneeded<K>(&self, object: &K) -> Result<(), ApiError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned,
    {
        let name = object.name_any();
        api::delete::<K>(
            self.client,
            &self.store.namespace,
            &name,
            &DeleteParams::default(),
        )
        .await?;
        tracing::info!(store = %self.key(), object = %describe::<K>(&self.store.namespace, &name), "deleted an object the store no longer needs");
        Ok(())
    }

    /// Applies `desired` unless `existing` already is exactly it; returns
    /// the object as the API server holds it.
    async fn apply_changed<K>(&self, existing: Option<&K>, desired: &K) -> Result<K, ApiError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned
            + Serialize,
    {
        let stamped = unchanged::stamped(desired);
        match existing {
            Some(existing) if unchanged::is_current(existing.meta(), stamped.meta()) => {
                Ok(existing.clone())
            }
            _ => api::apply(self.client, &self.store.namespace, &stamped).await,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.store.namespace, self.store.name)
    }
}

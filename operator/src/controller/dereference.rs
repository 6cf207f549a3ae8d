//! The `dereference` step: every read a reconcile pass needs, before any
//! decision. The token and TLS Secrets the store references, its
//! StatefulSet, that StatefulSet's PVCs, and, only when the volume must
//! grow, their StorageClasses.
//!
//! The one decision taken here is where a token rotation of the generated
//! `<name>-auth` stands, because it needs the clock (`crate::rotation`,
//! pure, is handed `now`).
//!
//! A referenced object that does not exist is data (`None`), not an
//! error: `validate` turns it into a reason. Only failed API calls are
//! errors, retried with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};

use super::api::{self, ApiError, describe};
use super::expansion::{growth, pvc_names, storage_class_name};
use super::restore::{self, RestoreBlocked};
use crate::builders::{
    built_replicas, built_with_peer_tls, connection_secret_name, data_pvc_name, generate_token,
    headless_service_name, peer_token_secret_name, peers_service_name,
};
use crate::crd::{DrasiStateStore, RestoredFrom};
use crate::labels;
use crate::rotation::{self, RotationState, Transition};
use crate::validated::{Referenced, SecretData, TokenSecret, TokenSource};

/// Reading what a store references failed.
#[derive(Debug, thiserror::Error)]
#[error("reading what DrasiStateStore {store} references: {source}")]
pub struct DereferenceError {
    pub store: String,
    #[source]
    pub source: ApiError,
}

/// The store's objects that exist, beyond the StatefulSet: applies of
/// unchanged ones are skipped.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// The generated `<name>-auth`; `None` with `auth.existingSecret`.
    pub auth_secret: Option<Secret>,
    pub connection_secret: Option<Secret>,
    /// `<name>`: with `networkPolicy.enabled` whatever exists, else only
    /// one this store controls (to delete).
    pub network_policy: Option<NetworkPolicy>,
    pub service: Option<Service>,
    pub headless_service: Option<Service>,
    /// `<name>-peer-token`; read only for a replicated store.
    pub peer_token_secret: Option<Secret>,
    /// `<name>-peers` and the PodDisruptionBudget `<name>`: for a
    /// replicated store whatever exists, else only ones this store controls
    /// (to delete).
    pub peers_service: Option<Service>,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
}

/// What one pass read from the cluster.
#[derive(Debug, Clone)]
pub struct Dereferenced {
    pub referenced: Referenced,
    pub existing: Existing,
    /// The store's StatefulSet, as the API server holds it now.
    pub statefulset: Option<StatefulSet>,
    /// The StatefulSet's PVCs that exist (the data PVC `data-<name>-0` when
    /// there is no StatefulSet).
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The StorageClasses of `pvcs`, read only when the volume must grow;
    /// `None`: the class does not exist.
    pub storage_classes: BTreeMap<String, Option<StorageClass>>,
    /// When the token rotation in flight takes its next step.
    pub rotation_due: Option<Duration>,
    /// The step this pass takes, if any (for an event once applied).
    pub rotation_transition: Option<Transition>,
    /// `spec.restore` resolved, or why it cannot be yet.
    pub restore: Result<Option<RestoredFrom>, RestoreBlocked>,
}

pub async fn dereference(
    client: &Client,
    store: &DrasiStateStore,
    namespace: &str,
) -> Result<Dereferenced, DereferenceError> {
    read(client, store, namespace)
        .await
        .map_err(|source| DereferenceError {
            store: format!("{namespace}/{}", store.name_any()),
            source,
        })
}

async fn read(
    client: &Client,
    store: &DrasiStateStore,
    namespace: &str,
) -> Result<Dereferenced, ApiError> {
    let name = store.name_any();
    let mut ownership = Ownership::new(store, namespace);
    // Created once and then always read back: a token is rotated only when
    // `spec.auth.rotation.trigger` asks for it, never behind the users'
    // back. Names the CRD would reject are looked up as
    // well; they do not exist, and `validate` reports the spec first.
    let mut auth_secret = None;
    let mut rotation = RotationState::default();
    let mut rotation_due = None;
    let mut rotation_transition = None;
    let token = match TokenSecret::of(store) {
        TokenSecret::Existing(secret) => {
            let found = api::get_opt::<Secret>(client, namespace, &secret).await?;
            ownership.user_secret(&secret, found.as_ref());
            TokenSource::Stored(found.map(data_of))
        }
        TokenSecret::Generated(secret) => {
            let found = api::get_opt::<Secret>(client, namespace, &secret).await?;
            ownership.owned(found.as_ref());
            // The rotation advances here, where the clock is read; what it
            // decides is applied by this very pass (`<name>-auth` records
            // it, so a failed apply is simply decided again).
            let generated =
                rotation::generated_token(store, found.as_ref(), Timestamp::now(), generate_token);
            auth_secret = found;
            rotation = generated.rotation;
            rotation_due = generated.due_in;
            rotation_transition = generated.transition;
            generated.source
        }
    };
    let tls_secret = match &store.spec.tls {
        Some(tls) => {
            let found = api::get_opt::<Secret>(client, namespace, &tls.secret_name).await?;
            ownership.user_secret(&tls.secret_name, found.as_ref());
            found.map(data_of)
        }
        None => None,
    };
    let connection_secret =
        api::get_opt::<Secret>(client, namespace, &connection_secret_name(&name)).await?;
    ownership.owned(connection_secret.as_ref());
    // The NetworkPolicy `<name>` counts as the store's only while
    // `networkPolicy.enabled`: someone else's policy of that name then
    // blocks the store (it is never taken over), but with the field off it
    // is none of the store's business. One the store owns is kept to be
    // deleted when the field is turned off.
    let network_policy = api::get_opt::<NetworkPolicy>(client, namespace, &name).await?;
    let network_policy = if store
        .spec
        .network_policy
        .as_ref()
        .is_some_and(|p| p.enabled)
    {
        ownership.owned(network_policy.as_ref());
        network_policy
    } else {
        network_policy.filter(|p| controlled_by(&p.metadata, store))
    };
    let service = api::get_opt::<Service>(client, namespace, &name).await?;
    ownership.owned(service.as_ref());
    let headless_service =
        api::get_opt::<Service>(client, namespace, &headless_service_name(&name)).await?;
    ownership.owned(headless_service.as_ref());
    // Like the NetworkPolicy: a replicated store needs these and never
    // takes over someone else's; a single one only deletes its own.
    let replicated = store.spec.replicas.is_replicated();
    let mut peer_token = TokenSource::default();
    let mut peer_token_secret = None;
    if replicated {
        let secret = peer_token_secret_name(&name);
        let found = api::get_opt::<Secret>(client, namespace, &secret).await?;
        ownership.owned(found.as_ref());
        // Generated once and then always read back, like `<name>-auth`.
        peer_token = match &found {
            Some(secret) => TokenSource::Stored(Some(secret.data.clone().unwrap_or_default())),
            None => TokenSource::New(generate_token()),
        };
        peer_token_secret = found;
    }
    let peers_service =
        api::get_opt::<Service>(client, namespace, &peers_service_name(&name)).await?;
    let pod_disruption_budget =
        api::get_opt::<PodDisruptionBudget>(client, namespace, &name).await?;
    let (peers_service, pod_disruption_budget) = if replicated {
        ownership.owned(peers_service.as_ref());
        ownership.owned(pod_disruption_budget.as_ref());
        (peers_service, pod_disruption_budget)
    } else {
        (
            peers_service.filter(|s| controlled_by(&s.metadata, store)),
            pod_disruption_budget.filter(|p| controlled_by(&p.metadata, store)),
        )
    };

    let statefulset = api::get_opt::<StatefulSet>(client, namespace, &name).await?;
    ownership.owned(statefulset.as_ref());
    let pvc_names = statefulset
        .as_ref()
        .map_or_else(|| vec![data_pvc_name(&name)], pvc_names);
    let mut pvcs = Vec::new();
    for pvc in pvc_names {
        if let Some(pvc) = api::get_opt::<PersistentVolumeClaim>(client, namespace, &pvc).await? {
            pvcs.push(pvc);
        }
    }

    let mut storage_classes = BTreeMap::new();
    let grows = statefulset
        .as_ref()
        .is_some_and(|sts| growth(sts, &store.spec.storage.size).is_some());
    if grows {
        let api: Api<StorageClass> = Api::all(client.clone());
        for class in pvcs.iter().filter_map(storage_class_name) {
            if !storage_classes.contains_key(class) {
                let found = api
                    .get_opt(class)
                    .await
                    .map_err(|e| ApiError::new("reading", format!("StorageClass {class}"), e))?;
                storage_classes.insert(class.to_owned(), found);
            }
        }
    }

    let restore = restore::lookup(client, store, namespace).await?;

    Ok(Dereferenced {
        referenced: Referenced {
            token,
            tls_secret,
            not_owned: ownership.not_owned,
            not_opted_in: ownership.not_opted_in,
            rotation,
            restore: restore.clone().ok().flatten(),
            peer_token,
            // A StatefulSet being deleted for a volume expansion still
            // tells what its pods were built for.
            existing_replicas: statefulset.as_ref().map(built_replicas),
            existing_peer_tls: statefulset.as_ref().map(built_with_peer_tls),
        },
        restore,
        rotation_due,
        rotation_transition,
        existing: Existing {
            auth_secret,
            connection_secret,
            network_policy,
            service,
            headless_service,
            peer_token_secret,
            peers_service,
            pod_disruption_budget,
        },
        statefulset,
        pvcs,
        storage_classes,
    })
}

fn data_of(secret: Secret) -> SecretData {
    secret.data.unwrap_or_default()
}

/// Who controls the objects found under the store's names, and whether the
/// user's Secrets opted in to being mounted.
struct Ownership<'a> {
    store: &'a DrasiStateStore,
    namespace: &'a str,
    not_owned: Vec<String>,
    not_opted_in: Vec<String>,
}

impl<'a> Ownership<'a> {
    fn new(store: &'a DrasiStateStore, namespace: &'a str) -> Self {
        Self {
            store,
            namespace,
            not_owned: Vec::new(),
            not_opted_in: Vec::new(),
        }
    }

    /// An object named like one the store owns: it must be controlled by
    /// this very store (its UID, not only its name: a store deleted and
    /// re-created under the same name gets a new UID, and the old objects
    /// are garbage collected with the old one).
    fn owned<K: Resource<DynamicType = ()>>(&mut self, found: Option<&K>) {
        let Some(object) = found else { return };
        if !controlled_by(object.meta(), self.store) {
            self.not_owned.push(describe::<K>(
                self.namespace,
                &object.meta().name.clone().unwrap_or_default(),
            ));
        }
    }

    fn user_secret(&mut self, name: &str, found: Option<&Secret>) {
        if let Some(secret) = found
            && !labels::opted_in(secret.metadata.labels.as_ref(), &self.store.name_any())
        {
            self.not_opted_in.push(name.to_owned());
        }
    }
}

/// Whether `meta` has a controller owner reference to `store`'s UID.
pub fn controlled_by(meta: &ObjectMeta, store: &DrasiStateStore) -> bool {
    let Some(uid) = store.metadata.uid.as_deref() else {
        return false;
    };
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid && r.kind == DrasiStateStore::kind(&()))
}

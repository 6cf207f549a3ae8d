//! The `dereference` step: every read a reconcile pass needs, before any
//! decision. The token and TLS Secrets the store references, its
//! StatefulSet, that StatefulSet's PVCs, and, only when the volume must
//! grow, their StorageClasses.
//!
//! A referenced object that does not exist is data (`None`), not an
//! error: `validate` turns it into a reason. Only failed API calls are
//! errors, retried with backoff.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::api::{self, ApiError};
use super::expansion::{growth, pvc_names, storage_class_name};
use crate::builders::{data_pvc_name, generate_token};
use crate::crd::DrasiStateStore;
use crate::validated::{Referenced, TokenSecret, TokenSource};

/// Reading what a store references failed.
#[derive(Debug, thiserror::Error)]
#[error("reading what DrasiStateStore {store} references: {source}")]
pub struct DereferenceError {
    pub store: String,
    #[source]
    pub source: ApiError,
}

/// What one pass read from the cluster.
#[derive(Debug, Clone)]
pub struct Dereferenced {
    pub referenced: Referenced,
    /// The store's StatefulSet, as the API server holds it now.
    pub statefulset: Option<StatefulSet>,
    /// The StatefulSet's PVCs that exist (the data PVC `data-<name>-0` when
    /// there is no StatefulSet).
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The StorageClasses of `pvcs`, read only when the volume must grow;
    /// `None`: the class does not exist.
    pub storage_classes: BTreeMap<String, Option<StorageClass>>,
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
    // Created once and then always read back: a token is never rotated
    // behind the users' back. Names the CRD would reject are looked up as
    // well; they do not exist, and `validate` reports the spec first.
    let token = match TokenSecret::of(store) {
        TokenSecret::Existing(secret) => {
            TokenSource::Stored(secret_data(client, namespace, &secret).await?)
        }
        TokenSecret::Generated(secret) => match secret_data(client, namespace, &secret).await? {
            Some(data) => TokenSource::Stored(Some(data)),
            None => TokenSource::New(generate_token()),
        },
    };
    let tls_secret = match &store.spec.tls {
        Some(tls) => secret_data(client, namespace, &tls.secret_name).await?,
        None => None,
    };

    let statefulset = api::get_opt::<StatefulSet>(client, namespace, &name).await?;
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

    Ok(Dereferenced {
        referenced: Referenced { token, tls_secret },
        statefulset,
        pvcs,
        storage_classes,
    })
}

/// The `data` of a Secret, `None` when it does not exist.
async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<crate::validated::SecretData>, ApiError> {
    Ok(api::get_opt::<Secret>(client, namespace, name)
        .await?
        .map(|secret| secret.data.unwrap_or_default()))
}

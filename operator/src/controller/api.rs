//! The Kubernetes API calls the reconciler makes, each failing with an
//! [`ApiError`] that names the action and the object.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Field manager of every server-side apply the operator makes, and the
/// reporting controller of its events.
pub const FIELD_MANAGER: &str = "drasi-store-operator";

/// A failed API call: which action on which object, and why.
#[derive(Debug, thiserror::Error)]
#[error("{action} {target}: {source}")]
pub struct ApiError {
    pub action: &'static str,
    pub target: String,
    #[source]
    pub source: kube::Error,
}

impl ApiError {
    pub fn new(action: &'static str, target: impl Into<String>, source: kube::Error) -> Self {
        Self {
            action,
            target: target.into(),
            source,
        }
    }

    /// Low-cardinality label for `reconcile_errors_total{reason}`.
    pub fn metric_reason(&self) -> &'static str {
        match &self.source {
            kube::Error::Api(status) if status.is_not_found() => "NotFound",
            kube::Error::Api(status) if status.code == 409 => "Conflict",
            kube::Error::Api(status) if status.code == 403 => "Forbidden",
            kube::Error::Api(status) if status.code == 422 => "Invalid",
            kube::Error::Api(_) => "ApiError",
            _ => "Transport",
        }
    }
}

/// `force`: the operator owns every field it sets; when a human edits one
/// with kubectl, the operator takes it back on the next pass instead of
/// failing with a conflict forever.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side applies `object` in `namespace` and returns what the API
/// server stored (including status, for StatefulSets).
pub async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, ApiError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|e| ApiError::new("applying", describe::<K>(namespace, &name), e))
}

/// Applies the status subresource of a `K` (a store or a backup).
/// Server-side apply (rather than a merge patch) drops fields the new
/// status no longer sets, e.g. `endpoint`.
pub async fn apply_status<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &impl Serialize,
) -> Result<(), ApiError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|e| ApiError::new("updating status of", describe::<K>(namespace, name), e))
}

/// Fetches an object, `None` when it does not exist.
pub async fn get_opt<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>, ApiError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|e| ApiError::new("reading", describe::<K>(namespace, name), e))
}

/// Deletes an object; a missing object counts as deleted.
pub async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), ApiError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(ApiError::new("deleting", describe::<K>(namespace, name), e)),
    }
}

/// `StatefulSet ns/name`, for error messages.
pub fn describe<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", K::kind(&()))
}

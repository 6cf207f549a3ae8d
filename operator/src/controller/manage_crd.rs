//! `--manage-crd`: the operator applies its own CRD at startup.
//!
//! `helm upgrade` installs CRDs from a chart's `crds/` folder only on first
//! install and never upgrades them, so a new operator version would run
//! against an old schema. Applying the CRD (server-side apply, our field
//! manager) keeps the two in step.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::error::Error;
use crate::crd;
use crate::labels::FIELD_MANAGER;

/// How often the CRD is re-read while waiting for `Established`.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ManageCrdError {
    #[error(transparent)]
    Api(#[from] Error),
    #[error("CustomResourceDefinition {name} not established after {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
}

/// Applies the CRD and waits until the API server serves it. Waits by
/// polling GET rather than a watch, so the ClusterRole needs no list/watch
/// on CustomResourceDefinitions.
pub async fn apply_crd(client: &Client, timeout: Duration) -> Result<(), ManageCrdError> {
    let crd = crd::crd();
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let target = format!("CustomResourceDefinition {name}");
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|e| Error::kube("applying", target.clone(), e))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api
            .get(&name)
            .await
            .map_err(|e| Error::kube("reading", target.clone(), e))?;
        if is_established(&current) {
            tracing::info!(crd = %name, "applied CustomResourceDefinition");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ManageCrdError::NotEstablished { name, timeout });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

//! `--manage-crd`: the operator applies its own CRD at startup.
//!
//! `helm upgrade` installs CRDs from a chart's `crds/` folder only on first
//! install and never upgrades them, so a new operator version would run
//! against an old schema. Applying the CRD (server-side apply, our field
//! manager) keeps the two in step.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch};
use kube::{Client, ResourceExt};

use kube::runtime::wait::Condition;
use kube::runtime::wait::conditions::is_crd_established;

use super::api::{ApiError, apply_params};
use crate::crd;

/// How often the CRD is re-read while waiting for `Established`.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ManageCrdError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("CustomResourceDefinition {name} not established after {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
}

/// Applies every CRD of the operator and waits until the API server serves
/// each. Waits by polling GET rather than a watch, so the ClusterRole needs
/// no list/watch on CustomResourceDefinitions.
pub async fn apply_crd(client: &Client, timeout: Duration) -> Result<(), ManageCrdError> {
    for (_, crd) in crd::all_crds() {
        apply_one(client, crd, timeout).await?;
    }
    Ok(())
}

async fn apply_one(
    client: &Client,
    crd: CustomResourceDefinition,
    timeout: Duration,
) -> Result<(), ManageCrdError> {
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let target = format!("CustomResourceDefinition {name}");
    api.patch(&name, &apply_params(), &Patch::Apply(&crd))
        .await
        .map_err(|e| ApiError::new("applying", target.clone(), e))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api
            .get(&name)
            .await
            .map_err(|e| ApiError::new("reading", target.clone(), e))?;
        if is_crd_established().matches_object(Some(&current)) {
            tracing::info!(crd = %name, "applied CustomResourceDefinition");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ManageCrdError::NotEstablished { name, timeout });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

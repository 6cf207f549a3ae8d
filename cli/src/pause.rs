//! `pause` / `resume`: set or clear `spec.paused`, which makes the operator
//! leave every object of the store as it is (running pods keep running).

use anyhow::Context as _;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::cluster::Cluster;

/// Sets `spec.paused` with a merge patch. Returns false when it already had
/// that value (nothing is written then).
pub async fn set_paused(cluster: &Cluster, store: &str, paused: bool) -> anyhow::Result<bool> {
    let current = cluster.store(store).await?;
    if current.spec.paused == paused {
        return Ok(false);
    }
    cluster
        .stores()
        .patch(
            store,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "paused": paused } })),
        )
        .await
        .with_context(|| format!("setting spec.paused={paused} on DrasiStateStore {store}"))?;
    Ok(true)
}

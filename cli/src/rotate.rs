//! `rotate-token`: request the operator's zero-downtime rotation of the
//! generated token (docs/token-rotation.md) by setting
//! `spec.auth.rotation.trigger` to a value the store has not seen before.

use anyhow::{Context as _, bail};
use drasi_store_operator::builders::auth_secret_name;
use drasi_store_operator::rotation::STAGE_ANNOTATION;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::cluster::Cluster;

/// What was requested.
#[derive(Debug, Clone, PartialEq)]
pub struct RotationRequest {
    pub trigger: String,
    /// The stage of a rotation already in flight (it finishes first; the
    /// new trigger starts the next one), when `<store>-auth` was readable.
    pub in_flight: Option<String>,
    /// `spec.paused`: the operator starts the rotation only once resumed.
    pub paused: bool,
}

/// A trigger value: the UTC time, made unique against `previous`.
pub fn trigger_value(now: Timestamp, previous: Option<&str>) -> String {
    let base = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    if previous != Some(base.as_str()) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| Some(candidate.as_str()) != previous)
        .expect("an unbounded range yields a candidate")
}

/// Sets a new trigger with a merge patch (other rotation settings such as
/// `gracePeriodSeconds` stay). Refuses a store with
/// `spec.auth.existingSecret`: the operator rotates only the token it
/// generated, a user's Secret is rotated by hand.
pub async fn request(cluster: &Cluster, store: &str) -> anyhow::Result<RotationRequest> {
    let current = cluster.store(store).await?;
    let auth = current.spec.auth.clone().unwrap_or_default();
    if let Some(secret) = &auth.existing_secret {
        bail!(
            "DrasiStateStore {store} uses spec.auth.existingSecret ({secret}): the operator only rotates the token it generates; rotate {secret} by hand as docs/token-rotation.md describes"
        );
    }
    let previous = auth.rotation.and_then(|r| r.trigger);
    let trigger = trigger_value(Timestamp::now(), previous.as_deref());
    // Reading the stage is informational: without `get secrets` the request
    // still goes through.
    let in_flight = cluster
        .api::<Secret>()
        .get_opt(&auth_secret_name(store))
        .await
        .ok()
        .flatten()
        .and_then(|s| s.metadata.annotations)
        .and_then(|a| a.get(STAGE_ANNOTATION).cloned());
    cluster
        .stores()
        .patch(
            store,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "auth": { "rotation": { "trigger": trigger } } } })),
        )
        .await
        .with_context(|| {
            format!("setting spec.auth.rotation.trigger on DrasiStateStore {store}")
        })?;
    Ok(RotationRequest {
        trigger,
        in_flight,
        paused: current.spec.paused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_times_and_never_repeat_the_previous_one() {
        let now: Timestamp = "2026-11-30T16:15:07Z".parse().unwrap();
        assert_eq!(trigger_value(now, None), "20261130T161507Z");
        assert_eq!(trigger_value(now, Some("x")), "20261130T161507Z");
        assert_eq!(
            trigger_value(now, Some("20261130T161507Z")),
            "20261130T161507Z-2"
        );
    }
}

//! The `drasi.io/config-hash` pod template annotation.
//!
//! It is a sha256 over a canonical serialization of the *inputs* that shape
//! the server pod (the spec fields the pod is built from, the resolved image
//! and the names of the Secrets it mounts), not over the rendered template.
//! So:
//! - a change to any of those inputs changes the annotation and rolls the pod;
//! - fields that do not reach the pod (`paused`, `service`, `pvcRetention`,
//!   `storage`, which only affects the claim and is expanded in place) do
//!   not;
//! - the operator's version is not an input: upgrading the operator alone
//!   leaves the annotation, and with it the pod, untouched.
//!
//! Secret *contents* are not inputs either: the server re-reads its token
//! file when the mounted Secret changes, so rotating a token needs no restart.

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::{PodSettings, RestoredFrom};
use crate::validated::ValidatedStore;

/// Bumped only on purpose: changing the serialized inputs changes every
/// store's hash, which restarts every managed pod.
const SCHEMA: &str = "drasi.io/config-hash/v1";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodInputs<'a> {
    image: &'a str,
    image_pull_policy: Option<&'static str>,
    image_pull_secrets: Option<&'a Vec<LocalObjectReference>>,
    resources: Option<&'a ResourceRequirements>,
    durability: &'static str,
    max_key_bytes: Option<i64>,
    max_value_bytes: Option<i64>,
    token_secret: &'a str,
    tls_secret: Option<&'a str>,
    pod: Option<&'a PodSettings>,
    // Skipped when unset, so that the hash of every store without a
    // restore stays what it was before the field existed. Once recorded it
    // never changes (`status.restoredFrom`), so it never rolls a pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore: Option<&'a RestoredFrom>,
    // Skipped with one replica, for the same reason. A replicated store
    // never changes its replica count, but the anti-affinity may change.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anti_affinity: Option<&'static str>,
}

/// Hex sha256 of the pod's inputs.
pub fn config_hash(store: &ValidatedStore<'_>) -> String {
    let spec = store.spec();
    let limits = spec.limits.as_ref();
    let inputs = PodInputs {
        image: &store.image,
        image_pull_policy: spec.image_pull_policy.map(Into::into),
        image_pull_secrets: spec.image_pull_secrets.as_ref(),
        resources: spec.resources.as_ref(),
        durability: spec.durability.into(),
        max_key_bytes: limits.and_then(|l| l.max_key_bytes),
        max_value_bytes: limits.and_then(|l| l.max_value_bytes),
        token_secret: store.token.secret.name(),
        tls_secret: spec.tls.as_ref().map(|t| t.secret_name.as_str()),
        pod: spec.pod.as_ref(),
        restore: store.restore.as_ref(),
        replicas: store.peer_token.is_some().then_some(store.replicas),
        anti_affinity: store
            .peer_token
            .is_some()
            .then(|| spec.anti_affinity.into()),
    };
    // serde_json writes struct fields in declaration order and BTreeMaps in
    // key order, so equal inputs always give equal bytes.
    let canonical = serde_json::to_vec(&inputs).expect("pod inputs serialize to JSON");
    let mut hasher = Sha256::new();
    hasher.update(SCHEMA.as_bytes());
    hasher.update(b"\n");
    hasher.update(&canonical);
    format!("{:x}", hasher.finalize())
}

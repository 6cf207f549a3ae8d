//! The `build` step: pure "desired state" builders, a [`ValidatedStore`]
//! in, every object the operator applies out. No I/O, no randomness and no
//! failure: the same validated store always gives byte-identical objects,
//! so server-side apply then changes nothing and no pod restarts without a
//! reason.

mod config_hash;
mod disruption_budget;
mod image_policy;
mod meta;
mod names;
mod network_policy;
mod restore;
mod secrets;
mod services;
mod statefulset;
mod token;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::crd::DrasiStateStore;
use crate::validated::{self, Invalid, Referenced, TokenSource, ValidatedStore};

pub use config_hash::config_hash;
pub use image_policy::ImagePolicy;
pub use names::*;
pub use network_policy::{backup_pod_labels, default_clients};
pub use restore::{
    RESTORE_CONTAINER, RESTORE_SOURCE_DIR, RESTORE_SOURCE_VOLUME, backup_location_placeholder,
    restore_args,
};
pub use statefulset::{
    RUN_AS_ID, TERMINATION_GRACE_PERIOD_SECONDS, built_replicas, built_with_peer_tls,
    container_security_context, default_resources, peers, pod_security_context, server_args,
};
pub use token::generate_token;

/// Operator-wide settings (from the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    /// Server image used when `spec.image` is unset (`--server-image`).
    pub server_image: String,
    /// Images a store may run (`--allowed-images`).
    pub allowed_images: ImagePolicy,
}

impl BuildContext {
    /// `server_image` as the default, and only its repository allowed.
    pub fn new(server_image: impl Into<String>) -> Self {
        let server_image = server_image.into();
        Self {
            allowed_images: ImagePolicy::new(Vec::<String>::new()).or_repository_of(&server_image),
            server_image,
        }
    }
}

/// Secret values already resolved, for callers that have them at hand
/// rather than Secrets to read (tests that run the built pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInputs {
    /// Content of the `token` key; may hold several tokens, one per line.
    pub token: String,
    /// PEM the clients trust; used when `spec.tls` is set.
    pub ca_cert_pem: Option<String>,
}

impl ResolvedInputs {
    /// The Secrets that would hold these values.
    pub fn referenced(&self) -> Referenced {
        let data = |key: &str, value: &str| {
            validated::SecretData::from([(
                key.to_owned(),
                k8s_openapi::ByteString(value.as_bytes().to_vec()),
            )])
        };
        Referenced {
            token: TokenSource::Stored(Some(data(TOKEN_KEY, &self.token))),
            tls_secret: self.ca_cert_pem.as_deref().map(|ca| data(TLS_CA_KEY, ca)),
            // The peer token is generated, never read from the user: a
            // replicated store gets the placeholder `render` shows.
            peer_token: TokenSource::New(crate::render::GENERATED_TOKEN_PLACEHOLDER.to_owned()),
            ..Referenced::default()
        }
    }
}

/// Every object a store owns.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObjects {
    /// `<name>-auth`; `None` when `spec.auth.existingSecret` is set.
    pub auth_secret: Option<Secret>,
    /// `<name>-peer-token`; only with several replicas.
    pub peer_token_secret: Option<Secret>,
    pub connection_secret: Secret,
    /// `<name>`; only with `spec.networkPolicy.enabled`.
    pub network_policy: Option<NetworkPolicy>,
    pub service: Service,
    pub headless_service: Service,
    /// `<name>-peers`; only with several replicas.
    pub peers_service: Option<Service>,
    /// `<name>`; only with several replicas.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    pub statefulset: StatefulSet,
}

impl DesiredObjects {
    /// Every object as JSON (with `apiVersion` and `kind`), in apply order:
    /// Secrets before the pod that mounts them, the NetworkPolicy before
    /// anything can reach the pod, the governing headless Service before
    /// its StatefulSet, the disruption budget before there are pods to
    /// evict.
    pub fn all(&self) -> Vec<serde_json::Value> {
        let mut objects = Vec::with_capacity(9);
        if let Some(secret) = &self.auth_secret {
            objects.push(to_json(secret));
        }
        if let Some(secret) = &self.peer_token_secret {
            objects.push(to_json(secret));
        }
        objects.push(to_json(&self.connection_secret));
        if let Some(policy) = &self.network_policy {
            objects.push(to_json(policy));
        }
        objects.push(to_json(&self.headless_service));
        if let Some(service) = &self.peers_service {
            objects.push(to_json(service));
        }
        objects.push(to_json(&self.service));
        if let Some(budget) = &self.pod_disruption_budget {
            objects.push(to_json(budget));
        }
        objects.push(to_json(&self.statefulset));
        objects
    }
}

fn to_json<T: serde::Serialize>(object: &T) -> serde_json::Value {
    // Plain data with string keys: serializing it to JSON cannot fail.
    serde_json::to_value(object).expect("Kubernetes objects serialize to JSON")
}

/// The server image the store runs: `spec.image`, else the operator default.
pub fn resolved_image(store: &DrasiStateStore, ctx: &BuildContext) -> String {
    store
        .spec
        .image
        .clone()
        .unwrap_or_else(|| ctx.server_image.clone())
}

/// The tokens of a token file, in order: its lines, trimmed, without blank
/// lines and `#` comment lines (which the server ignores as well).
pub fn token_lines(file: &str) -> impl Iterator<Item = &str> {
    file.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The token handed to clients: the first token of the token file.
pub fn client_token(token: &str) -> Option<&str> {
    token_lines(token).next()
}

/// Every object `store` owns.
pub fn build(store: &ValidatedStore<'_>) -> DesiredObjects {
    let generated_auth = matches!(store.token.secret, validated::TokenSecret::Generated(_));
    DesiredObjects {
        auth_secret: generated_auth.then(|| secrets::auth_secret(store)),
        peer_token_secret: secrets::peer_token_secret(store),
        connection_secret: secrets::connection_secret(store),
        network_policy: network_policy::network_policy(store),
        service: services::service(store),
        headless_service: services::headless_service(store),
        peers_service: services::peers_service(store),
        pod_disruption_budget: disruption_budget::pod_disruption_budget(store),
        statefulset: statefulset::statefulset(store),
    }
}

/// Validates `store` with already resolved Secret values, then builds it.
pub fn desired_objects(
    store: &DrasiStateStore,
    ctx: &BuildContext,
    inputs: &ResolvedInputs,
) -> Result<DesiredObjects, Invalid> {
    Ok(build(&validated::validate(
        store,
        ctx,
        &inputs.referenced(),
    )?))
}

//! Pure "desired state" builders: a `DrasiStateStore` plus what the
//! reconciler resolved from the cluster in, every object the operator
//! applies out. No I/O and no randomness (except [`generate_token`]), so the
//! same inputs always give byte-identical objects: server-side apply then
//! changes nothing and no pod restarts without a reason.

mod config_hash;
mod meta;
mod names;
mod secrets;
mod services;
mod statefulset;
mod token;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt;

use crate::crd::{DrasiStateStore, FieldError, join_field_errors, validate};

pub use config_hash::config_hash;
pub use names::*;
pub use statefulset::{
    RUN_AS_ID, TERMINATION_GRACE_PERIOD_SECONDS, default_resources, server_args,
};
pub use token::generate_token;

/// Operator-wide settings (from the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    /// Server image used when `spec.image` is unset (`--server-image`).
    pub server_image: String,
}

/// What the reconciler read from the cluster for this store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInputs {
    /// Content of the `token` key: of `<name>-auth` (generated once with
    /// [`generate_token`], then always read back, never silently rotated) or
    /// of the user's `spec.auth.existingSecret`. May hold several tokens,
    /// one per line; clients are given the first.
    pub token: String,
    /// PEM the clients trust: `ca.crt` of the TLS Secret, else its
    /// `tls.crt`. Required when `spec.tls` is set, ignored otherwise.
    pub ca_cert_pem: Option<String>,
}

/// Every object a store owns.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObjects {
    /// `<name>-auth`; `None` when `spec.auth.existingSecret` is set.
    pub auth_secret: Option<Secret>,
    pub connection_secret: Secret,
    pub service: Service,
    pub headless_service: Service,
    pub statefulset: StatefulSet,
}

impl DesiredObjects {
    /// Every object as JSON (with `apiVersion` and `kind`), in apply order:
    /// Secrets before the pod that mounts them, the governing headless
    /// Service before its StatefulSet.
    pub fn all(&self) -> Vec<serde_json::Value> {
        let mut objects = Vec::with_capacity(5);
        if let Some(secret) = &self.auth_secret {
            objects.push(to_json(secret));
        }
        objects.push(to_json(&self.connection_secret));
        objects.push(to_json(&self.headless_service));
        objects.push(to_json(&self.service));
        objects.push(to_json(&self.statefulset));
        objects
    }
}

fn to_json<T: serde::Serialize>(object: &T) -> serde_json::Value {
    // Plain data with string keys: serializing it to JSON cannot fail.
    serde_json::to_value(object).expect("Kubernetes objects serialize to JSON")
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid DrasiStateStore {name}: {}", join_field_errors(.errors))]
    Invalid {
        name: String,
        errors: Vec<FieldError>,
    },
    #[error(
        "DrasiStateStore {name} has spec.tls.secretName {secret:?} but no CA certificate was resolved from it"
    )]
    MissingCaCert { name: String, secret: String },
    #[error("DrasiStateStore {name}: the token Secret {secret:?} holds no token")]
    EmptyToken { name: String, secret: String },
}

/// The server image the store runs: `spec.image`, else the operator default.
pub fn resolved_image(store: &DrasiStateStore, ctx: &BuildContext) -> String {
    store
        .spec
        .image
        .clone()
        .unwrap_or_else(|| ctx.server_image.clone())
}

/// The token handed to clients: the first non-empty line of the token file.
pub fn client_token(token: &str) -> Option<&str> {
    token.lines().map(str::trim).find(|l| !l.is_empty())
}

pub fn desired_objects(
    store: &DrasiStateStore,
    ctx: &BuildContext,
    inputs: &ResolvedInputs,
) -> Result<DesiredObjects, BuildError> {
    let name = store.name_any();
    let errors = validate(store);
    if !errors.is_empty() {
        return Err(BuildError::Invalid { name, errors });
    }
    let token_secret = token_secret_name(store);
    let token = client_token(&inputs.token).ok_or_else(|| BuildError::EmptyToken {
        name: name.clone(),
        secret: token_secret.clone(),
    })?;
    let ca_cert_pem = match &store.spec.tls {
        None => None,
        Some(tls) => {
            Some(
                inputs
                    .ca_cert_pem
                    .as_deref()
                    .ok_or_else(|| BuildError::MissingCaCert {
                        name: name.clone(),
                        secret: tls.secret_name.clone(),
                    })?,
            )
        }
    };
    let generated_auth = store
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.existing_secret.as_ref())
        .is_none();
    let image = resolved_image(store, ctx);

    Ok(DesiredObjects {
        auth_secret: generated_auth.then(|| secrets::auth_secret(store, &inputs.token)),
        connection_secret: secrets::connection_secret(store, token, ca_cert_pem),
        service: services::service(store),
        headless_service: services::headless_service(store),
        statefulset: statefulset::statefulset(
            store,
            &statefulset::StatefulSetInputs {
                image: &image,
                token_secret: &token_secret,
            },
        ),
    })
}

//! Backups and restores of stores (docs/backup.md):
//! - [`plan`]: the validate step, a backup and its store in, a
//!   [`plan::BackupPlan`] (destination, location, Job inputs) out;
//! - [`job`]: the pure builder of the backup Job;
//! - [`summary`]: what a finished backup pod reports back;
//! - [`controller`]: the `DrasiStateStoreBackup` reconcile loop.

pub mod controller;
pub mod job;
pub mod plan;
pub mod summary;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

use crate::crd::ObjectStoreAccess;

/// Keys of a destination's credentials Secret, passed as same-named
/// environment variables; the session token is optional.
pub const CREDENTIAL_KEYS: &[(&str, bool)] = &[
    ("AWS_ACCESS_KEY_ID", false),
    ("AWS_SECRET_ACCESS_KEY", false),
    ("AWS_SESSION_TOKEN", true),
];

/// The `AWS_*` environment of a container that reads or writes through
/// `dest`.
/// Credentials are Secret references, so their values never appear in a
/// pod spec.
pub fn object_store_env(dest: &ObjectStoreAccess) -> Vec<EnvVar> {
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    let mut env = Vec::new();
    if let Some(region) = &dest.region {
        env.push(value("AWS_REGION", region));
    }
    if let Some(endpoint) = &dest.endpoint {
        env.push(value("AWS_ENDPOINT_URL", endpoint));
        if endpoint.starts_with("http://") {
            env.push(value("AWS_ALLOW_HTTP", "true"));
        }
    }
    if let Some(secret) = &dest.credentials_secret {
        for (key, optional) in CREDENTIAL_KEYS {
            env.push(EnvVar {
                name: (*key).to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: (*key).to_owned(),
                        optional: optional.then_some(true),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    env
}

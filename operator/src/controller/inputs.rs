//! Reading what the builders need from the cluster: the token and the CA.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::apply;
use super::error::Error;
use super::status::{Reasoned, reasons};
use crate::builders::{
    ResolvedInputs, TLS_CA_KEY, TLS_CERT_KEY, TOKEN_KEY, auth_secret_name, client_token,
    generate_token,
};
use crate::crd::DrasiStateStore;

/// The resolved inputs, and whether the token was generated in this pass
/// (the `<name>-auth` Secret did not exist yet).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub resolved: ResolvedInputs,
    pub generated_token: bool,
}

/// Resolves the token and CA. `Ok(Err(problem))` is a user-fixable problem
/// reported as Degraded; `Err` is an API failure retried with backoff.
pub async fn resolve(
    client: &kube::Client,
    store: &DrasiStateStore,
) -> Result<Result<Inputs, Reasoned>, Error> {
    let namespace = store
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = store.name_any();

    let existing_secret = store
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.existing_secret.as_deref());
    let (token, generated_token) = match existing_secret {
        Some(secret_name) => {
            let Some(secret) = apply::get_opt::<Secret>(client, &namespace, secret_name).await?
            else {
                return Ok(Err(Reasoned::new(
                    reasons::AUTH_SECRET_MISSING,
                    format!(
                        "spec.auth.existingSecret names Secret {secret_name}, which does not exist \
                         in namespace {namespace}"
                    ),
                )));
            };
            match token_of(&secret) {
                Some(token) => (token, false),
                None => {
                    return Ok(Err(Reasoned::new(
                        reasons::AUTH_SECRET_INVALID,
                        format!(
                            "Secret {secret_name} (spec.auth.existingSecret) has no non-empty UTF-8 \
                             key {TOKEN_KEY:?}"
                        ),
                    )));
                }
            }
        }
        None => {
            let secret_name = auth_secret_name(&name);
            match apply::get_opt::<Secret>(client, &namespace, &secret_name).await? {
                // Created once and then always read back: a token is never
                // rotated behind the users' back.
                Some(secret) => match token_of(&secret) {
                    Some(token) => (token, false),
                    None => {
                        return Ok(Err(Reasoned::new(
                            reasons::AUTH_SECRET_INVALID,
                            format!(
                                "the generated Secret {secret_name} lost its key {TOKEN_KEY:?}; \
                                 delete the Secret to have a new token generated (clients must \
                                 then pick up the new connection Secret)"
                            ),
                        )));
                    }
                },
                None => (generate_token(), true),
            }
        }
    };

    let ca_cert_pem = match &store.spec.tls {
        None => None,
        Some(tls) => {
            let secret_name = &tls.secret_name;
            let Some(secret) = apply::get_opt::<Secret>(client, &namespace, secret_name).await?
            else {
                return Ok(Err(Reasoned::new(
                    reasons::TLS_SECRET_MISSING,
                    format!(
                        "spec.tls.secretName names Secret {secret_name}, which does not exist in \
                         namespace {namespace}"
                    ),
                )));
            };
            let ca = [TLS_CA_KEY, TLS_CERT_KEY]
                .into_iter()
                .find_map(|key| utf8_value(&secret, key));
            match ca {
                Some(ca) => Some(ca),
                None => {
                    return Ok(Err(Reasoned::new(
                        reasons::TLS_SECRET_INVALID,
                        format!(
                            "Secret {secret_name} (spec.tls.secretName) has neither {TLS_CA_KEY:?} \
                             nor {TLS_CERT_KEY:?}"
                        ),
                    )));
                }
            }
        }
    };

    Ok(Ok(Inputs {
        resolved: ResolvedInputs { token, ca_cert_pem },
        generated_token,
    }))
}

/// The `token` key when it holds at least one usable token.
fn token_of(secret: &Secret) -> Option<String> {
    utf8_value(secret, TOKEN_KEY).filter(|t| client_token(t).is_some())
}

fn utf8_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let value = String::from_utf8(bytes.0.clone()).ok()?;
    (!value.trim().is_empty()).then_some(value)
}

//! The `validate` step: a `DrasiStateStore` plus what it references in the
//! cluster in, a [`ValidatedStore`] or the reason it cannot be built out.
//!
//! Pure (no I/O, no randomness). The reconciler feeds it what
//! `controller::dereference` read; `render` feeds it placeholders. A
//! [`ValidatedStore`] is the only input the builders take, so everything
//! they rely on (a valid spec, a non-empty token, a CA when TLS is on) is
//! established once, here, and the builders cannot fail.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use kube::ResourceExt;

use crate::builders::{
    BuildContext, TLS_CA_KEY, TLS_CERT_KEY, TOKEN_KEY, auth_secret_name, client_token,
    namespace_of, peer_token_secret_name, resolved_image,
};
use crate::controller::status::DegradedReason;
use crate::crd::{
    self, DrasiStateStore, DrasiStateStoreSpec, FieldError, RestoredFrom, join_field_errors,
};
use crate::labels::ACCESS_LABEL;
use crate::rotation::{Requested, RotationState};

/// The `data` of a Secret as read from the cluster.
pub type SecretData = BTreeMap<String, ByteString>;

/// Where the server's token file comes from, as found in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// The token Secret (`spec.auth.existingSecret`, or the generated
    /// `<name>-auth` read back); `None` when it does not exist.
    Stored(Option<SecretData>),
    /// The store's own `<name>-auth` does not exist yet: this freshly
    /// generated token goes into it. Never used for `existingSecret`.
    New(String),
}

/// What a store references in the cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Referenced {
    pub token: TokenSource,
    /// The `spec.tls.secretName` Secret; `None` when it does not exist or
    /// TLS is off.
    pub tls_secret: Option<SecretData>,
    /// Objects named like ones the store owns (`<name>`, `<name>-headless`,
    /// `<name>-auth`, `<name>-connection`, the StatefulSet, and for a
    /// replicated store `<name>-peers`, `<name>-peer-token` and the
    /// PodDisruptionBudget) that exist but are not controlled by this store,
    /// e.g. `Secret <name>-auth`.
    pub not_owned: Vec<String>,
    /// User Secrets the store references (`auth.existingSecret`,
    /// `tls.secretName`) that exist but do not carry the opt-in label
    /// [`ACCESS_LABEL`](crate::labels::ACCESS_LABEL) for this store.
    pub not_opted_in: Vec<String>,
    /// The token rotation recorded on the generated `<name>-auth`, already
    /// advanced to this pass (see [`crate::rotation`]); ignored with
    /// `existingSecret`.
    pub rotation: RotationState,
    /// `spec.restore`, resolved to the snapshot to read (see
    /// `controller::restore`); `None` without `spec.restore`.
    pub restore: Option<RestoredFrom>,
    /// The generated `<name>-peer-token` of a replicated store (read back,
    /// or `New` when it does not exist yet); ignored with one replica.
    pub peer_token: TokenSource,
    /// The group size the store's StatefulSet was built for, when it exists
    /// (`builders::built_replicas`): a store whose `spec.replicas` differs
    /// is not changed (see [`Invalid::ReplicasChanged`]).
    pub existing_replicas: Option<i32>,
    /// Whether the store's StatefulSet, when it exists, was built with
    /// mutual TLS between peers (`builders::built_with_peer_tls`).
    pub existing_peer_tls: Option<bool>,
}

impl Default for TokenSource {
    fn default() -> Self {
        Self::Stored(None)
    }
}

/// The Secret the server reads its tokens from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSecret {
    /// `spec.auth.existingSecret`, owned by the user.
    Existing(String),
    /// `<name>-auth`, generated and owned by the operator.
    Generated(String),
}

impl TokenSecret {
    pub fn of(store: &DrasiStateStore) -> Self {
        match store
            .spec
            .auth
            .as_ref()
            .and_then(|a| a.existing_secret.clone())
        {
            Some(name) => Self::Existing(name),
            None => Self::Generated(auth_secret_name(&store.name_any())),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Existing(name) | Self::Generated(name) => name,
        }
    }
}

/// Why a store cannot be built: the `Degraded` reason and its message.
/// None of them carries a secret value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("{}", join_field_errors(.0))]
    Spec(Vec<FieldError>),
    #[error(
        "spec.auth.existingSecret names Secret {secret}, which does not exist in namespace {namespace}"
    )]
    AuthSecretMissing { secret: String, namespace: String },
    #[error("Secret {secret} (spec.auth.existingSecret) has no non-empty UTF-8 key {TOKEN_KEY:?}")]
    AuthSecretInvalid { secret: String },
    #[error(
        "the generated Secret {secret} lost its key {TOKEN_KEY:?}; delete the Secret to have a new \
         token generated (clients must then pick up the new connection Secret)"
    )]
    GeneratedSecretInvalid { secret: String },
    #[error(
        "the generated Secret {secret} lost its key {TOKEN_KEY:?}; delete the Secret to have a \
         new peer token generated (the replicas re-read it; clients are not affected)"
    )]
    PeerSecretInvalid { secret: String },
    #[error(
        "spec.tls.secretName names Secret {secret}, which does not exist in namespace {namespace}"
    )]
    TlsSecretMissing { secret: String, namespace: String },
    #[error(
        "Secret {secret} (spec.tls.secretName) has neither {TLS_CA_KEY:?} nor {TLS_CERT_KEY:?}"
    )]
    TlsSecretInvalid { secret: String },
    #[error(
        "{object} already exists and is not controlled by this DrasiStateStore; the operator \
         never takes over an object it did not create: delete or rename it, or pick another \
         store name"
    )]
    ObjectNotOwned { object: String },
    #[error(
        "Secret {secret} is referenced by the spec but does not opt in to being mounted: label it \
         {ACCESS_LABEL}={store} (or {ACCESS_LABEL}=true for every store in the namespace)"
    )]
    SecretNotOptedIn { secret: String, store: String },
    #[error(
        "image {image} is not allowed by the operator's --allowed-images ({allowed}); use an \
         allowed image or ask the operator's administrator to allow it"
    )]
    ImageNotAllowed { image: String, allowed: String },
    #[error(
        "changing replicas of a running store is not supported yet: StatefulSet {statefulset} \
         runs a group of {running} replica(s) and spec.replicas asks for {requested}; nothing \
         was changed. \
         Set spec.replicas back to {running}, or create a new store with {requested} replicas \
         and move the data with a backup and restore"
    )]
    ReplicasChanged {
        statefulset: String,
        running: i32,
        requested: i32,
    },
}

impl Invalid {
    pub fn reason(&self) -> DegradedReason {
        match self {
            Self::Spec(_) => DegradedReason::InvalidSpec,
            Self::AuthSecretMissing { .. } => DegradedReason::AuthSecretMissing,
            Self::AuthSecretInvalid { .. }
            | Self::GeneratedSecretInvalid { .. }
            | Self::PeerSecretInvalid { .. } => DegradedReason::AuthSecretInvalid,
            Self::TlsSecretMissing { .. } => DegradedReason::TlsSecretMissing,
            Self::TlsSecretInvalid { .. } => DegradedReason::TlsSecretInvalid,
            Self::ObjectNotOwned { .. } => DegradedReason::ObjectNotOwned,
            Self::SecretNotOptedIn { .. } => DegradedReason::SecretNotOptedIn,
            Self::ImageNotAllowed { .. } => DegradedReason::ImageNotAllowed,
            Self::ReplicasChanged { .. } => DegradedReason::ReplicasChangeNotSupported,
        }
    }
}

/// The server's token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The whole `token` key: one or more tokens, one per line.
    pub file: String,
    /// The one handed to clients: the first non-empty line.
    pub client: String,
    pub secret: TokenSecret,
    /// Generated in this pass: `<name>-auth` does not exist yet.
    pub generated: bool,
    /// The rotation state `<name>-auth` records; always the default with
    /// `existingSecret`.
    pub rotation: RotationState,
}

/// The token replicas present to each other (`<name>-peer-token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerToken {
    pub file: String,
    /// Generated in this pass: `<name>-peer-token` does not exist yet.
    pub generated: bool,
}

/// TLS with the CA clients trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub secret_name: String,
    /// `ca.crt` of the TLS Secret, else its `tls.crt`.
    pub ca_cert_pem: String,
    /// Which of the two keys `ca_cert_pem` came from.
    pub ca_key: &'static str,
}

/// A store whose spec is valid and whose referenced Secrets hold what the
/// builders need.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedStore<'a> {
    store: &'a DrasiStateStore,
    pub name: String,
    /// The store's namespace, `default` when the CR has none (`render`).
    pub namespace: String,
    /// `spec.image`, else the operator's `--server-image`.
    pub image: String,
    pub token: Token,
    /// `Some` exactly when `spec.tls` is set.
    pub tls: Option<Tls>,
    /// The snapshot the restore init container reads (`spec.restore`).
    pub restore: Option<RestoredFrom>,
    /// `spec.replicas`: 1, 3 or 5.
    pub replicas: i32,
    /// `Some` exactly when the store is replicated (`replicas` > 1).
    pub peer_token: Option<PeerToken>,
    /// Replicas authenticate each other by mutual TLS: a replicated store
    /// with `spec.tls`, unless its running group was formed without it.
    pub peer_tls: bool,
}

impl<'a> ValidatedStore<'a> {
    pub fn store(&self) -> &'a DrasiStateStore {
        self.store
    }

    pub fn spec(&self) -> &'a DrasiStateStoreSpec {
        &self.store.spec
    }
}

/// Checks the spec against the CRD's creation-time rules (`crd::validate`),
/// then what the referenced Secrets hold.
pub fn validate<'a>(
    store: &'a DrasiStateStore,
    ctx: &BuildContext,
    referenced: &Referenced,
) -> Result<ValidatedStore<'a>, Invalid> {
    let errors = crd::validate(store);
    if !errors.is_empty() {
        return Err(Invalid::Spec(errors));
    }
    if let Some(object) = referenced.not_owned.first() {
        return Err(Invalid::ObjectNotOwned {
            object: object.clone(),
        });
    }
    if let Some(secret) = referenced.not_opted_in.first() {
        return Err(Invalid::SecretNotOptedIn {
            secret: secret.clone(),
            store: store.name_any(),
        });
    }
    let replicas = store.spec.replicas.get();
    if let Some(running) = referenced.existing_replicas
        && running != replicas
    {
        return Err(Invalid::ReplicasChanged {
            statefulset: format!("{}/{}", namespace_of(store), store.name_any()),
            running,
            requested: replicas,
        });
    }
    let image = resolved_image(store, ctx);
    if !ctx.allowed_images.allows(&image) {
        return Err(Invalid::ImageNotAllowed {
            image,
            allowed: ctx.allowed_images.to_string(),
        });
    }
    let namespace = namespace_of(store);
    let secret = TokenSecret::of(store);
    let (file, generated) = match (&secret, &referenced.token) {
        (TokenSecret::Generated(_), TokenSource::New(token)) => (Some(token.clone()), true),
        (_, TokenSource::Stored(Some(data))) => (utf8_value(data, TOKEN_KEY), false),
        // `dereference` hands out a new token only for a missing `<name>-auth`,
        // so a missing Secret here is the user's `existingSecret`.
        (_, TokenSource::Stored(None)) | (TokenSecret::Existing(_), TokenSource::New(_)) => {
            return Err(Invalid::AuthSecretMissing {
                secret: secret.name().to_owned(),
                namespace,
            });
        }
    };
    let Some((file, client)) =
        file.and_then(|file| client_token(&file).map(str::to_owned).map(|c| (file, c)))
    else {
        return Err(match secret {
            TokenSecret::Existing(secret) => Invalid::AuthSecretInvalid { secret },
            TokenSecret::Generated(secret) => Invalid::GeneratedSecretInvalid { secret },
        });
    };
    let tls = match &store.spec.tls {
        None => None,
        Some(tls) => {
            let secret = tls.secret_name.clone();
            let Some(data) = &referenced.tls_secret else {
                return Err(Invalid::TlsSecretMissing { secret, namespace });
            };
            let ca = [TLS_CA_KEY, TLS_CERT_KEY]
                .into_iter()
                .find_map(|key| utf8_value(data, key).map(|pem| (key, pem)));
            let Some((ca_key, ca_cert_pem)) = ca else {
                return Err(Invalid::TlsSecretInvalid { secret });
            };
            Some(Tls {
                secret_name: secret,
                ca_cert_pem,
                ca_key,
            })
        }
    };
    let rotation = match (&secret, &referenced.token) {
        (TokenSecret::Existing(_), _) => RotationState::default(),
        // A new `<name>-auth` records the trigger it was created under, so
        // that creating a store never starts a rotation.
        (TokenSecret::Generated(_), TokenSource::New(_)) => RotationState {
            trigger: Requested::of(store).trigger,
            stage: None,
        },
        (TokenSecret::Generated(_), TokenSource::Stored(_)) => referenced.rotation.clone(),
    };
    let peer_token = if store.spec.replicas.is_replicated() {
        let secret = peer_token_secret_name(&store.name_any());
        let (file, generated) = match &referenced.peer_token {
            TokenSource::New(token) => (Some(token.clone()), true),
            TokenSource::Stored(data) => {
                (data.as_ref().and_then(|d| utf8_value(d, TOKEN_KEY)), false)
            }
        };
        // `dereference` generates a token whenever the Secret is missing,
        // so a stored Secret without one lost its key.
        let Some(file) = file.filter(|f| client_token(f).is_some()) else {
            return Err(Invalid::PeerSecretInvalid { secret });
        };
        Some(PeerToken { file, generated })
    } else {
        None
    };
    Ok(ValidatedStore {
        store,
        name: store.name_any(),
        namespace,
        image,
        token: Token {
            file,
            client,
            secret,
            generated,
            rotation,
        },
        // Only a store that asks for a restore gets the init container.
        restore: store.spec.restore.as_ref().and(referenced.restore.clone()),
        replicas,
        peer_tls: tls.is_some()
            && peer_token.is_some()
            && referenced.existing_peer_tls.unwrap_or(true),
        tls,
        peer_token,
    })
}

/// A key's value when it is non-blank UTF-8.
fn utf8_value(data: &SecretData, key: &str) -> Option<String> {
    let value = String::from_utf8(data.get(key)?.0.clone()).ok()?;
    (!value.trim().is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> BuildContext {
        BuildContext::new("img:1")
    }

    fn store(spec: serde_json::Value) -> DrasiStateStore {
        serde_json::from_value(json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStore",
            "metadata": { "name": "s", "namespace": "ns" },
            "spec": spec,
        }))
        .unwrap()
    }

    fn data(pairs: &[(&str, &str)]) -> Option<SecretData> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        )
    }

    fn referenced(token: TokenSource, tls: Option<SecretData>) -> Referenced {
        Referenced {
            token,
            tls_secret: tls,
            ..Referenced::default()
        }
    }

    #[test]
    fn a_new_token_is_used_for_the_generated_secret() {
        let s = store(json!({}));
        let valid = validate(
            &s,
            &ctx(),
            &referenced(TokenSource::New("abc".into()), None),
        )
        .unwrap();
        assert_eq!(valid.token.secret, TokenSecret::Generated("s-auth".into()));
        assert!(valid.token.generated);
        assert_eq!(
            (valid.token.file.as_str(), valid.token.client.as_str()),
            ("abc", "abc")
        );
        assert_eq!(valid.image, "img:1");
        assert_eq!(valid.tls, None);
    }

    #[test]
    fn the_first_token_line_is_handed_to_clients() {
        let s = store(json!({ "auth": { "existingSecret": "mine" } }));
        let found = referenced(TokenSource::Stored(data(&[("token", "\n b \na\n")])), None);
        let valid = validate(&s, &ctx(), &found).unwrap();
        assert_eq!(valid.token.secret, TokenSecret::Existing("mine".into()));
        assert!(!valid.token.generated);
        assert_eq!(valid.token.client, "b");
        // `#` lines are comments to the server, so never a client token.
        let commented = referenced(
            TokenSource::Stored(data(&[("token", "# rotated 2026-11\nc\n")])),
            None,
        );
        assert_eq!(validate(&s, &ctx(), &commented).unwrap().token.client, "c");
    }

    #[test]
    fn secret_problems_have_their_reason() {
        let existing = store(json!({ "auth": { "existingSecret": "mine" } }));
        let missing = validate(
            &existing,
            &ctx(),
            &referenced(TokenSource::Stored(None), None),
        );
        let err = missing.unwrap_err();
        assert_eq!(err.reason(), DegradedReason::AuthSecretMissing);
        assert!(err.to_string().contains("mine"), "{err}");
        // A new token never stands in for the user's Secret.
        let new = validate(
            &existing,
            &ctx(),
            &referenced(TokenSource::New("x".into()), None),
        );
        assert_eq!(new.unwrap_err().reason(), DegradedReason::AuthSecretMissing);
        let blank = referenced(TokenSource::Stored(data(&[("token", " \n")])), None);
        assert_eq!(
            validate(&existing, &ctx(), &blank).unwrap_err(),
            Invalid::AuthSecretInvalid {
                secret: "mine".into()
            }
        );
        let generated = store(json!({}));
        let lost = referenced(TokenSource::Stored(data(&[("other", "x")])), None);
        let err = validate(&generated, &ctx(), &lost).unwrap_err();
        assert_eq!(err.reason(), DegradedReason::AuthSecretInvalid);
        assert!(err.to_string().contains("delete the Secret"), "{err}");

        let tls = store(json!({ "tls": { "secretName": "cert" } }));
        let token = || TokenSource::New("t".into());
        let err = validate(&tls, &ctx(), &referenced(token(), None)).unwrap_err();
        assert_eq!(err.reason(), DegradedReason::TlsSecretMissing);
        let err = validate(
            &tls,
            &ctx(),
            &referenced(token(), data(&[("tls.key", "k")])),
        )
        .unwrap_err();
        assert_eq!(err.reason(), DegradedReason::TlsSecretInvalid);
        // ca.crt is preferred; tls.crt stands in for a self-signed certificate.
        let both = data(&[("ca.crt", "CA"), ("tls.crt", "CERT")]);
        let valid = validate(&tls, &ctx(), &referenced(token(), both)).unwrap();
        assert_eq!(valid.tls.unwrap().ca_cert_pem, "CA");
        let leaf = data(&[("tls.crt", "CERT")]);
        let valid = validate(&tls, &ctx(), &referenced(token(), leaf)).unwrap();
        assert_eq!(valid.tls.unwrap().ca_cert_pem, "CERT");
    }

    #[test]
    fn a_replicated_store_needs_its_peer_token() {
        let s = store(json!({ "replicas": 3 }));
        let with_peer = |peer_token| Referenced {
            peer_token,
            ..referenced(TokenSource::New("client".into()), None)
        };
        let valid = validate(&s, &ctx(), &with_peer(TokenSource::New("peer".into()))).unwrap();
        assert_eq!(valid.replicas, 3);
        assert_eq!(
            valid.peer_token,
            Some(PeerToken {
                file: "peer".into(),
                generated: true
            })
        );
        let stored = with_peer(TokenSource::Stored(data(&[("token", "kept\n")])));
        let valid = validate(&s, &ctx(), &stored).unwrap();
        assert_eq!(valid.peer_token.unwrap().file, "kept\n");
        for lost in [data(&[("other", "x")]), data(&[("token", " \n")]), None] {
            let err = validate(&s, &ctx(), &with_peer(TokenSource::Stored(lost))).unwrap_err();
            assert_eq!(
                err,
                Invalid::PeerSecretInvalid {
                    secret: "s-peer-token".into()
                }
            );
            assert_eq!(err.reason(), DegradedReason::AuthSecretInvalid);
        }
        // One replica: no peer token, whatever is found.
        let single = store(json!({}));
        let valid = validate(&single, &ctx(), &with_peer(TokenSource::Stored(None))).unwrap();
        assert_eq!((valid.replicas, valid.peer_token), (1, None));
    }

    #[test]
    fn an_invalid_spec_is_reported_before_any_secret() {
        let s = store(json!({ "auth": { "existingSecret": "Bad_Name" } }));
        let err = validate(&s, &ctx(), &referenced(TokenSource::Stored(None), None)).unwrap_err();
        assert_eq!(err.reason(), DegradedReason::InvalidSpec);
        assert!(
            err.to_string().contains("spec.auth.existingSecret"),
            "{err}"
        );
    }

    #[test]
    fn objects_the_store_does_not_own_are_never_adopted() {
        let s = store(json!({}));
        let found = Referenced {
            not_owned: vec!["Secret ns/s-connection".into()],
            ..referenced(TokenSource::New("t".repeat(32)), None)
        };
        let err = validate(&s, &ctx(), &found).unwrap_err();
        assert_eq!(err.reason(), DegradedReason::ObjectNotOwned);
        assert!(err.to_string().contains("Secret ns/s-connection"), "{err}");
    }

    #[test]
    fn referenced_secrets_must_opt_in() {
        let s = store(json!({ "auth": { "existingSecret": "mine" } }));
        let found = Referenced {
            not_opted_in: vec!["mine".into()],
            ..referenced(TokenSource::Stored(data(&[("token", "x")])), None)
        };
        let err = validate(&s, &ctx(), &found).unwrap_err();
        assert_eq!(err.reason(), DegradedReason::SecretNotOptedIn);
        let message = err.to_string();
        assert!(message.contains("mine") && message.contains("drasi.io/state-store-access=s"));
    }

    #[test]
    fn images_outside_the_allow_list_are_refused() {
        let s = store(json!({ "image": "evil.example/miner:1" }));
        let found = referenced(TokenSource::New("t".repeat(32)), None);
        let err = validate(&s, &ctx(), &found).unwrap_err();
        assert_eq!(err.reason(), DegradedReason::ImageNotAllowed);
        assert!(err.to_string().contains("evil.example/miner:1"), "{err}");
        let ok = store(json!({ "image": "img:2" }));
        assert_eq!(validate(&ok, &ctx(), &found).unwrap().image, "img:2");
    }
}

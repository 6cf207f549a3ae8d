//! The generated auth Secret and the connection Secret.
//!
//! Both use `data` (not `stringData`): `stringData` is write-only and never
//! shows up in the stored object, so server-side apply could not track
//! which keys the operator owns, and a key that must disappear (the CA when
//! TLS is turned off) would linger forever.

use std::collections::BTreeMap;

use super::meta::object_meta;
use super::names::{
    TOKEN_KEY, auth_secret_name, client_urls, connection_secret_name, peer_token_secret_name,
};
use crate::validated::ValidatedStore;
use drasi_store_protocol::env;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

/// `<name>-auth`: the server's token file (key `token`).
/// Its annotations record a token rotation in flight (`crate::rotation`).
pub fn auth_secret(store: &ValidatedStore<'_>) -> Secret {
    let mut metadata = object_meta(store, auth_secret_name(&store.name));
    let annotations = store.token.rotation.annotations();
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(store.token.file.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// `<name>-peer-token` of a replicated store (`None` with one replica): the
/// token replicas present to each other on the peer port. Generated like
/// `<name>-auth` but never handed to clients.
pub fn peer_token_secret(store: &ValidatedStore<'_>) -> Option<Secret> {
    let token = store.peer_token.as_ref()?;
    Some(Secret {
        metadata: object_meta(store, peer_token_secret_name(&store.name)),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(token.file.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

/// `<name>-connection`: exactly the client's inline env vars, so a consumer
/// pod needs only `envFrom: [{secretRef: {name: <name>-connection}}]`.
/// The token is the one handed to clients, the CA the one TLS brings. A
/// replicated store lists the client Service first, then every replica.
pub fn connection_secret(store: &ValidatedStore<'_>) -> Secret {
    let mut data = BTreeMap::from([
        (
            env::URL.to_owned(),
            ByteString(client_urls(store.store()).into_bytes()),
        ),
        (
            env::TOKEN.to_owned(),
            ByteString(store.token.client.as_bytes().to_vec()),
        ),
    ]);
    if let Some(tls) = &store.tls {
        data.insert(
            env::CA_CERT.to_owned(),
            ByteString(tls.ca_cert_pem.as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: object_meta(store, connection_secret_name(&store.name)),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

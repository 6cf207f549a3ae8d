//! Secrets a store reads but does not own: `spec.auth.existingSecret` (the
//! token) and `spec.tls.secretName` (the certificate, whose CA goes into the
//! connection Secret).
//!
//! They carry no owner reference or operator label, so `.owns()` never sees
//! them. The controller watches Secrets metadata-only and maps each change to
//! the stores that reference it, looked up in the controller's own reflector
//! cache of DrasiStateStores: no API call per event, and no Secret cache at
//! all (the watch stream is consumed as it arrives). A rotated token or a
//! renewed certificate therefore reaches `<name>-connection` within seconds
//! instead of at the next periodic requeue. The server pod is not restarted:
//! the server re-reads its token and certificate files itself.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::Guarded;
use crate::crd::DrasiStateStore;

/// Names of the Secrets `store` reads without owning them.
pub fn referenced_secrets(store: &DrasiStateStore) -> impl Iterator<Item = &str> {
    let auth = store
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.existing_secret.as_deref());
    let tls = store.spec.tls.as_ref().map(|t| t.secret_name.as_str());
    auth.into_iter().chain(tls)
}

/// The stores in `stores` that reference Secret `namespace/name`. Secrets
/// are only ever referenced from the same namespace. Malformed stores are
/// skipped: their spec cannot be read, and reconciling them only reports
/// the parse error again.
pub fn stores_referencing(
    stores: &[Arc<Guarded>],
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<Guarded>> {
    stores
        .iter()
        .filter(|guarded| guarded.namespace().as_deref() == Some(namespace))
        .filter(|guarded| {
            guarded
                .0
                .as_ref()
                .is_ok_and(|store| referenced_secrets(store).any(|s| s == name))
        })
        .map(|guarded| ObjectRef::from_obj(guarded.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use kube::core::DeserializeGuard;
    use serde_json::{Value, json};

    use super::*;

    fn guarded(namespace: &str, name: &str, spec: Value) -> Arc<Guarded> {
        let object: DeserializeGuard<DrasiStateStore> = serde_json::from_value(json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStore",
            "metadata": { "name": name, "namespace": namespace },
            "spec": spec,
        }))
        .expect("guard accepts any object with metadata");
        Arc::new(object)
    }

    fn names(refs: Vec<ObjectRef<Guarded>>) -> Vec<String> {
        let mut names: Vec<String> = refs
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn maps_a_secret_to_every_store_referencing_it_in_its_namespace() {
        let stores = vec![
            guarded(
                "apps",
                "by-token",
                json!({ "auth": { "existingSecret": "shared" } }),
            ),
            guarded(
                "apps",
                "by-tls",
                json!({ "tls": { "secretName": "shared" } }),
            ),
            guarded(
                "apps",
                "both",
                json!({ "auth": { "existingSecret": "tok" }, "tls": { "secretName": "cert" } }),
            ),
            guarded("apps", "generated", json!({})),
            // Same Secret name in another namespace: a different Secret.
            guarded(
                "other",
                "elsewhere",
                json!({ "auth": { "existingSecret": "shared" } }),
            ),
        ];
        assert_eq!(
            names(stores_referencing(&stores, "apps", "shared")),
            ["apps/by-tls", "apps/by-token"]
        );
        assert_eq!(
            names(stores_referencing(&stores, "apps", "tok")),
            ["apps/both"]
        );
        assert_eq!(
            names(stores_referencing(&stores, "apps", "cert")),
            ["apps/both"]
        );
        assert_eq!(
            names(stores_referencing(&stores, "other", "shared")),
            ["other/elsewhere"]
        );
        assert!(stores_referencing(&stores, "apps", "unrelated").is_empty());
        // The operator's own Secrets are not "referenced": `.owns()` covers them.
        assert!(stores_referencing(&stores, "apps", "generated-auth").is_empty());
    }

    #[test]
    fn malformed_stores_are_skipped() {
        let stores = vec![
            guarded("apps", "broken", json!({ "tls": "not-an-object" })),
            guarded("apps", "fine", json!({ "tls": { "secretName": "cert" } })),
        ];
        assert!(stores[0].0.is_err());
        assert_eq!(
            names(stores_referencing(&stores, "apps", "cert")),
            ["apps/fine"]
        );
    }

    #[test]
    fn referenced_secrets_lists_token_then_certificate() {
        let store = guarded(
            "apps",
            "s",
            json!({ "auth": { "existingSecret": "tok" }, "tls": { "secretName": "cert" } }),
        );
        let store = store.0.as_ref().unwrap();
        assert_eq!(
            referenced_secrets(store).collect::<Vec<_>>(),
            ["tok", "cert"]
        );
    }
}

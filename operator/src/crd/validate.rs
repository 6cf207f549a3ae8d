//! The CRD's creation-time rules (schema constraints and CEL rules that do
//! not involve `oldSelf`), checked without an apiserver. They are the first
//! check of `validated::validate`, which both `render` and the reconciler
//! run before building anything: a CR the apiserver would reject fails
//! `render` too, with the field named, and a CR that slipped past an older
//! CRD never produces broken objects.

use std::fmt;

use super::quantity::quantity_value;
use super::spec::{
    ALLOWED_REPLICAS, DrasiStateStore, MAX_GRACE_PERIOD_SECONDS, MAX_KEY_BYTES_LIMIT,
    MAX_NAME_LENGTH, MAX_NETWORK_POLICY_PEERS, MAX_VALUE_BYTES_LIMIT, MIN_GRACE_PERIOD_SECONDS,
};
use crate::labels::{CONFIG_HASH_ANNOTATION, RESERVED_LABEL_KEYS};

/// One rule a CR breaks, named by its field path (`spec.limits.maxKeyBytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The errors on one line, `; `-separated, for error messages.
pub(crate) fn join_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every rule `store` breaks (empty when valid).
pub fn validate(store: &DrasiStateStore) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };

    match store.metadata.name.as_deref() {
        None | Some("") => fail("metadata.name", "is required".into()),
        Some(name) => {
            if name.len() > MAX_NAME_LENGTH {
                fail(
                    "metadata.name",
                    format!(
                        "must be at most {MAX_NAME_LENGTH} characters, got {}",
                        name.len()
                    ),
                );
            }
            if !is_dns1035_label(name) {
                fail(
                    "metadata.name",
                    format!(
                        "{name:?} is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter)"
                    ),
                );
            }
        }
    }

    let spec = &store.spec;
    let replicas = spec.replicas.get();
    if !ALLOWED_REPLICAS.contains(&replicas) {
        fail(
            "spec.replicas",
            format!(
                "must be 1, 3 or 5, got {replicas}: a store runs one server or a Raft group of \
                 three or five"
            ),
        );
    }
    if spec.replicas.is_replicated() && spec.restore.is_some() {
        fail(
            "spec.restore",
            format!(
                "is not supported with spec.replicas {replicas} yet: restore into a store with \
                 one replica"
            ),
        );
    }
    if spec.image.as_deref() == Some("") {
        fail("spec.image", "must not be empty".into());
    }
    for (i, secret) in spec.image_pull_secrets.iter().flatten().enumerate() {
        if secret.name.is_empty() {
            fail(
                &format!("spec.imagePullSecrets[{i}].name"),
                "must not be empty".into(),
            );
        }
    }
    match quantity_value(&spec.storage.size) {
        Some(bytes) if bytes > 0 => {}
        _ => fail(
            "spec.storage.size",
            format!(
                "{:?} is not a positive quantity such as 1Gi",
                spec.storage.size.0
            ),
        ),
    }
    if spec.storage.storage_class_name.as_deref() == Some("") {
        fail("spec.storage.storageClassName", "must not be empty".into());
    }
    if let Some(limits) = &spec.limits {
        if let Some(v) = limits.max_key_bytes
            && !(1..=MAX_KEY_BYTES_LIMIT).contains(&v)
        {
            fail(
                "spec.limits.maxKeyBytes",
                format!("must be between 1 and {MAX_KEY_BYTES_LIMIT}, got {v}"),
            );
        }
        if let Some(v) = limits.max_value_bytes
            && !(1..=MAX_VALUE_BYTES_LIMIT).contains(&v)
        {
            fail(
                "spec.limits.maxValueBytes",
                format!("must be between 1 and {MAX_VALUE_BYTES_LIMIT}, got {v}"),
            );
        }
    }
    if let Some(name) = spec
        .auth
        .as_ref()
        .and_then(|a| a.existing_secret.as_deref())
        && !is_dns1123_subdomain(name)
    {
        fail(
            "spec.auth.existingSecret",
            format!("{name:?} is not a valid Secret name"),
        );
    }
    if let Some(auth) = &spec.auth
        && let Some(rotation) = &auth.rotation
    {
        if auth.existing_secret.is_some() {
            fail(
                "spec.auth.rotation",
                "rotates the generated <name>-auth token; with spec.auth.existingSecret rotate by \
                 editing that Secret"
                    .into(),
            );
        }
        if let Some(trigger) = &rotation.trigger
            && !(1..=63).contains(&trigger.len())
        {
            fail(
                "spec.auth.rotation.trigger",
                format!("must be 1 to 63 characters, got {}", trigger.len()),
            );
        }
        if let Some(v) = rotation.grace_period_seconds
            && !(MIN_GRACE_PERIOD_SECONDS..=MAX_GRACE_PERIOD_SECONDS).contains(&v)
        {
            fail(
                "spec.auth.rotation.gracePeriodSeconds",
                format!(
                    "must be between {MIN_GRACE_PERIOD_SECONDS} and {MAX_GRACE_PERIOD_SECONDS}, got {v}"
                ),
            );
        }
    }
    if let Some(restore) = &spec.restore {
        super::restore::validate(restore, &mut fail);
    }
    if let Some(policy) = &spec.network_policy {
        let lists = [
            ("spec.networkPolicy.clients", &policy.clients),
            (
                "spec.networkPolicy.metricsScrapers",
                &policy.metrics_scrapers,
            ),
        ];
        for (field, peers) in lists {
            let Some(peers) = peers else { continue };
            if peers.len() > MAX_NETWORK_POLICY_PEERS {
                fail(
                    field,
                    format!(
                        "must list at most {MAX_NETWORK_POLICY_PEERS} peers, got {}",
                        peers.len()
                    ),
                );
            }
            // An empty peer is rejected by the apiserver when the
            // NetworkPolicy is applied; say so before that.
            for (i, peer) in peers.iter().enumerate() {
                if peer.pod_selector.is_none()
                    && peer.namespace_selector.is_none()
                    && peer.ip_block.is_none()
                {
                    fail(
                        &format!("{field}[{i}]"),
                        "must set podSelector, namespaceSelector or ipBlock".into(),
                    );
                }
            }
        }
        if policy.clients.as_ref().is_some_and(Vec::is_empty) {
            fail(
                "spec.networkPolicy.clients",
                "must not be empty (omit it for the default client label)".into(),
            );
        }
    }
    if let Some(tls) = &spec.tls
        && !is_dns1123_subdomain(&tls.secret_name)
    {
        fail(
            "spec.tls.secretName",
            format!("{:?} is not a valid Secret name", tls.secret_name),
        );
    }
    if let Some(pod) = &spec.pod {
        for key in pod.labels.iter().flat_map(|l| l.keys()) {
            if RESERVED_LABEL_KEYS.contains(&key.as_str()) {
                fail(
                    "spec.pod.labels",
                    format!("{key} is set by the operator and cannot be overridden"),
                );
            }
        }
        if pod
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(CONFIG_HASH_ANNOTATION))
        {
            fail(
                "spec.pod.annotations",
                format!("{CONFIG_HASH_ANNOTATION} is set by the operator and cannot be overridden"),
            );
        }
        if pod.priority_class_name.as_deref() == Some("") {
            fail("spec.pod.priorityClassName", "must not be empty".into());
        }
    }
    errors
}

fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store(spec: serde_json::Value) -> DrasiStateStore {
        serde_json::from_value(json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStore",
            "metadata": { "name": "s", "namespace": "ns" },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn replicas_are_one_three_or_five() {
        assert_eq!(store(json!({})).spec.replicas.get(), 1);
        for ok in [1, 3, 5] {
            assert_eq!(validate(&store(json!({ "replicas": ok }))), vec![]);
        }
        for bad in [-1, 0, 2, 4, 6, 7] {
            let errors = validate(&store(json!({ "replicas": bad })));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, "spec.replicas");
            assert!(
                errors[0]
                    .message
                    .starts_with(&format!("must be 1, 3 or 5, got {bad}")),
                "{}",
                errors[0]
            );
        }
    }

    #[test]
    fn a_restore_needs_a_single_replica() {
        let restore = json!({ "fromBackup": "nightly" });
        assert_eq!(validate(&store(json!({ "restore": restore }))), vec![]);
        let errors = validate(&store(json!({ "restore": restore, "replicas": 3 })));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.restore");
        assert!(
            errors[0].message.contains("spec.replicas 3"),
            "{}",
            errors[0]
        );
    }
}

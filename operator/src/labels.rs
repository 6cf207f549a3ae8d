//! Labels and annotations stamped on every object the operator manages.
//! They are a contract with users (selectors, dashboards) and with running
//! pods, so they never change between operator versions.

use std::collections::BTreeMap;

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

pub const NAME_VALUE: &str = "drasi-state-store";
pub const MANAGED_BY_VALUE: &str = "drasi-store-operator";
pub const COMPONENT_VALUE: &str = "store-server";
pub const PART_OF_VALUE: &str = "drasi";

/// The five label keys the operator owns. Users may not set them through
/// `spec.pod.labels` (the CRD rejects it): the selector ones would detach
/// pods from their StatefulSet and Services, the others would lie about
/// who manages the pod.
pub const RESERVED_LABEL_KEYS: [&str; 5] = [
    NAME_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    COMPONENT_LABEL,
    PART_OF_LABEL,
];

/// Label a user's Secret must carry before a store may mount it
/// (`spec.auth.existingSecret`, `spec.tls.secretName`): its value is the
/// store's name, or `true` for every store in the namespace. A label rather
/// than an annotation so `kubectl get secrets -l drasi.io/state-store-access`
/// lists every Secret that stores may read.
pub const ACCESS_LABEL: &str = "drasi.io/state-store-access";
/// The [`ACCESS_LABEL`] value that lets every store in the namespace mount it.
pub const ACCESS_ANY_STORE: &str = "true";

/// Whether a Secret with `labels` opted in to being mounted by `store`.
pub fn opted_in(labels: Option<&BTreeMap<String, String>>, store: &str) -> bool {
    labels
        .and_then(|l| l.get(ACCESS_LABEL))
        .is_some_and(|v| v == store || v == ACCESS_ANY_STORE)
}

/// Label of the pods the store's NetworkPolicy admits by default
/// (`spec.networkPolicy` without `clients`): its value is the store's name.
pub const CLIENT_LABEL: &str = "drasi.io/state-store-client";

/// Pod template annotation holding the hash of the inputs that shape the pod.
pub const CONFIG_HASH_ANNOTATION: &str = "drasi.io/config-hash";

/// All five standard labels for the store named `instance`.
pub fn labels(instance: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(instance);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
    labels.insert(PART_OF_LABEL.to_owned(), PART_OF_VALUE.to_owned());
    labels
}

/// The labels that select a store's pods: name + instance + component.
///
/// A StatefulSet's selector is immutable, so these must never change between
/// operator versions; `managed-by` and `part-of` are deliberately left out so
/// that they could evolve without orphaning running pods.
pub fn selector_labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), NAME_VALUE.to_owned()),
        (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        (COMPONENT_LABEL.to_owned(), COMPONENT_VALUE.to_owned()),
    ])
}

/// [`selector_labels`] as a label selector string (`k=v,k=v`), for list and
/// watch calls such as finding a store's PVCs.
pub fn selector_string(instance: &str) -> String {
    selector_labels(instance)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_design_labels() {
        let l = labels("orders");
        assert_eq!(l.len(), 5);
        assert_eq!(l[NAME_LABEL], "drasi-state-store");
        assert_eq!(l[INSTANCE_LABEL], "orders");
        assert_eq!(l[MANAGED_BY_LABEL], "drasi-store-operator");
        assert_eq!(l[COMPONENT_LABEL], "store-server");
        assert_eq!(l[PART_OF_LABEL], "drasi");
        for key in RESERVED_LABEL_KEYS {
            assert!(l.contains_key(key), "{key} missing");
        }
    }

    #[test]
    fn selector_is_a_stable_subset() {
        let s = selector_labels("orders");
        assert_eq!(s.len(), 3);
        let all = labels("orders");
        for (k, v) in &s {
            assert_eq!(all.get(k), Some(v));
        }
        assert_eq!(
            selector_string("orders"),
            "app.kubernetes.io/component=store-server,app.kubernetes.io/instance=orders,app.kubernetes.io/name=drasi-state-store"
        );
    }
}

//! Skipping applies that would change nothing, so a resync of a store whose
//! objects are as desired makes no write at all (at 1,000 stores a resync
//! every 5 minutes would otherwise be 5,000 patches).
//!
//! Every applied object carries [`APPLIED_HASH_ANNOTATION`], a sha256 of
//! what the operator applied. An object is re-applied when that hash
//! differs from the desired one, or when anyone but the operator manages
//! a field of it outside the status subresource (`metadata.managedFields`):
//! an edit with `kubectl edit`, `kubectl label` or another controller is
//! still taken back on the next pass.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::api::FIELD_MANAGER;

/// Annotation with the sha256 of the object the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "drasi.io/applied-hash";

/// `desired` with its [`APPLIED_HASH_ANNOTATION`].
pub fn stamped<K: Resource + Serialize + Clone>(desired: &K) -> K {
    let bytes = serde_json::to_vec(desired).expect("Kubernetes objects serialize to JSON");
    let hash = format!("{:x}", Sha256::digest(&bytes));
    let mut object = desired.clone();
    object
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash);
    object
}

/// Whether `existing` already is the `stamped` object and nobody else
/// manages any of its fields.
pub fn is_current(existing: &ObjectMeta, stamped: &ObjectMeta) -> bool {
    let hash = |meta: &ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
            .cloned()
    };
    let only_ours = existing.managed_fields.iter().flatten().all(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            || entry.subresource.as_deref().is_some_and(|s| !s.is_empty())
    });
    existing.deletion_timestamp.is_none()
        && hash(existing).is_some()
        && hash(existing) == hash(stamped)
        && only_ours
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    fn service(port: i32) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "s" },
            "spec": { "ports": [{ "port": port }] },
        }))
        .unwrap()
    }

    fn entry(manager: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            subresource: subresource.map(Into::into),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn the_same_object_is_current_and_a_changed_one_is_not() {
        let applied = stamped(&service(1));
        assert!(is_current(
            &applied.metadata,
            &stamped(&service(1)).metadata
        ));
        assert!(!is_current(
            &applied.metadata,
            &stamped(&service(2)).metadata
        ));
        // An object the operator never stamped (created by an older version).
        assert!(!is_current(
            &service(1).metadata,
            &stamped(&service(1)).metadata
        ));
    }

    #[test]
    fn a_field_managed_by_someone_else_is_taken_back() {
        let mut applied = stamped(&service(1));
        applied.metadata.managed_fields = Some(vec![
            entry(FIELD_MANAGER, None),
            entry("kube-controller-manager", Some("status")),
        ]);
        assert!(is_current(
            &applied.metadata,
            &stamped(&service(1)).metadata
        ));
        applied
            .metadata
            .managed_fields
            .as_mut()
            .unwrap()
            .push(entry("kubectl-edit", None));
        assert!(!is_current(
            &applied.metadata,
            &stamped(&service(1)).metadata
        ));
    }
}

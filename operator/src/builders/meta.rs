//! Metadata shared by every object a store owns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::names::namespace_of;
use crate::crd::DrasiStateStore;
use crate::labels;

/// Name, namespace, the five DESIGN.md labels and a controller owner
/// reference to the store. A CR without a uid (one read from a file by
/// `render`) gets no owner reference: one with an empty uid would be
/// rejected by the apiserver.
pub fn object_meta(store: &DrasiStateStore, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace_of(store)),
        labels: Some(labels::labels(&store.name_any())),
        owner_references: store.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

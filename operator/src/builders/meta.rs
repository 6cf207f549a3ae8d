//! Metadata shared by every object a store owns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::labels;
use crate::validated::ValidatedStore;

/// Name, namespace, the five standard labels and a controller owner
/// reference to the store. A CR without a uid (one read from a file by
/// `render`) gets no owner reference: one with an empty uid would be
/// rejected by the apiserver.
pub fn object_meta(store: &ValidatedStore<'_>, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(store.namespace.clone()),
        labels: Some(labels::labels(&store.name)),
        owner_references: store.store().controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

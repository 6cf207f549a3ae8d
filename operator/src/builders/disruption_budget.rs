//! PodDisruptionBudget `<name>` of a replicated store: voluntary disruptions
//! (node drains, cluster upgrades) take at most one replica at a time, so
//! a 3- or 5-replica group keeps its quorum through them.

use super::meta::object_meta;
use crate::labels::selector_labels;
use crate::validated::ValidatedStore;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `None` with one replica: a budget of `maxUnavailable: 1` would not
/// protect a single server, and one of 0 would block every node drain.
pub fn pod_disruption_budget(store: &ValidatedStore<'_>) -> Option<PodDisruptionBudget> {
    store.peer_token.as_ref()?;
    Some(PodDisruptionBudget {
        metadata: object_meta(store, store.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&store.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

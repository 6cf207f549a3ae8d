//! The optional NetworkPolicy `<name>` (`spec.networkPolicy.enabled`).
//!
//! It selects the store's pods and lists every ingress they accept; once a
//! NetworkPolicy selects a pod, all other ingress is refused (with a CNI
//! plugin that enforces NetworkPolicies). Egress is not restricted: the
//! server opens no connections.

use std::collections::BTreeMap;

use super::meta::object_meta;
use super::names::PEER_PORT;
use crate::backup::job::BACKUP_COMPONENT;
use crate::labels::{
    CLIENT_LABEL, COMPONENT_LABEL, INSTANCE_LABEL, NAME_LABEL, NAME_VALUE, selector_labels,
};
use crate::validated::ValidatedStore;
use drasi_store_protocol::routes::DEFAULT_PORT;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn port(number: i32) -> Option<Vec<NetworkPolicyPort>> {
    Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }])
}

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Pods in the store's namespace labelled `drasi.io/state-store-client: <name>`.
pub fn default_clients(name: &str) -> Vec<NetworkPolicyPeer> {
    vec![pods(BTreeMap::from([(
        CLIENT_LABEL.to_owned(),
        name.to_owned(),
    )]))]
}

/// The labels every backup Job pod of the store named `name` carries
/// (a subset of `backup::job::job_labels`).
pub fn backup_pod_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), NAME_VALUE.to_owned()),
        (INSTANCE_LABEL.to_owned(), name.to_owned()),
        (COMPONENT_LABEL.to_owned(), BACKUP_COMPONENT.to_owned()),
    ])
}

/// `None` unless `spec.networkPolicy.enabled`.
pub fn network_policy(store: &ValidatedStore<'_>) -> Option<NetworkPolicy> {
    let spec = store.spec().network_policy.as_ref().filter(|p| p.enabled)?;
    let name = &store.name;
    let http = i32::from(DEFAULT_PORT);
    let clients = spec
        .clients
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| default_clients(name));
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(clients),
            ports: port(http),
        },
        // The store's own pods, and nothing else, on the peer port.
        NetworkPolicyIngressRule {
            from: Some(vec![pods(selector_labels(name))]),
            ports: port(PEER_PORT),
        },
    ];
    if store
        .spec()
        .backup
        .as_ref()
        .is_some_and(|b| !b.destinations.is_empty())
    {
        // The store's own backup Jobs (`DrasiStateStoreBackup`), whatever
        // `clients` says: they take the snapshot over the API port.
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![pods(backup_pod_labels(name))]),
            ports: port(http),
        });
    }
    if let Some(scrapers) = spec.metrics_scrapers.clone().filter(|s| !s.is_empty()) {
        // `/metrics` shares port 7070 with the API (which still needs the
        // token); a NetworkPolicy cannot tell paths apart.
        ingress.push(NetworkPolicyIngressRule {
            from: Some(scrapers),
            ports: port(http),
        });
    }
    Some(NetworkPolicy {
        metadata: object_meta(store, name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    })
}

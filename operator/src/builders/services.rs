//! The client Service `<name>`, the headless Service `<name>-headless` and,
//! for a replicated store, the headless peers Service `<name>-peers`.

use super::meta::object_meta;
use super::names::{
    PEER_PORT, PEER_PORT_NAME, PORT_NAME, headless_service_name, peers_service_name,
};
use crate::crd::ServiceType;
use crate::labels::selector_labels;
use crate::validated::ValidatedStore;
use drasi_store_protocol::routes::DEFAULT_PORT;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn ports() -> Vec<ServicePort> {
    vec![ServicePort {
        name: Some(PORT_NAME.to_owned()),
        port: i32::from(DEFAULT_PORT),
        target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }]
}

/// Service `<name>`, what clients connect to. Selects only ready pods.
pub fn service(store: &ValidatedStore<'_>) -> Service {
    let name = store.name.clone();
    let settings = store.spec().service.as_ref();
    let mut metadata = object_meta(store, name.clone());
    metadata.annotations = settings.and_then(|s| s.annotations.clone());
    let type_ = settings.and_then(|s| s.type_).unwrap_or_default();
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.to_string()),
            selector: Some(selector_labels(&name)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Service `<name>-headless`, the StatefulSet's governing Service: gives the
/// pod its stable DNS name and publishes it before it is ready, so peers and
/// debugging tools can reach a pod that is still recovering its database.
pub fn headless_service(store: &ValidatedStore<'_>) -> Service {
    let name = &store.name;
    Service {
        metadata: object_meta(store, headless_service_name(name)),
        spec: Some(ServiceSpec {
            type_: Some(ServiceType::ClusterIP.to_string()),
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(name)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Service `<name>-peers` of a replicated store (`None` with one replica):
/// governs its StatefulSet, so replica `i` is
/// `<name>-<i>.<name>-peers.<namespace>.svc`, and publishes the peer port.
/// Not-ready pods are published too: no replica is ready before the peers
/// have reached each other and elected a leader.
pub fn peers_service(store: &ValidatedStore<'_>) -> Option<Service> {
    store.peer_token.as_ref()?;
    let name = &store.name;
    Some(Service {
        metadata: object_meta(store, peers_service_name(name)),
        spec: Some(ServiceSpec {
            type_: Some(ServiceType::ClusterIP.to_string()),
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(name)),
            ports: Some(vec![ServicePort {
                name: Some(PEER_PORT_NAME.to_owned()),
                port: PEER_PORT,
                target_port: Some(IntOrString::String(PEER_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

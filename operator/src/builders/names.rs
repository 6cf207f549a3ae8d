//! Names of the objects a store owns and the paths inside its pod. All are
//! part of the contract with users (`envFrom` the connection Secret) and
//! with running pods (mount paths), so they never change.

use drasi_store_protocol::routes::DEFAULT_PORT;
use kube::ResourceExt;

use crate::crd::DrasiStateStore;

/// Namespace used when a CR carries none (only in `render`).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Name of the server container in the pod template.
pub const CONTAINER_NAME: &str = "store-server";
/// Name of the volumeClaimTemplate; PVCs are called `data-<name>-0`.
pub const DATA_VOLUME: &str = "data";
/// Name of the server port on the container and the Services.
pub const PORT_NAME: &str = "http";
/// Port reserved for traffic between a store's own pods (replication);
/// the NetworkPolicy admits it from those pods only.
pub const PEER_PORT: i32 = 7071;
/// Name of the peer port on the container and the peers Service.
pub const PEER_PORT_NAME: &str = "peer";
/// The label the StatefulSet controller puts on each pod with its ordinal
/// (Kubernetes 1.28 and later); a replica's Raft node id.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The update strategy of a replicated store's StatefulSet: the operator,
/// not the StatefulSet controller, restarts its pods (`controller::rollout`).
pub const ON_DELETE: &str = "OnDelete";
/// The topology replicas are spread over.
pub const HOSTNAME_TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

pub const DATA_DIR: &str = "/data";
pub const AUTH_DIR: &str = "/var/run/drasi-store/auth";
pub const TLS_DIR: &str = "/var/run/drasi-store/tls";
pub const TMP_DIR: &str = "/tmp";
/// Key of the token in the auth Secret (generated or `existingSecret`).
pub const TOKEN_KEY: &str = "token";
pub const TOKEN_FILE: &str = "/var/run/drasi-store/auth/token";
pub const TLS_CERT_FILE: &str = "/var/run/drasi-store/tls/tls.crt";
pub const TLS_KEY_FILE: &str = "/var/run/drasi-store/tls/tls.key";
/// The server's replication settings (docs/replication.md), as environment
/// variables: the node id can only come from the downward API, which sets
/// variables, not flags.
pub const NODE_ID_ENV: &str = "DRASI_STORE_NODE_ID";
pub const PEERS_ENV: &str = "DRASI_STORE_PEERS";
pub const PEER_LISTEN_ENV: &str = "DRASI_STORE_PEER_LISTEN";
pub const PEER_TOKEN_FILE_ENV: &str = "DRASI_STORE_PEER_TOKEN_FILE";
pub const PEER_AUTH_DIR: &str = "/var/run/drasi-store/peer";
pub const PEER_TOKEN_FILE: &str = "/var/run/drasi-store/peer/token";
/// With TLS on, peers authenticate each other by mutual TLS against this CA.
pub const PEER_TLS_CA_FILE_ENV: &str = "DRASI_STORE_PEER_TLS_CA_FILE";

/// Keys of a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
pub const TLS_CA_KEY: &str = "ca.crt";

pub fn auth_secret_name(name: &str) -> String {
    format!("{name}-auth")
}

pub fn connection_secret_name(name: &str) -> String {
    format!("{name}-connection")
}

pub fn headless_service_name(name: &str) -> String {
    format!("{name}-headless")
}

/// The headless Service of a replicated store: it governs the StatefulSet,
/// so each replica has the DNS name `<name>-<ordinal>.<name>-peers.<ns>.svc`.
pub fn peers_service_name(name: &str) -> String {
    format!("{name}-peers")
}

/// The Secret holding the token replicas present to each other. A
/// different secret from the client token, so a client can never speak Raft.
pub fn peer_token_secret_name(name: &str) -> String {
    format!("{name}-peer-token")
}

/// DNS name of the replica with `ordinal` of the store `name` in `namespace`.
pub fn replica_host(name: &str, namespace: &str, ordinal: i32) -> String {
    format!(
        "{name}-{ordinal}.{}.{namespace}.svc",
        peers_service_name(name)
    )
}

/// Name of the PVC the StatefulSet `name` creates from its data volume
/// template for the pod with `ordinal`: `data-<name>-<ordinal>`.
pub fn pvc_name(name: &str, ordinal: i32) -> String {
    format!("{DATA_VOLUME}-{name}-{ordinal}")
}

/// Name of the PVC of the StatefulSet's only pod.
pub fn data_pvc_name(name: &str) -> String {
    pvc_name(name, 0)
}

/// The store's namespace, `default` when the CR has none.
pub fn namespace_of(store: &DrasiStateStore) -> String {
    store
        .namespace()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// The Secret the server reads its tokens from: the user's
/// `spec.auth.existingSecret`, else the generated `<name>-auth`.
pub fn token_secret_name(store: &DrasiStateStore) -> String {
    store
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.existing_secret.clone())
        .unwrap_or_else(|| auth_secret_name(&store.name_any()))
}

/// The URL clients use: `http://<name>.<namespace>.svc:7070`, `https://`
/// when `spec.tls` is set. Uses the `.svc` form (not `.svc.cluster.local`)
/// so it works whatever the cluster domain is.
pub fn endpoint(store: &DrasiStateStore) -> String {
    format!(
        "{}://{}.{}.svc:{DEFAULT_PORT}",
        scheme(store),
        store.name_any(),
        namespace_of(store)
    )
}

fn scheme(store: &DrasiStateStore) -> &'static str {
    if store.spec.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The client URL of the replica with `ordinal`, through the peers
/// Service: `http://<name>-<ordinal>.<name>-peers.<namespace>.svc:7070`
/// (`https://` with TLS). Clients fail over to it; the operator probes
/// `/v1/cluster` there.
pub fn replica_url(store: &DrasiStateStore, ordinal: i32) -> String {
    format!(
        "{}://{}:{DEFAULT_PORT}",
        scheme(store),
        replica_host(&store.name_any(), &namespace_of(store), ordinal)
    )
}

/// Every URL clients may use, comma-separated (`DRASI_STATE_STORE_URL`):
/// the client Service [`endpoint`] first, then, for a replicated store,
/// each replica through the peers Service, so a client can fail over to a
/// replica directly should the Service route it to a node that cannot
/// serve.
pub fn client_urls(store: &DrasiStateStore) -> String {
    let mut urls = vec![endpoint(store)];
    let replicas = store.spec.replicas;
    if replicas.is_replicated() {
        urls.extend((0..replicas.get()).map(|ordinal| replica_url(store, ordinal)));
    }
    urls.join(",")
}

//! StatefulSet `<name>`: one drasi-store-server pod per replica, each with
//! its own data volume.

use std::collections::BTreeMap;

use super::config_hash::config_hash;
use super::meta::object_meta;
use super::names::*;
use super::restore;
use crate::crd::AntiAffinity;
use crate::labels::{self, CONFIG_HASH_ANNOTATION};
use crate::validated::ValidatedStore;
use drasi_store_protocol::routes::{DEFAULT_PORT, HEALTHZ, READYZ};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The UID/GID of the distroless `nonroot` user the server image runs as.
pub const RUN_AS_ID: i64 = 65532;

/// Long enough for the server's own shutdown (stop accepting, drain
/// in-flight requests for up to 20 s, final commit) with a wide margin for
/// a slow disk; SIGKILL before the final commit would cost a redb repair.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 60;

/// How long the startup probe waits before liveness takes over: 360 x 5 s
/// = 30 minutes. After a crash redb repairs the whole database file before
/// it opens, which on a large volume takes minutes; killing the pod midway
/// would only restart the repair.
const STARTUP_PERIOD_SECONDS: i32 = 5;
const STARTUP_FAILURE_THRESHOLD: i32 = 360;

/// Secret files readable by the pod's group (fsGroup), nobody else.
const SECRET_FILE_MODE: i32 = 0o440;

/// The volume of `<name>-peer-token` in a replicated store's pods.
const PEER_AUTH_VOLUME: &str = "peer-auth";

/// Weight of the operator's preferred anti-affinity term: the highest, so
/// spreading replicas outweighs any preference a user adds.
const ANTI_AFFINITY_WEIGHT: i32 = 100;

/// `--peers` of every replica: `<ordinal>=<replica host>:7071` for each
/// ordinal, the node itself included (the server finds itself by its id).
pub fn peers(store: &ValidatedStore<'_>) -> String {
    (0..store.replicas)
        .map(|ordinal| {
            format!(
                "{ordinal}={}:{PEER_PORT}",
                replica_host(&store.name, &store.namespace, ordinal)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The group size a StatefulSet's pods were built for: the number of
/// peers its template lists, 1 without any. Not `spec.replicas`, which
/// `kubectl scale` can change behind the operator's back (the next apply
/// sets it back); the peer list is what the running group was formed with.
pub fn built_replicas(sts: &StatefulSet) -> i32 {
    match server_env(sts, PEERS_ENV) {
        Some(list) => {
            i32::try_from(list.split(',').filter(|p| !p.is_empty()).count()).unwrap_or(i32::MAX)
        }
        None => 1,
    }
}

/// Whether a StatefulSet's pods were built to talk to their peers over
/// mutual TLS. A running group keeps what it was built with: replicas that
/// speak TLS on the peer port and replicas that speak plain HTTP cannot
/// reach each other, so switching one replica at a time would split it.
pub fn built_with_peer_tls(sts: &StatefulSet) -> bool {
    server_env(sts, PEER_TLS_CA_FILE_ENV).is_some()
}

/// The value of the server container's environment variable `name`.
fn server_env<'a>(sts: &'a StatefulSet, name: &str) -> Option<&'a str> {
    sts.spec
        .template
        .spec
        .iter()
        .flat_map(|pod| &pod.containers)
        .filter(|c| c.name == CONTAINER_NAME)
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The server's replication settings: its node id is its pod's ordinal, so
/// a pod keeps its id (and its volume) across restarts and reschedules.
fn replication_env(store: &ValidatedStore<'_>) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut env = vec![
        EnvVar {
            name: NODE_ID_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.labels['{POD_INDEX_LABEL}']"),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        value(PEERS_ENV, peers(store)),
        // The server's default, spelled out so the listener cannot drift
        // from the container port and the NetworkPolicy.
        value(PEER_LISTEN_ENV, format!("0.0.0.0:{PEER_PORT}")),
        value(PEER_TOKEN_FILE_ENV, PEER_TOKEN_FILE.to_owned()),
    ];
    // With TLS, peer traffic is encrypted and both ends show their
    // certificate (mutual TLS, on top of the peer token): the certificate
    // must name `*.<name>-peers.<ns>.svc` and allow client authentication.
    if let Some(tls) = store.tls.as_ref().filter(|_| store.peer_tls) {
        env.push(value(
            PEER_TLS_CA_FILE_ENV,
            format!("{TLS_DIR}/{}", tls.ca_key),
        ));
    }
    env
}

/// The user's `spec.pod.affinity`, plus, for a replicated store, a pod
/// anti-affinity term keeping its replicas on different nodes (so one node
/// failure costs one replica). The user's own terms are kept.
fn affinity(store: &ValidatedStore<'_>, user: Option<Affinity>) -> Option<Affinity> {
    if store.peer_token.is_none() {
        return user;
    }
    let mut affinity = user.unwrap_or_default();
    let mut anti = affinity.pod_anti_affinity.take().unwrap_or_default();
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(labels::selector_labels(&store.name)),
            ..LabelSelector::default()
        }),
        topology_key: HOSTNAME_TOPOLOGY_KEY.to_owned(),
        ..PodAffinityTerm::default()
    };
    match store.spec().anti_affinity {
        AntiAffinity::Preferred => anti
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: ANTI_AFFINITY_WEIGHT,
                pod_affinity_term: term,
            }),
        AntiAffinity::Required => anti
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term),
    }
    affinity.pod_anti_affinity = Some(anti);
    Some(affinity)
}

pub fn statefulset(store: &ValidatedStore<'_>) -> StatefulSet {
    let name = store.name.clone();
    let spec = store.spec();

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(labels::labels(&name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    spec.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    // A replicated store's StatefulSet is governed by the peers Service:
    // a pod's DNS name is `<pod>.<serviceName>`, and the peers address each
    // other by it. (`serviceName` is immutable, and a store never changes
    // between one and several replicas.)
    let replicated = store.peer_token.is_some();
    let service_name = if replicated {
        peers_service_name(&name)
    } else {
        headless_service_name(&name)
    };
    StatefulSet {
        metadata: object_meta(store, name.clone()),
        spec: StatefulSetSpec {
            replicas: Some(store.replicas),
            service_name: Some(service_name),
            selector: LabelSelector {
                match_labels: Some(labels::selector_labels(&name)),
                ..LabelSelector::default()
            },
            // Parallel, because with one replica there is no ordering to
            // keep, and OrderedReady can wedge a rollout: a template whose
            // pod never becomes ready must then be deleted by hand even
            // after the spec is fixed ("forced rollback" in the StatefulSet
            // docs). With several replicas all pods must start together:
            // none is ready before a quorum elects a leader. The field is
            // immutable, so this choice is forever.
            pod_management_policy: Some("Parallel".to_owned()),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(spec.pvc_retention.when_deleted.to_string()),
                    // Scaling is not offered; if it ever is, shrinking must
                    // never destroy data.
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            volume_claim_templates: Some(vec![claim]),
            // A replicated store's pods are restarted by the operator, one
            // at a time, followers first and the leader last after it
            // handed leadership over (controller/rollout): the StatefulSet
            // controller would restart by ordinal, leader or not.
            update_strategy: replicated.then(|| StatefulSetUpdateStrategy {
                type_: Some(ON_DELETE.to_owned()),
                rolling_update: None,
            }),
            template: pod_template(store),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn pod_template(store: &ValidatedStore<'_>) -> PodTemplateSpec {
    let name = &store.name;
    let settings = store.spec().pod.clone().unwrap_or_default();

    // User labels first, so the operator's (the selector among them) win
    // even if a CR slipped past the CRD's rule against overriding them.
    let mut pod_labels = settings.labels.clone().unwrap_or_default();
    pod_labels.extend(labels::labels(name));
    let mut annotations = settings.annotations.clone().unwrap_or_default();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash(store));

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            init_containers: store
                .restore
                .as_ref()
                .map(|from| vec![restore::restore_container(store, from)]),
            containers: vec![container(store)],
            volumes: Some(volumes(store)),
            security_context: Some(pod_security_context()),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
            // The server talks to no Kubernetes API.
            automount_service_account_token: Some(false),
            // Service links inject `<SERVICE>_PORT`-style variables; a
            // Service named e.g. `drasi-store-listen` would collide with the
            // server's `DRASI_STORE_*` flag variables.
            enable_service_links: Some(false),
            image_pull_secrets: store.spec().image_pull_secrets.clone(),
            node_selector: settings.node_selector,
            tolerations: settings.tolerations,
            affinity: affinity(store, settings.affinity),
            priority_class_name: settings.priority_class_name,
            ..PodSpec::default()
        }),
    }
}

/// The server's command line (its flags are documented in docs/server.md).
pub fn server_args(store: &ValidatedStore<'_>) -> Vec<String> {
    let spec = store.spec();
    let mut args: Vec<String> = vec![
        "--listen".into(),
        format!("0.0.0.0:{DEFAULT_PORT}"),
        "--data-dir".into(),
        DATA_DIR.into(),
        "--durability".into(),
        spec.durability.to_string(),
        "--auth-token-file".into(),
        TOKEN_FILE.into(),
    ];
    if spec.tls.is_some() {
        args.extend([
            "--tls-cert-file".into(),
            TLS_CERT_FILE.into(),
            "--tls-key-file".into(),
            TLS_KEY_FILE.into(),
        ]);
    }
    if let Some(limits) = &spec.limits {
        if let Some(v) = limits.max_key_bytes {
            args.extend(["--max-key-bytes".into(), v.to_string()]);
        }
        if let Some(v) = limits.max_value_bytes {
            args.extend(["--max-value-bytes".into(), v.to_string()]);
        }
    }
    args.extend(["--log-format".into(), "json".into()]);
    args
}

/// Resources when `spec.resources` is unset: enough for the default 16 MiB
/// page cache and a few concurrent maximum-size requests. No CPU limit, as
/// CFS throttling turns into tail latency for every client; the memory
/// limit keeps a runaway server from starving its node.
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("100m")),
            ("memory".to_owned(), q("128Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("1Gi"))])),
        ..ResourceRequirements::default()
    }
}

/// The pod security context of every pod the operator creates (the server
/// and its backup Jobs): the server image's non-root user, no privileges.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        fs_group: Some(RUN_AS_ID),
        // Skip the recursive chown of a large volume on every start once
        // its root already has the right owner.
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The container security context that goes with [`pod_security_context`].
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn probe(path: &str, scheme: &str) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.to_owned()),
        port: IntOrString::String(PORT_NAME.to_owned()),
        scheme: Some(scheme.to_owned()),
        ..HTTPGetAction::default()
    }
}

fn container(store: &ValidatedStore<'_>) -> Container {
    let spec = store.spec();
    // The kubelet does not verify certificates on HTTPS probes, so the
    // probes work with any certificate the user brings.
    let scheme = if spec.tls.is_some() { "HTTPS" } else { "HTTP" };

    let mut volume_mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "auth".to_owned(),
            mount_path: AUTH_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    if spec.tls.is_some() {
        volume_mounts.push(VolumeMount {
            name: "tls".to_owned(),
            mount_path: TLS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if store.peer_token.is_some() {
        volume_mounts.push(VolumeMount {
            name: PEER_AUTH_VOLUME.to_owned(),
            mount_path: PEER_AUTH_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    volume_mounts.push(VolumeMount {
        name: "tmp".to_owned(),
        mount_path: TMP_DIR.to_owned(),
        ..VolumeMount::default()
    });
    let mut ports = vec![ContainerPort {
        name: Some(PORT_NAME.to_owned()),
        container_port: i32::from(DEFAULT_PORT),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }];
    if store.peer_token.is_some() {
        ports.push(ContainerPort {
            name: Some(PEER_PORT_NAME.to_owned()),
            container_port: PEER_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        });
    }

    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(store.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.to_string()),
        args: Some(server_args(store)),
        env: store.peer_token.is_some().then(|| replication_env(store)),
        ports: Some(ports),
        readiness_probe: Some(Probe {
            http_get: Some(probe(READYZ, scheme)),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(probe(HEALTHZ, scheme)),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        startup_probe: Some(Probe {
            http_get: Some(probe(HEALTHZ, scheme)),
            period_seconds: Some(STARTUP_PERIOD_SECONDS),
            timeout_seconds: Some(3),
            failure_threshold: Some(STARTUP_FAILURE_THRESHOLD),
            ..Probe::default()
        }),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    }
}

fn secret_volume(name: &str, secret_name: &str, keys: &[&str]) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_owned()),
            // Only the keys the server reads; the rest of a user's Secret
            // (e.g. a TLS Secret's ca.crt) stays out of the pod.
            items: Some(
                keys.iter()
                    .map(|k| KeyToPath {
                        key: (*k).to_owned(),
                        path: (*k).to_owned(),
                        ..KeyToPath::default()
                    })
                    .collect(),
            ),
            default_mode: Some(SECRET_FILE_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn volumes(store: &ValidatedStore<'_>) -> Vec<Volume> {
    let mut volumes = vec![secret_volume(
        "auth",
        store.token.secret.name(),
        &[TOKEN_KEY],
    )];
    if let Some(tls) = &store.tls {
        // A replica also needs the CA its peers' certificates chain to.
        let keys: &[&str] = if store.peer_tls && tls.ca_key != TLS_CERT_KEY {
            &[TLS_CERT_KEY, TLS_KEY_KEY, tls.ca_key]
        } else {
            &[TLS_CERT_KEY, TLS_KEY_KEY]
        };
        volumes.push(secret_volume("tls", &tls.secret_name, keys));
    }
    if store.peer_token.is_some() {
        volumes.push(secret_volume(
            PEER_AUTH_VOLUME,
            &peer_token_secret_name(&store.name),
            &[TOKEN_KEY],
        ));
    }
    volumes.push(Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    volumes.extend(store.restore.as_ref().and_then(restore::restore_volume));
    volumes
}

//! StatefulSet `<name>`: one drasi-store-server pod with its data volume.

use std::collections::BTreeMap;

use super::config_hash::config_hash;
use super::meta::object_meta;
use super::names::*;
use crate::labels::{self, CONFIG_HASH_ANNOTATION};
use crate::validated::ValidatedStore;
use drasi_store_protocol::routes::{DEFAULT_PORT, HEALTHZ, READYZ};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements,
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

    StatefulSet {
        metadata: object_meta(store, name.clone()),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(headless_service_name(&name)),
            selector: LabelSelector {
                match_labels: Some(labels::selector_labels(&name)),
                ..LabelSelector::default()
            },
            // Parallel, because with one replica there is no ordering to
            // keep, and OrderedReady can wedge a rollout: a template whose
            // pod never becomes ready must then be deleted by hand even
            // after the spec is fixed ("forced rollback" in the StatefulSet
            // docs). The field is immutable, so this choice is forever.
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
            affinity: settings.affinity,
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
    volume_mounts.push(VolumeMount {
        name: "tmp".to_owned(),
        mount_path: TMP_DIR.to_owned(),
        ..VolumeMount::default()
    });

    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(store.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.to_string()),
        args: Some(server_args(store)),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: i32::from(DEFAULT_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
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
        volumes.push(secret_volume(
            "tls",
            &tls.secret_name,
            &[TLS_CERT_KEY, TLS_KEY_KEY],
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
    volumes
}

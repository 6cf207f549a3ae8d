//! `DrasiStateStore` spec: what a user asks for. Every field is optional;
//! defaults live in the schema too, so `kubectl get -o yaml` shows them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::data_protection::BackupSpec;
use super::restore::RestoreSpec;
use super::status::DrasiStateStoreStatus;

/// Default volume size of a new store.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// Longest store name. The StatefulSet's pods get the label
/// `controller-revision-hash: <name>-<10 char hash>`, a label value is at
/// most 63 characters, so the name must leave room for 11 more.
pub const MAX_NAME_LENGTH: usize = 52;

/// Largest `limits.maxKeyBytes`: keys are held in memory and copied into
/// every index page of redb, so keys beyond 64 KiB are a design error.
pub const MAX_KEY_BYTES_LIMIT: i64 = 64 * 1024;

/// Largest `limits.maxValueBytes`: the server's request body limit
/// (`--max-body-bytes`, 64 MiB by default) caps a single value anyway.
pub const MAX_VALUE_BYTES_LIMIT: i64 = 64 * 1024 * 1024;

/// Syntax of a Kubernetes quantity (as in apimachinery's resource package),
/// so that a malformed size fails schema validation, not only CEL.
pub const QUANTITY_PATTERN: &str =
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$";

/// DNS-1123 subdomain: the syntax of a Secret name.
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A durable key-value state store for DrasiLib applications, served by
/// drasi-store-server from a StatefulSet with one persistent volume per replica.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "drasi.io",
    version = "v1alpha1",
    kind = "DrasiStateStore",
    plural = "drasistatestores",
    shortname = "dss",
    category = "drasi",
    namespaced,
    status = "DrasiStateStoreStatus",
    derive = "PartialEq",
    doc = "A durable key-value state store for DrasiLib applications, served by drasi-store-server from a StatefulSet with one persistent volume per replica.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase of the store"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the store accepts requests"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", description = "URL clients connect to"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.replication.leader", priority = 1, description = "Replicated stores: the pod the replicas agree leads"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(format!("self.metadata.name.size() <= {MAX_NAME_LENGTH}")).message(format!("metadata.name must be at most {MAX_NAME_LENGTH} characters: the StatefulSet's pod labels append an 11 character revision hash to it").as_str()),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): it names a Service"),
)]
#[x_kube(validation = Rule::new("has(self.restore) == has(oldSelf.restore) && (!has(self.restore) || self.restore == oldSelf.restore)").message("spec.restore is set at creation only: it cannot be added, changed or removed; create a new DrasiStateStore to restore a backup"))]
#[x_kube(validation = Rule::new("!has(self.restore) || !has(self.replicas) || self.replicas == 1").message("spec.restore is not supported with spec.replicas 3 or 5 yet: restore into a store with one replica"))]
#[serde(rename_all = "camelCase")]
pub struct DrasiStateStoreSpec {
    /// Container image of drasi-store-server. Defaults to the operator's
    /// `--server-image`; set it to pin the server version independently of
    /// operator upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Pull policy of the server image (Kubernetes default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets used to pull the server image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// How many servers run the store: 1 (default), or 3 or 5 replicas kept
    /// identical by Raft, each with its own volume, so the store survives
    /// the loss of any minority of them. Set at creation: changing it on a
    /// running store is refused (docs/operator.md, "Replicas").
    #[serde(default)]
    pub replicas: Replicas,

    /// How the replicas of a store with `replicas` 3 or 5 are spread over
    /// nodes (`kubernetes.io/hostname`): `Preferred` (default) schedules
    /// them on different nodes when it can, `Required` leaves a replica
    /// pending rather than share a node. Ignored with one replica.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,

    /// The persistent volume holding the database (one per replica).
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory of the server container. When unset the operator uses
    /// requests of 100m CPU / 128Mi memory and a 1Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// When a write is acknowledged: `Immediate` (after it is durably
    /// committed) or `Eventual` (before; flushed at least every second).
    #[serde(default)]
    pub durability: Durability,

    /// Request size limits enforced by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,

    /// Client authentication. A random token is generated into the Secret
    /// `<name>-auth` unless `existingSecret` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Serve HTTPS with the certificate of a `kubernetes.io/tls` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// The client-facing Service `<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// Scheduling and metadata of the server pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,

    /// An optional NetworkPolicy `<name>` that admits only the listed
    /// clients, the metrics scrapers and the store's own pods (peer port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// What happens to the data volume when the store is deleted.
    #[serde(default)]
    pub pvc_retention: PvcRetention,

    /// Stop reconciling this store: nothing is created, changed or deleted
    /// until it is set back to false. Running pods keep running.
    #[serde(default)]
    pub paused: bool,

    /// Where backups of this store (`DrasiStateStoreBackup`) are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Fill the new store's volume from a backup before its server first
    /// starts (docs/restore.md). Set at creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

/// The replica counts a store may run: one server, or a Raft group of three
/// or five voters. An even count adds a node without tolerating one more
/// failure, and more than five makes every write wait for more nodes.
pub const ALLOWED_REPLICAS: [i32; 3] = [1, 3, 5];

/// `spec.replicas`. Any integer deserializes, so that a CR that slipped past
/// the CRD's enum reaches the operator's validation and gets a clear
/// condition instead of breaking the watch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct Replicas(pub i32);

impl Default for Replicas {
    fn default() -> Self {
        Self(1)
    }
}

impl Replicas {
    pub fn get(self) -> i32 {
        self.0
    }

    /// Whether the store runs as a Raft group (3 or 5 replicas).
    pub fn is_replicated(self) -> bool {
        self.0 > 1
    }
}

impl JsonSchema for Replicas {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Replicas".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "format": "int32",
            "enum": ALLOWED_REPLICAS,
        })
    }
}

// The string form (`Display`, `AsRef<str>`) is the Kubernetes value.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
)]
pub enum AntiAffinity {
    /// Replicas go to different nodes when the scheduler can place them so
    /// (a small or busy cluster still runs every replica).
    #[default]
    Preferred,
    /// Never two replicas on one node: with fewer schedulable nodes than
    /// replicas, the extra replicas stay pending.
    Required,
}

// The string form (`Display`, `AsRef<str>`) is the Kubernetes value.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The data volume. `size` may grow (the operator expands the PVC in place)
/// but never shrink; `storageClassName` cannot change, because a bound PVC
/// can never move to another StorageClass.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.size) || (isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0')))").message("storage.size must be a positive quantity such as 1Gi or 500Mi"))]
#[x_kube(validation = Rule::new("!has(oldSelf.size) || !has(self.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0").message("storage.size may grow but never shrink: a volume cannot be made smaller"))]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storage.storageClassName is immutable: a bound volume cannot move to another StorageClass"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested volume size (a Kubernetes quantity, e.g. `1Gi`).
    #[serde(default = "default_storage_size")]
    #[schemars(schema_with = "quantity_string_schema")]
    pub size: Quantity,

    /// StorageClass of the volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity(DEFAULT_STORAGE_SIZE.to_owned())
}

/// A quantity that is always a string in this CRD, so the CEL `quantity()`
/// library can read it (k8s-openapi's schema is int-or-string).
fn quantity_string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A Kubernetes quantity, e.g. 1Gi, 500Mi or 10G.",
        "type": "string",
        "maxLength": 64,
        "pattern": QUANTITY_PATTERN,
    })
}

// The string form (`Display`, `AsRef<str>`) is the value of the server's
// `--durability` flag (lowercase), not the spec's spelling.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "lowercase")]
pub enum Durability {
    /// A write is acknowledged once committed durably (fsync), grouped with
    /// concurrent writes.
    #[default]
    Immediate,
    /// A write is acknowledged before it is durable; a crash may lose up to
    /// about a second of acknowledged writes.
    Eventual,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest store_id or key in bytes (server default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_KEY_BYTES_LIMIT))]
    pub max_key_bytes: Option<i64>,

    /// Largest single value in bytes (server default 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_VALUE_BYTES_LIMIT))]
    pub max_value_bytes: Option<i64>,
}

/// Client authentication. The CEL rule keeps `rotation` to the generated
/// token: a user's `existingSecret` is the user's to rotate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.existingSecret) || !has(self.rotation)").message("spec.auth.rotation rotates the generated <name>-auth token; with spec.auth.existingSecret rotate by editing that Secret (see docs/token-rotation.md)"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Name of a Secret in the store's namespace whose key `token` holds the
    /// accepted bearer tokens (one per line; the first one is handed to
    /// clients through `<name>-connection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub existing_secret: Option<String>,

    /// Zero-downtime rotation of the generated token (not with
    /// `existingSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<TokenRotationSpec>,
}

/// Smallest `gracePeriodSeconds`: a consumer that mounts the connection
/// Secret sees the new token only after the kubelet refreshed the volume.
pub const MIN_GRACE_PERIOD_SECONDS: i64 = 120;
/// Largest `gracePeriodSeconds` (30 days).
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 30 * 24 * 3600;
/// `gracePeriodSeconds` when unset: one hour, time for a rolling restart of
/// the consumers that read the token from their environment.
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 3600;

/// Rotation of the generated `<name>-auth` token. A new token is first
/// added next to the current one, then handed to clients, and the previous
/// one is removed `gracePeriodSeconds` later (docs/token-rotation.md).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRotationSpec {
    /// Any value (e.g. a date). Setting it to a value other than the last
    /// one the operator acted upon starts one rotation; a change during a
    /// rotation starts the next one when the current one has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub trigger: Option<String>,

    /// How long the previous token stays accepted after clients are handed
    /// the new one (default 3600). Consumers that read the token from their
    /// environment must be restarted within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_GRACE_PERIOD_SECONDS, max = MAX_GRACE_PERIOD_SECONDS))]
    pub grace_period_seconds: Option<i64>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Name of a `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) in
    /// the store's namespace. Its `ca.crt`, or else `tls.crt`, is handed to
    /// clients as the CA to trust.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_NAME_PATTERN))]
    pub secret_name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Type of the Service `<name>` (default ClusterIP).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,

    /// Annotations of the Service `<name>` (e.g. for a load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

// The string form (`Display`, `AsRef<str>`) is the Kubernetes value.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Settings copied into the server pod's template.
///
/// The CEL rules below look reserved keys up in the map instead of iterating
/// over it: a rule's cost must be bounded for the apiserver to accept the
/// CRD, and a map lookup is constant whatever the map's size.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub priority_class_name: Option<String>,

    /// Extra pod annotations. `drasi.io/config-hash` is reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!('drasi.io/config-hash' in self)").message("pod.annotations must not set drasi.io/config-hash: the operator owns it"))]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Extra pod labels. The five `app.kubernetes.io/*` labels the operator
    /// sets (name, instance, managed-by, component, part-of) are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/component', 'app.kubernetes.io/part-of'].exists(k, k in self)").message("pod.labels must not set the app.kubernetes.io/ name, instance, managed-by, component or part-of labels: the operator owns them and the StatefulSet selects pods by them"))]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Most peers `networkPolicy.clients` or `metricsScrapers` may list.
pub const MAX_NETWORK_POLICY_PEERS: usize = 32;

/// The NetworkPolicy `<name>`: ingress to the store's pods only from
/// `clients` (port `http`, 7070), `metricsScrapers` (port 7070, where
/// `/metrics` is served) and the store's own pods (port `peer`, 7071).
/// Everything else is refused once any NetworkPolicy selects the pods; the
/// kubelet's probes come from the node and are always allowed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy (setting it back to false deletes it).
    #[serde(default)]
    pub enabled: bool,

    /// Who may call the store (NetworkPolicy peers: `podSelector`,
    /// `namespaceSelector`, `ipBlock`). Default: pods in the store's
    /// namespace labelled `drasi.io/state-store-client: <name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NETWORK_POLICY_PEERS))]
    pub clients: Option<Vec<NetworkPolicyPeer>>,

    /// Who may scrape `/metrics` on port 7070 (e.g. Prometheus). Default:
    /// nobody beyond `clients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NETWORK_POLICY_PEERS))]
    pub metrics_scrapers: Option<Vec<NetworkPolicyPeer>>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// `Retain` (default) keeps the data volume after the store is deleted;
    /// `Delete` removes it with the store.
    #[serde(default)]
    pub when_deleted: PvcRetentionPolicy,
}

// The string form (`Display`, `AsRef<str>`) is the Kubernetes value.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
)]
pub enum PvcRetentionPolicy {
    #[default]
    Retain,
    Delete,
}

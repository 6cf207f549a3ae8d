//! Harness for reconcile tests against the SIMULATED API server in
//! [`fake_api`]. No cluster is involved anywhere.

pub mod fake_api;

use std::sync::{Arc, Mutex};

use drasi_store_operator::builders::BuildContext;
use drasi_store_operator::controller::cluster_probe::{ClusterProbe, ProbeTargets};
use drasi_store_operator::controller::status::MemberProbe;
use drasi_store_operator::controller::{Context, Error, reconcile};
use drasi_store_operator::crd::DrasiStateStore;
use drasi_store_operator::metrics::Metrics;
use drasi_store_operator::rbac::cluster_role_rules;
use drasi_store_protocol::{ClusterInfo, StepDownResponse};
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

pub use fake_api::{FakeApiServer, RecordedRequest};

pub const NS: &str = "apps";
pub const SERVER_IMAGE: &str = "registry.test/drasi-store-server:test";

pub fn store_path(name: &str) -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestores/{name}")
}
pub fn sts_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{name}")
}
pub fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/secrets/{name}")
}
pub fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}
pub fn pvc_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}")
}

/// The replication probe of the tests: no pod is ever reached. Each
/// replica answers what [`ScriptedProbe::set`] gave for its ordinal, and
/// is unreachable otherwise; every call is recorded.
#[derive(Default)]
pub struct ScriptedProbe {
    answers: Mutex<Vec<Result<ClusterInfo, String>>>,
    calls: Mutex<Vec<ProbeTargets>>,
    /// What the next step-down requests answer, in order; none left means
    /// "refused".
    step_downs: Mutex<std::collections::VecDeque<Result<StepDownResponse, String>>>,
    /// The ordinals step-down was asked of.
    stepped: Mutex<Vec<i32>>,
}

impl ScriptedProbe {
    /// What replica `i` answers on the next probes.
    pub fn set(&self, answers: Vec<Result<ClusterInfo, String>>) {
        *self.answers.lock().unwrap() = answers;
    }

    /// Every probe so far.
    pub fn calls(&self) -> Vec<ProbeTargets> {
        self.calls.lock().unwrap().clone()
    }

    /// What the next step-down request answers.
    pub fn answer_step_down(&self, answer: Result<StepDownResponse, String>) {
        self.step_downs.lock().unwrap().push_back(answer);
    }

    /// The ordinals asked to step down so far.
    pub fn step_down_calls(&self) -> Vec<i32> {
        self.stepped.lock().unwrap().clone()
    }
}

impl ClusterProbe for ScriptedProbe {
    fn probe<'a>(&'a self, targets: &'a ProbeTargets) -> BoxFuture<'a, Vec<MemberProbe>> {
        self.calls.lock().unwrap().push(targets.clone());
        let answers = self.answers.lock().unwrap().clone();
        let results = targets
            .members
            .iter()
            .map(|(name, ordinal, _)| MemberProbe {
                name: name.clone(),
                ordinal: *ordinal,
                answer: answers
                    .get(usize::try_from(*ordinal).unwrap())
                    .cloned()
                    .unwrap_or_else(|| Err("simulated: no pod".to_owned())),
            })
            .collect();
        Box::pin(async move { results })
    }

    fn step_down<'a>(
        &'a self,
        _targets: &'a ProbeTargets,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<StepDownResponse, String>> {
        self.stepped.lock().unwrap().push(ordinal);
        let answer = self
            .step_downs
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err("simulated: no step-down answer scripted".to_owned()));
        Box::pin(async move { answer })
    }
}

pub struct Harness {
    pub server: FakeApiServer,
    pub ctx: Arc<Context>,
    pub metrics: Arc<Metrics>,
    pub probe: Arc<ScriptedProbe>,
}

impl Harness {
    pub fn new() -> Self {
        let (server, client) = FakeApiServer::start();
        let metrics = Arc::new(Metrics::new());
        let probe = Arc::new(ScriptedProbe::default());
        let mut ctx = Context::new(
            client,
            BuildContext::new(SERVER_IMAGE.to_string()),
            metrics.clone(),
            Some("operator-0".to_string()),
        );
        ctx.cluster_probe = probe.clone();
        let ctx = Arc::new(ctx);
        server.put(
            "namespaces",
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS },
                    "status": { "phase": "Active" } }),
        );
        Self {
            server,
            ctx,
            metrics,
            probe,
        }
    }

    pub fn create_store(&self, name: &str, spec: Value) {
        self.server.put(
            "drasistatestores",
            json!({
                "apiVersion": "drasi.io/v1alpha1",
                "kind": "DrasiStateStore",
                "metadata": { "name": name, "namespace": NS },
                "spec": spec,
            }),
        );
    }

    /// The store as the API server holds it now.
    pub fn store(&self, name: &str) -> DrasiStateStore {
        let value = self
            .server
            .get(&store_path(name))
            .unwrap_or_else(|| panic!("store {name} does not exist"));
        serde_json::from_value(value).expect("stored DrasiStateStore parses")
    }

    pub fn store_exists(&self, name: &str) -> bool {
        self.server.get(&store_path(name)).is_some()
    }

    /// One reconcile of the current object, as the controller would run it
    /// after a watch event.
    pub async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        reconcile(Arc::new(self.store(name)), self.ctx.clone()).await
    }

    /// Creates the store and reconciles until its objects are applied: the
    /// first pass only adds the finalizer.
    pub async fn create_and_apply(&self, name: &str, spec: Value) -> Action {
        self.create_store(name, spec);
        let first = self.reconcile(name).await.expect("adding the finalizer");
        assert_eq!(first, Action::await_change());
        self.reconcile(name).await.expect("first apply")
    }

    /// Changes the spec as `kubectl apply` would (the generation moves).
    pub fn edit_spec(&self, name: &str, change: impl FnOnce(&mut Value)) {
        self.server.update(&store_path(name), |store| {
            change(&mut store["spec"]);
            let generation = store["metadata"]["generation"].as_i64().unwrap_or(1);
            store["metadata"]["generation"] = json!(generation + 1);
        });
    }

    /// `kubectl delete`: with the finalizer present the API server only
    /// sets deletionTimestamp.
    pub fn delete_store(&self, name: &str) {
        self.server.update(&store_path(name), |store| {
            store["metadata"]["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
            // The API server bumps the generation when it marks an object
            // with finalizers for deletion.
            let generation = store["metadata"]["generation"].as_i64().unwrap_or(1);
            store["metadata"]["generation"] = json!(generation + 1);
        });
    }

    /// What the StatefulSet controller and kubelet report once the pod is ready.
    pub fn mark_statefulset_ready(&self, name: &str) {
        self.server.update(&sts_path(name), |sts| {
            let generation = sts["metadata"]["generation"].clone();
            sts["status"] = json!({
                "observedGeneration": generation,
                "replicas": 1,
                "readyReplicas": 1,
                "currentRevision": format!("{name}-rev"),
                "updateRevision": format!("{name}-rev"),
            });
        });
    }

    /// The PVC the StatefulSet controller creates from the template.
    pub fn add_pvc(&self, store: &str, class: &str, requested: &str, capacity: &str) {
        self.server.put(
            "persistentvolumeclaims",
            json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": drasi_store_operator::builders::data_pvc_name(store),
                    "namespace": NS,
                    "labels": drasi_store_operator::labels::labels(store),
                },
                "spec": {
                    "storageClassName": class,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": requested } },
                },
                "status": { "phase": "Bound", "capacity": { "storage": capacity } },
            }),
        );
    }

    pub fn add_storage_class(&self, name: &str, allow_expansion: Option<bool>) {
        let mut class = json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": { "name": name },
            "provisioner": "test.csi.example.com",
        });
        if let Some(allow) = allow_expansion {
            class["allowVolumeExpansion"] = json!(allow);
        }
        self.server.put("storageclasses", class);
    }

    /// A user's Secret that every store in the namespace may mount.
    pub fn add_secret(&self, name: &str, data: &[(&str, &str)]) {
        self.add_labelled_secret(name, data, json!({ "drasi.io/state-store-access": "true" }));
    }

    pub fn add_labelled_secret(&self, name: &str, data: &[(&str, &str)], labels: Value) {
        use std::collections::BTreeMap;
        let data: BTreeMap<&str, String> = data
            .iter()
            .map(|(k, v)| (*k, base64(v.as_bytes())))
            .collect();
        self.server.put(
            "secrets",
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": name, "namespace": NS, "labels": labels },
                "data": data,
            }),
        );
    }

    /// Requests that change something (everything but GET).
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Writes other than events and the store's own status/finalizer.
    pub fn object_writes(&self) -> Vec<RecordedRequest> {
        self.writes()
            .into_iter()
            .filter(|r| !r.path.contains("/events") && !r.path.contains("/drasistatestores/"))
            .collect()
    }

    /// Reasons of the events published so far.
    pub fn event_reasons(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
            .filter_map(|r| r.body.as_ref()?["reason"].as_str().map(str::to_string))
            .collect()
    }

    /// Every request sent so far is allowed by the operator's ClusterRole
    /// rules: this is what keeps `rbac.rs` (and the chart) honest.
    pub fn assert_rbac_covers_every_request(&self) {
        let rules = cluster_role_rules();
        let requests = self.server.requests();
        assert!(!requests.is_empty());
        for request in &requests {
            assert!(
                !request.rbac.is_empty(),
                "{} {} is not a resource request",
                request.method,
                request.path
            );
            for attrs in &request.rbac {
                assert!(
                    attrs.is_allowed_by(&rules),
                    "RBAC rules do not allow {attrs:?} ({} {})",
                    request.method,
                    request.path
                );
            }
        }
    }
}

/// A condition of the store's status; panics when it is missing.
pub fn condition_of<'a>(store: &'a DrasiStateStore, type_: &str) -> &'a Condition {
    store
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// A condition of the store's status as (status, reason).
pub fn condition(store: &DrasiStateStore, type_: &str) -> (String, String) {
    let c = condition_of(store, type_);
    (c.status.clone(), c.reason.clone())
}

/// Decodes a Secret value as the API server returns it.
pub fn secret_value(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret["data"][key].as_str()?;
    let bytes: Vec<u8> = serde_json::from_value(json!(encoded))
        .map(|b: k8s_openapi::ByteString| b.0)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .expect("ByteString serializes")
        .as_str()
        .expect("base64 string")
        .to_string()
}

/// Polls `condition` until it holds; panics after 10 s with `what`.
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

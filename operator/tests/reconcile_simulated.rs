//! Reconcile tests against a SIMULATED Kubernetes API server (an in-memory
//! fake behind kube's `Client`, see `support/fake_api/`). No cluster is
//! used; what a real API server adds (admission, garbage collection, the
//! StatefulSet controller) is played by the tests where it matters.

// The shared harness serves several test binaries; this one uses only part of it.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use drasi_store_operator::controller::{self, Error, error_policy, reconcile_guarded};
use drasi_store_operator::crd::{DrasiStateStore, Phase};
use drasi_store_operator::leader::{LeaderElectionConfig, LeaderExit, run_with_leader_election};
use drasi_store_operator::metrics::Health;
use drasi_store_operator::rotation;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use support::*;

const NAME: &str = "orders";

fn is_apply(request: &RecordedRequest) -> bool {
    request.method == "PATCH"
        && request
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/apply-patch"))
}

fn config_hash(sts: &Value) -> String {
    sts["spec"]["template"]["metadata"]["annotations"]["drasi.io/config-hash"]
        .as_str()
        .expect("config hash annotation")
        .to_string()
}

#[tokio::test]
async fn create_applies_every_object_with_the_field_manager_and_reports_progress() {
    let h = Harness::new();
    let action = h.create_and_apply(NAME, json!({})).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));

    let store = h.store(NAME);
    assert_eq!(
        store.metadata.finalizers.as_deref(),
        Some(&["drasi.io/state-store-cleanup".to_string()][..])
    );

    // Every owned object exists, was server-side applied by our manager,
    // and points back at the store.
    let applied: Vec<String> = h
        .object_writes()
        .iter()
        .filter(|r| is_apply(r))
        .map(|r| {
            assert_eq!(
                r.query_param("fieldManager").as_deref(),
                Some("drasi-store-operator")
            );
            assert_eq!(r.query_param("force").as_deref(), Some("true"));
            r.path.clone()
        })
        .collect();
    for path in [
        secret_path("orders-auth"),
        secret_path("orders-connection"),
        service_path("orders"),
        service_path("orders-headless"),
        sts_path("orders"),
    ] {
        assert!(applied.contains(&path), "{path} not applied: {applied:?}");
        let object = h.server.get(&path).expect("object stored");
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["kind"],
            "DrasiStateStore"
        );
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "drasi-store-operator"
        );
    }

    // The generated token is in the auth Secret and handed to clients.
    let token = secret_value(&h.server.get(&secret_path("orders-auth")).unwrap(), "token")
        .expect("generated token");
    assert!(token.len() >= 32, "token is long enough");
    let connection = h.server.get(&secret_path("orders-connection")).unwrap();
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_TOKEN").as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_URL").as_deref(),
        Some("http://orders.apps.svc:7070")
    );

    let status = store.status.clone().expect("status written");
    assert_eq!(status.phase, Some(Phase::Provisioning));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        condition(&store, "Progressing"),
        ("True".into(), "RollingOut".into())
    );
    assert_eq!(condition(&store, "Ready").0, "False");
    assert_eq!(status.image.as_deref(), Some(SERVER_IMAGE));
    assert!(h.event_reasons().contains(&"Created".to_string()));
    assert!(
        h.metrics
            .encode()
            .contains("managed_stores{phase=\"Provisioning\"} 1")
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn ready_statefulset_makes_the_store_ready_and_unchanged_status_is_not_rewritten() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    h.mark_statefulset_ready(NAME);

    let action = h.reconcile(NAME).await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let store = h.store(NAME);
    let status = store.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://orders.apps.svc:7070")
    );
    assert_eq!(
        status.connection_secret.as_deref(),
        Some("orders-connection")
    );
    assert_eq!(
        condition(&store, "Ready"),
        ("True".into(), "ServerReady".into())
    );
    assert_eq!(condition(&store, "Degraded").0, "False");
    assert!(h.event_reasons().contains(&"Ready".to_string()));

    // Nothing changed: no status write, and the token was not rotated.
    let token = secret_value(&h.server.get(&secret_path("orders-auth")).unwrap(), "token");
    h.server.clear_requests();
    h.reconcile(NAME).await.expect("reconcile");
    assert!(
        !h.writes().iter().any(|r| r.path.ends_with("/status")),
        "status rewritten although nothing changed"
    );
    assert_eq!(
        secret_value(&h.server.get(&secret_path("orders-auth")).unwrap(), "token"),
        token
    );
    assert!(
        h.metrics
            .encode()
            .contains("managed_stores{phase=\"Ready\"} 1")
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn spec_change_reapplies_with_a_new_config_hash() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    let before = config_hash(&h.server.get(&sts_path(NAME)).unwrap());

    h.edit_spec(NAME, |spec| spec["durability"] = json!("Eventual"));
    h.server.clear_requests();
    h.reconcile(NAME).await.expect("reconcile");

    assert!(
        h.object_writes()
            .iter()
            .any(|r| is_apply(r) && r.path == sts_path(NAME))
    );
    let sts = h.server.get(&sts_path(NAME)).unwrap();
    assert_ne!(config_hash(&sts), before, "the pod template must roll");
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("eventual"), "{args}");
    assert_eq!(h.store(NAME).status.unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn delete_with_retain_keeps_the_pvc_and_removes_the_finalizer() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    h.add_pvc(NAME, "standard", "1Gi", "1Gi");
    h.delete_store(NAME);

    let action = h.reconcile(NAME).await.expect("cleanup");
    assert_eq!(action, Action::await_change());
    assert!(
        h.server.get(&pvc_path("data-orders-0")).is_some(),
        "PVC retained"
    );
    assert!(!h.writes().iter().any(|r| r.method == "DELETE"));
    assert!(!h.store_exists(NAME), "finalizer removed, object gone");
    assert!(h.event_reasons().contains(&"Cleanup".to_string()));
    let metrics = h.metrics.encode();
    assert!(metrics.contains("managed_stores{phase=\"Provisioning\"} 0"));
    assert!(metrics.contains("managed_stores{phase=\"Terminating\"} 0"));
    // The status said Terminating before the finalizer was released.
    let writes = h.writes();
    let terminating = writes
        .iter()
        .position(|r| {
            r.path == format!("{}/status", store_path(NAME))
                && r.body
                    .as_ref()
                    .is_some_and(|b| b["status"]["phase"] == "Terminating")
        })
        .expect("Terminating status written");
    let released = writes
        .iter()
        .rposition(|r| r.path == store_path(NAME) && r.method == "PATCH")
        .expect("finalizer removed");
    assert!(terminating < released);
    let body = writes[terminating].body.as_ref().unwrap();
    let progressing = body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "Terminating");
    assert!(
        progressing["message"].as_str().unwrap().contains("Retain"),
        "{progressing}"
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn failing_cleanup_shows_terminating_with_the_failure_until_it_succeeds() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "pvcRetention": { "whenDeleted": "Delete" } }))
        .await;
    h.mark_statefulset_ready(NAME);
    h.reconcile(NAME).await.expect("ready");
    h.add_pvc(NAME, "standard", "1Gi", "1Gi");
    h.server.fail(
        "GET",
        &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
        500,
        2,
    );
    h.delete_store(NAME);

    h.reconcile(NAME).await.expect_err("listing PVCs fails");
    let store = h.store(NAME);
    let status = store.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Terminating));
    assert_eq!(
        condition(&store, "Ready"),
        ("False".into(), "Terminating".into())
    );
    assert_eq!(
        condition(&store, "Progressing"),
        ("True".into(), "Terminating".into())
    );
    assert_eq!(
        condition(&store, "Degraded"),
        ("True".into(), "CleanupFailed".into())
    );
    // Last observations stay: consumers still see where the store was.
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://orders.apps.svc:7070")
    );
    assert!(
        h.metrics
            .encode()
            .contains("managed_stores{phase=\"Terminating\"} 1")
    );

    // The same failure again rewrites nothing.
    let status_writes = |h: &Harness| {
        h.writes()
            .iter()
            .filter(|r| r.path.ends_with("/status"))
            .count()
    };
    let before = status_writes(&h);
    h.reconcile(NAME).await.expect_err("fails again");
    assert_eq!(status_writes(&h), before, "identical status rewritten");

    h.reconcile(NAME).await.expect("cleanup succeeds");
    assert!(h.server.get(&pvc_path("data-orders-0")).is_none());
    assert!(!h.store_exists(NAME));
    assert!(
        h.metrics
            .encode()
            .contains("managed_stores{phase=\"Terminating\"} 0")
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_store_whose_first_apply_fails_is_pending() {
    let h = Harness::new();
    h.create_store(NAME, json!({}));
    h.reconcile(NAME).await.expect("finalizer");
    // E.g. an admission webhook or quota rejecting the StatefulSet.
    h.server.fail("PATCH", &sts_path(NAME), 500, 1);
    h.reconcile(NAME)
        .await
        .expect_err("StatefulSet apply fails");
    let store = h.store(NAME);
    assert_eq!(store.status.as_ref().unwrap().phase, Some(Phase::Pending));
    assert_eq!(
        condition(&store, "Progressing"),
        ("True".into(), "Creating".into())
    );
    assert_eq!(
        condition(&store, "Degraded"),
        ("False".into(), "AsExpected".into())
    );
    assert!(
        h.metrics
            .encode()
            .contains("managed_stores{phase=\"Pending\"} 1")
    );

    // The retry applies everything and moves on; Pending is not written again.
    h.reconcile(NAME).await.expect("recovers");
    let store = h.store(NAME);
    assert_eq!(
        store.status.as_ref().unwrap().phase,
        Some(Phase::Provisioning)
    );
    let pending_writes = h
        .writes()
        .iter()
        .filter(|r| {
            r.path.ends_with("/status")
                && r.body
                    .as_ref()
                    .is_some_and(|b| b["status"]["phase"] == "Pending")
        })
        .count();
    assert_eq!(pending_writes, 1);
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn delete_with_delete_policy_deletes_the_instance_pvcs_only() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "pvcRetention": { "whenDeleted": "Delete" } }))
        .await;
    h.add_pvc(NAME, "standard", "1Gi", "1Gi");
    h.add_pvc("other", "standard", "1Gi", "1Gi");
    h.delete_store(NAME);

    h.reconcile(NAME).await.expect("cleanup");
    assert!(
        h.server.get(&pvc_path("data-orders-0")).is_none(),
        "PVC deleted"
    );
    assert!(
        h.server.get(&pvc_path("data-other-0")).is_some(),
        "another store's PVC kept"
    );
    assert!(!h.store_exists(NAME));
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off_exponentially() {
    let h = Harness::new();
    h.create_store(NAME, json!({}));
    h.reconcile(NAME).await.expect("finalizer");
    h.server.fail("PATCH", &sts_path(NAME), 500, 3);

    let store = Arc::new(h.store(NAME));
    let mut delays = Vec::new();
    for _ in 0..3 {
        let error = h
            .reconcile(NAME)
            .await
            .expect_err("500 from the API server");
        assert!(matches!(error, Error::Apply(_)), "{error}");
        assert!(
            error.to_string().contains("StatefulSet apps/orders"),
            "{error}"
        );
        delays.push(error_policy(store.clone(), &error, h.ctx.clone()));
    }
    assert_eq!(
        delays,
        [1, 2, 4].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert!(
        h.metrics
            .encode()
            .contains("reconcile_errors_total{reason=\"ApiError\"} 3")
    );

    // Success resets the backoff.
    h.reconcile(NAME).await.expect("recovers");
    let error = Error::MissingMetadata("name");
    assert_eq!(
        error_policy(store, &error, h.ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn paused_store_applies_nothing() {
    let h = Harness::new();
    h.create_store(NAME, json!({ "paused": true }));
    h.reconcile(NAME).await.expect("finalizer");
    let action = h.reconcile(NAME).await.expect("reconcile");

    assert_eq!(action, Action::await_change());
    assert!(h.object_writes().is_empty(), "{:?}", h.object_writes());
    assert!(h.server.get(&sts_path(NAME)).is_none());
    let store = h.store(NAME);
    assert_eq!(store.status.as_ref().unwrap().phase, Some(Phase::Paused));
    assert_eq!(
        condition(&store, "Progressing"),
        ("False".into(), "Paused".into())
    );
    assert!(h.event_reasons().contains(&"Paused".to_string()));
}

#[tokio::test]
async fn missing_existing_secret_degrades_until_it_appears() {
    let h = Harness::new();
    let action = h
        .create_and_apply(NAME, json!({ "auth": { "existingSecret": "my-token" } }))
        .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let store = h.store(NAME);
    assert_eq!(store.status.as_ref().unwrap().phase, Some(Phase::Degraded));
    assert_eq!(
        condition(&store, "Degraded"),
        ("True".into(), "AuthSecretMissing".into())
    );
    assert!(
        h.object_writes().is_empty(),
        "nothing applied while degraded"
    );
    assert!(h.event_reasons().contains(&"Degraded".to_string()));

    h.add_secret("my-token", &[("token", "first-token\nsecond-token\n")]);
    h.reconcile(NAME).await.expect("reconcile");
    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "Degraded"),
        ("False".into(), "AsExpected".into())
    );
    assert!(
        h.server.get(&secret_path("orders-auth")).is_none(),
        "no token generated"
    );
    let connection = h.server.get(&secret_path("orders-connection")).unwrap();
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_TOKEN").as_deref(),
        Some("first-token")
    );

    // The user rotates the token: the next pass (the Secret watch triggers
    // it, see the controller loop test) re-syncs the
    // connection Secret without restarting the server pod.
    let hash = config_hash(&h.server.get(&sts_path(NAME)).unwrap());
    h.add_secret("my-token", &[("token", "rotated-token\nfirst-token\n")]);
    h.reconcile(NAME).await.expect("reconcile");
    let connection = h.server.get(&secret_path("orders-connection")).unwrap();
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_TOKEN").as_deref(),
        Some("rotated-token")
    );
    assert_eq!(config_hash(&h.server.get(&sts_path(NAME)).unwrap()), hash);
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn missing_tls_secret_degrades() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "tls": { "secretName": "orders-tls" } }))
        .await;
    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "Degraded"),
        ("True".into(), "TlsSecretMissing".into())
    );

    h.add_secret("orders-tls", &[("tls.crt", "CERT"), ("tls.key", "KEY")]);
    h.reconcile(NAME).await.expect("reconcile");
    let connection = h.server.get(&secret_path("orders-connection")).unwrap();
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_CA_CERT").as_deref(),
        Some("CERT")
    );
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_URL").as_deref(),
        Some("https://orders.apps.svc:7070")
    );
}

#[tokio::test]
async fn growing_storage_on_a_non_expandable_class_degrades_and_touches_nothing() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "storage": { "size": "1Gi" } }))
        .await;
    h.mark_statefulset_ready(NAME);
    h.add_pvc(NAME, "standard", "1Gi", "1Gi");
    h.add_storage_class("standard", None);
    h.reconcile(NAME).await.expect("ready");

    h.edit_spec(NAME, |spec| spec["storage"]["size"] = json!("2Gi"));
    h.server.clear_requests();
    h.reconcile(NAME).await.expect("reconcile");

    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "Degraded"),
        ("True".into(), "VolumeExpansionNotSupported".into())
    );
    let message = &condition_of(&store, "Degraded").message;
    assert!(message.contains("allowVolumeExpansion"), "{message}");
    let touched: Vec<_> = h
        .object_writes()
        .into_iter()
        .filter(|r| r.path.contains("statefulsets") || r.path.contains("persistentvolumeclaims"))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    // The running server is still reported as ready.
    assert_eq!(condition(&store, "Ready").0, "True");
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn growing_storage_expands_the_pvc_and_recreates_the_statefulset_orphaning_pods() {
    let h = Harness::new();
    h.create_and_apply(
        NAME,
        json!({ "storage": { "size": "1Gi", "storageClassName": "fast" } }),
    )
    .await;
    h.mark_statefulset_ready(NAME);
    h.add_pvc(NAME, "fast", "1Gi", "1Gi");
    h.add_storage_class("fast", Some(true));
    h.reconcile(NAME).await.expect("ready");
    let hash_before = config_hash(&h.server.get(&sts_path(NAME)).unwrap());

    h.edit_spec(NAME, |spec| spec["storage"]["size"] = json!("2Gi"));
    h.server.clear_requests();
    h.reconcile(NAME).await.expect("reconcile");

    let writes = h.object_writes();
    let pvc_patch = writes
        .iter()
        .position(|r| r.method == "PATCH" && r.path == pvc_path("data-orders-0"))
        .expect("PVC patched");
    let sts_delete = writes
        .iter()
        .position(|r| r.method == "DELETE" && r.path == sts_path(NAME))
        .expect("StatefulSet deleted");
    let sts_apply = writes
        .iter()
        .position(|r| is_apply(r) && r.path == sts_path(NAME))
        .expect("StatefulSet re-applied");
    assert!(
        pvc_patch < sts_delete && sts_delete < sts_apply,
        "{writes:?}"
    );
    assert_eq!(
        writes[sts_delete].body.as_ref().unwrap()["propagationPolicy"],
        "Orphan",
        "pods must survive"
    );
    let pvc = h.server.get(&pvc_path("data-orders-0")).unwrap();
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "2Gi");
    let sts = h.server.get(&sts_path(NAME)).unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "2Gi"
    );
    assert_eq!(
        config_hash(&sts),
        hash_before,
        "growing the volume must not roll the pod"
    );

    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "Progressing"),
        ("True".into(), "VolumeExpanding".into())
    );
    assert!(
        h.event_reasons()
            .contains(&"VolumeExpansionStarted".to_string())
    );

    // The driver finishes: capacity catches up, the store is ready again.
    h.mark_statefulset_ready(NAME);
    h.server.update(&pvc_path("data-orders-0"), |pvc| {
        pvc["status"]["capacity"]["storage"] = json!("2Gi");
    });
    h.reconcile(NAME).await.expect("reconcile");
    let store = h.store(NAME);
    let status = store.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(
        status
            .storage
            .as_ref()
            .unwrap()
            .capacity
            .as_ref()
            .unwrap()
            .0,
        "2Gi"
    );
    assert!(
        h.event_reasons()
            .contains(&"VolumeExpansionFinished".to_string())
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn cleanup_in_a_terminating_namespace_never_blocks() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "pvcRetention": { "whenDeleted": "Delete" } }))
        .await;
    h.server.update(&format!("/api/v1/namespaces/{NS}"), |ns| {
        ns["metadata"]["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
        ns["status"]["phase"] = json!("Terminating");
    });
    // Listing PVCs would fail; it must not even matter.
    h.server.fail(
        "GET",
        &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
        500,
        100,
    );
    h.delete_store(NAME);
    h.reconcile(NAME).await.expect("cleanup");
    assert!(!h.store_exists(NAME));
}

#[tokio::test]
async fn cleanup_that_keeps_failing_releases_the_finalizer_eventually() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "pvcRetention": { "whenDeleted": "Delete" } }))
        .await;
    h.server.fail(
        "GET",
        &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
        500,
        100,
    );
    h.delete_store(NAME);

    let mut attempts = 0;
    while h.store_exists(NAME) {
        attempts += 1;
        assert!(attempts <= 20, "finalizer never released");
        if let Err(error) = h.reconcile(NAME).await {
            error_policy(Arc::new(h.store(NAME)), &error, h.ctx.clone());
        }
    }
    assert_eq!(attempts, 8);
    assert!(h.event_reasons().contains(&"CleanupSkipped".to_string()));
}

#[tokio::test]
async fn malformed_object_is_reported_without_failing() {
    let h = Harness::new();
    let object: DeserializeGuard<DrasiStateStore> = serde_json::from_value(json!({
        "apiVersion": "drasi.io/v1alpha1",
        "kind": "DrasiStateStore",
        "metadata": { "name": NAME, "namespace": NS, "uid": "u1" },
        "spec": { "storage": "lots" },
    }))
    .expect("the guard accepts any object with metadata");
    assert!(object.0.is_err());
    let action = reconcile_guarded(Arc::new(object), h.ctx.clone())
        .await
        .expect("no error");
    assert_eq!(action, Action::await_change());
    assert_eq!(h.event_reasons(), ["InvalidObject"]);
}

/// Requests since the `since`-th about store `name` or its objects, other
/// than Events (which trail a pass and say nothing about a new one).
fn requests_about(h: &Harness, name: &str, since: usize) -> Vec<String> {
    h.server.requests()[since..]
        .iter()
        .filter(|r| !r.path.contains("/events"))
        .filter(|r| {
            r.path
                .rsplit('/')
                .any(|segment| segment == name || segment.starts_with(&format!("{name}-")))
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn phase(h: &Harness, name: &str) -> Option<Phase> {
    h.store_exists(name)
        .then(|| h.store(name).status.and_then(|s| s.phase))
        .flatten()
}

/// `controller::run` against the simulated API server.
struct RunningController {
    health: Arc<Health>,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningController {
    /// Starts the loop and waits until its caches are synced and its
    /// watches open.
    async fn start(h: &Harness) -> Self {
        let health = Arc::new(Health::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(
            h.ctx.clone(),
            Some(NS),
            health.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        // The store watch, the three owned-object watches and the referenced
        // Secrets watch.
        wait_for("caches synced and watches open", || {
            health.is_ready() && h.server.open_watches() >= 5
        })
        .await;
        Self {
            health,
            stop_tx,
            task,
        }
    }

    /// Signals shutdown and waits (10 s at most) for the loop to end.
    async fn stop(self) {
        self.stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("controller stops on shutdown")
            .unwrap();
    }
}

#[tokio::test]
async fn controller_loop_reconciles_from_watches_and_ignores_its_own_status_writes() {
    let h = Harness::new();
    let controller = RunningController::start(&h).await;

    h.create_store(NAME, json!({}));
    wait_for("objects applied", || {
        h.server.get(&sts_path(NAME)).is_some() && phase(&h, NAME) == Some(Phase::Provisioning)
    })
    .await;

    // The StatefulSet controller reports the pod ready: the owned-object
    // watch triggers the store.
    h.mark_statefulset_ready(NAME);
    wait_for("ready", || phase(&h, NAME) == Some(Phase::Ready)).await;

    // Settled, and a status-only update (such as the operator's own status
    // writes) does not trigger a reconcile: the generation predicate
    // filters it.
    let since = h.server.requests().len();
    h.server.update(&store_path(NAME), |store| {
        store["status"]["readyReplicas"] = json!(7);
    });
    // The store watch delivers events in order: once a store created after
    // the update has been through two passes, the update was seen too.
    h.create_store("marker", json!({}));
    wait_for("the marker store reconciled", || {
        phase(&h, "marker") == Some(Phase::Provisioning)
    })
    .await;
    assert_eq!(
        requests_about(&h, NAME, since),
        Vec::<String>::new(),
        "a status-only update triggered a reconcile"
    );
    assert_eq!(
        h.store(NAME).status.and_then(|s| s.ready_replicas),
        Some(7),
        "a reconcile rewrote the status"
    );

    // A spec change does trigger one.
    h.edit_spec(NAME, |spec| spec["durability"] = json!("Eventual"));
    wait_for("spec change reconciled", || {
        h.store(NAME).status.and_then(|s| s.observed_generation) == Some(2)
    })
    .await;

    h.delete_store(NAME);
    wait_for("finalizer released", || !h.store_exists(NAME)).await;

    let health = controller.health.clone();
    controller.stop().await;
    assert!(!health.is_ready());
    // This run includes the controller's list and watch calls.
    let verbs: Vec<String> = h
        .server
        .requests()
        .iter()
        .flat_map(|r| r.rbac.iter().map(|a| a.verb.clone()))
        .collect();
    assert!(verbs.iter().any(|v| v == "watch") && verbs.iter().any(|v| v == "list"));
    h.assert_rbac_covers_every_request();
}

fn connection_value(h: &Harness, key: &str) -> Option<String> {
    secret_value(&h.server.get(&secret_path("orders-connection"))?, key)
}

#[tokio::test]
async fn controller_loop_follows_referenced_secrets_without_waiting_for_the_requeue() {
    let h = Harness::new();
    let controller = RunningController::start(&h).await;

    // The TLS Secret does not exist yet: Degraded, which alone would only
    // be re-checked after 30 s.
    h.add_secret("orders-token", &[("token", "first-token")]);
    h.create_store(
        NAME,
        json!({
            "auth": { "existingSecret": "orders-token" },
            "tls": { "secretName": "orders-tls" },
        }),
    );
    wait_for("degraded on the missing TLS Secret", || {
        h.store_exists(NAME)
            && h.store(NAME).status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Degraded" && c.reason == "TlsSecretMissing")
            })
    })
    .await;

    // cert-manager issues the certificate: the Secret watch triggers the store.
    h.add_secret("orders-tls", &[("ca.crt", "CA-1"), ("tls.crt", "CERT-1")]);
    wait_for("objects applied once the Secret exists", || {
        h.server.get(&sts_path(NAME)).is_some()
    })
    .await;
    h.mark_statefulset_ready(NAME);
    wait_for("ready", || phase(&h, NAME) == Some(Phase::Ready)).await;
    assert_eq!(
        connection_value(&h, "DRASI_STATE_STORE_TOKEN").as_deref(),
        Some("first-token")
    );
    let hash = config_hash(&h.server.get(&sts_path(NAME)).unwrap());

    // A Ready store is requeued only every 5 minutes: these follow within
    // the 10 s of `wait_for` only through the Secret watch.
    h.add_secret("orders-token", &[("token", "rotated-token\nfirst-token")]);
    wait_for("rotated token in the connection Secret", || {
        connection_value(&h, "DRASI_STATE_STORE_TOKEN").as_deref() == Some("rotated-token")
    })
    .await;
    h.add_secret("orders-tls", &[("ca.crt", "CA-2"), ("tls.crt", "CERT-2")]);
    wait_for("renewed CA in the connection Secret", || {
        connection_value(&h, "DRASI_STATE_STORE_CA_CERT").as_deref() == Some("CA-2")
    })
    .await;
    // The server re-reads both files itself: no pod restart.
    assert_eq!(config_hash(&h.server.get(&sts_path(NAME)).unwrap()), hash);

    // Unrelated Secrets do not trigger the store. The Secret watch delivers
    // events in order: once a Secret created after the unrelated one has
    // reached the store that references it, the unrelated one was seen too.
    h.add_secret("marker-token", &[("token", "marker-1")]);
    h.create_store(
        "marker",
        json!({ "auth": { "existingSecret": "marker-token" } }),
    );
    wait_for("the marker store reconciled", || {
        phase(&h, "marker") == Some(Phase::Provisioning)
    })
    .await;
    let since = h.server.requests().len();
    h.add_secret("someone-elses", &[("password", "x")]);
    h.add_secret("marker-token", &[("token", "marker-2")]);
    wait_for("the marker's rotated token", || {
        h.server
            .get(&secret_path("marker-connection"))
            .and_then(|s| secret_value(&s, "DRASI_STATE_STORE_TOKEN"))
            .as_deref()
            == Some("marker-2")
    })
    .await;
    assert_eq!(
        requests_about(&h, NAME, since),
        Vec::<String>::new(),
        "an unrelated Secret triggered a reconcile"
    );

    controller.stop().await;
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn leader_election_takes_and_releases_the_lease() {
    let h = Harness::new();
    let lease_path =
        format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/drasi-store-operator-leader");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let leading = Arc::new(AtomicBool::new(false));
    let became = leading.clone();
    let election = tokio::spawn(run_with_leader_election(
        h.ctx.client.clone(),
        LeaderElectionConfig {
            namespace: NS.to_string(),
            lease_name: "drasi-store-operator-leader".to_string(),
            identity: "operator-0".to_string(),
        },
        stop_rx,
        move || became.store(true, Ordering::SeqCst),
        |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    wait_for("leadership", || leading.load(Ordering::SeqCst)).await;
    let lease = h.server.get(&lease_path).expect("lease created");
    assert_eq!(lease["spec"]["holderIdentity"], "operator-0");

    stop_tx.send(true).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), election)
        .await
        .expect("election stops on shutdown")
        .unwrap()
        .expect("no election error");
    assert_eq!(exit, LeaderExit::Finished);
    let lease = h.server.get(&lease_path).unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "lease released: {lease}"
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn manage_crd_applies_the_crd_and_waits_until_it_is_established() {
    let h = Harness::new();
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/drasistatestores.drasi.io";
    // Plays the API server's CRD controller: establish the CRD once it exists.
    let server = h.server.clone();
    let backup_path =
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/drasistatestorebackups.drasi.io";
    let establish = tokio::spawn(async move {
        for crd_path in [path, backup_path] {
            wait_for("CRD applied", || server.get(crd_path).is_some()).await;
            server.update(crd_path, |crd| {
                crd["status"] =
                    json!({ "conditions": [{ "type": "Established", "status": "True" }] });
            });
        }
    });
    drasi_store_operator::controller::manage_crd::apply_crd(&h.ctx.client, Duration::from_secs(10))
        .await
        .expect("CRD applied and established");
    establish.await.unwrap();
    let crd = h.server.get(path).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "DrasiStateStore");
    let apply = h
        .writes()
        .into_iter()
        .find(|r| r.path == path)
        .expect("apply sent");
    assert_eq!(
        apply.query_param("fieldManager").as_deref(),
        Some("drasi-store-operator")
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn manage_crd_gives_up_when_the_crd_never_becomes_established() {
    let h = Harness::new();
    let error = drasi_store_operator::controller::manage_crd::apply_crd(
        &h.ctx.client,
        Duration::from_millis(200),
    )
    .await
    .expect_err("never established");
    assert!(error.to_string().contains("not established"), "{error}");
}

#[tokio::test]
async fn deleting_a_paused_store_still_cleans_up() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "pvcRetention": { "whenDeleted": "Delete" } }))
        .await;
    h.add_pvc(NAME, "standard", "1Gi", "1Gi");
    h.edit_spec(NAME, |spec| spec["paused"] = json!(true));
    h.reconcile(NAME).await.expect("paused");
    h.delete_store(NAME);
    h.reconcile(NAME).await.expect("cleanup");
    assert!(h.server.get(&pvc_path("data-orders-0")).is_none());
    assert!(!h.store_exists(NAME));
}

/// Server-side apply, not a merge: a field the operator applied before and
/// no longer sets disappears, while fields other clients set stay. The CA
/// key of the connection Secret must go when TLS is turned off, or clients
/// would keep trusting a certificate the server no longer serves.
#[tokio::test]
async fn a_field_the_operator_stops_setting_is_removed() {
    let h = Harness::new();
    h.add_secret(
        "orders-tls",
        &[("ca.crt", "CA"), ("tls.crt", "CERT"), ("tls.key", "KEY")],
    );
    h.create_and_apply(NAME, json!({ "tls": { "secretName": "orders-tls" } }))
        .await;
    assert_eq!(
        connection_value(&h, "DRASI_STATE_STORE_CA_CERT").as_deref(),
        Some("CA")
    );
    // Another client labels the Secret: a field the operator does not own.
    h.server
        .update(&secret_path("orders-connection"), |secret| {
            secret["metadata"]["labels"]["team"] = json!("payments");
        });

    h.edit_spec(NAME, |spec| {
        spec.as_object_mut().unwrap().remove("tls");
    });
    h.reconcile(NAME).await.expect("reconcile");

    let connection = h.server.get(&secret_path("orders-connection")).unwrap();
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_CA_CERT"),
        None,
        "the CA key outlived TLS: {connection}"
    );
    assert_eq!(
        secret_value(&connection, "DRASI_STATE_STORE_URL").as_deref(),
        Some("http://orders.apps.svc:7070")
    );
    assert_eq!(connection["metadata"]["labels"]["team"], "payments");
    let sts = h.server.get(&sts_path(NAME)).unwrap();
    let volumes = sts["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(!volumes.contains("orders-tls"), "{volumes}");
    h.assert_rbac_covers_every_request();
}

/// Moves the start of the rotation stage recorded on `<name>-auth` back by
/// `seconds`, as if that much time had passed.
fn age_rotation_stage(h: &Harness, seconds: i64) {
    h.server.update(&secret_path("orders-auth"), |secret| {
        let since = secret["metadata"]["annotations"][rotation::SINCE_ANNOTATION]
            .as_str()
            .expect("a rotation stage is recorded")
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap();
        let earlier = since
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
            .unwrap();
        secret["metadata"]["annotations"][rotation::SINCE_ANNOTATION] = json!(earlier.to_string());
    });
}

fn auth_annotation(h: &Harness, key: &str) -> Option<String> {
    h.server.get(&secret_path("orders-auth")).unwrap()["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_rotation_trigger_overlaps_old_and_new_token_and_requeues_each_step_on_time() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    h.mark_statefulset_ready(NAME);
    pass(&h).await;
    let auth =
        || secret_value(&h.server.get(&secret_path("orders-auth")).unwrap(), "token").unwrap();
    let old = auth();
    assert_eq!(
        connection_value(&h, "DRASI_STATE_STORE_TOKEN"),
        Some(old.clone())
    );
    let template_hash = config_hash(&h.server.get(&sts_path(NAME)).unwrap());

    h.edit_spec(
        NAME,
        |spec| {
            spec["auth"] =
                json!({ "rotation": { "trigger": "2026-11-30", "gracePeriodSeconds": 600 } })
        },
    );
    let action = pass(&h).await;
    // Staged: the server accepts both, clients still get the old token.
    let lines: Vec<String> = auth().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], old);
    let new = lines[1].clone();
    assert_eq!(new.len(), 64);
    assert_ne!(new, old);
    assert_eq!(
        connection_value(&h, "DRASI_STATE_STORE_TOKEN"),
        Some(old.clone())
    );
    assert_eq!(
        auth_annotation(&h, rotation::STAGE_ANNOTATION).as_deref(),
        Some("Staged")
    );
    assert_eq!(
        auth_annotation(&h, rotation::TRIGGER_ANNOTATION).as_deref(),
        Some("2026-11-30")
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(121)));
    assert!(
        h.event_reasons()
            .contains(&"TokenRotationStarted".to_string())
    );

    // A pass before the step is due changes nothing.
    pass(&h).await;
    assert_eq!(auth(), format!("{old}\n{new}"));

    age_rotation_stage(&h, 120);
    let action = pass(&h).await;
    // Switched: clients get the new token, the old one stays valid.
    assert_eq!(auth(), format!("{new}\n{old}"));
    assert_eq!(
        connection_value(&h, "DRASI_STATE_STORE_TOKEN"),
        Some(new.clone())
    );
    assert_eq!(
        auth_annotation(&h, rotation::STAGE_ANNOTATION).as_deref(),
        Some("Switched")
    );
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(300)),
        "grace 600 s > ready requeue"
    );
    assert!(
        h.event_reasons()
            .contains(&"TokenRotationSwitched".to_string())
    );

    age_rotation_stage(&h, 599);
    let action = pass(&h).await;
    assert_eq!(
        auth(),
        format!("{new}\n{old}"),
        "the grace period is not over"
    );
    // Requeued for the end of the grace period (about 2 s, measured on
    // the real clock), not after the 5-minute resync.
    assert_ne!(action, Action::requeue(Duration::from_secs(300)));

    age_rotation_stage(&h, 1);
    pass(&h).await;
    // Finished: only the new token; the stage annotations are gone, the
    // trigger stays so that it does not rotate again.
    assert_eq!(auth(), new);
    assert_eq!(
        connection_value(&h, "DRASI_STATE_STORE_TOKEN"),
        Some(new.clone())
    );
    assert_eq!(auth_annotation(&h, rotation::STAGE_ANNOTATION), None);
    assert_eq!(auth_annotation(&h, rotation::SINCE_ANNOTATION), None);
    assert_eq!(
        auth_annotation(&h, rotation::TRIGGER_ANNOTATION).as_deref(),
        Some("2026-11-30")
    );
    assert!(
        h.event_reasons()
            .contains(&"TokenRotationFinished".to_string())
    );
    pass(&h).await;
    assert_eq!(auth(), new, "the same trigger never rotates twice");
    // The pod template never changed: rotation needs no restart.
    assert_eq!(
        config_hash(&h.server.get(&sts_path(NAME)).unwrap()),
        template_hash
    );
    h.assert_rbac_covers_every_request();
}

/// One reconcile pass, boxed: this test awaits many passes, and unboxed
/// their futures would overflow the test thread's stack in a debug build.
async fn pass(h: &Harness) -> Action {
    Box::pin(h.reconcile(NAME)).await.expect("reconcile")
}

fn network_policy_path(name: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{name}")
}

#[tokio::test]
async fn network_policy_follows_spec_and_never_touches_someone_elses() {
    let h = Harness::new();
    // Someone's own NetworkPolicy named like the store, while the store's
    // is off: none of the store's business, left alone, nothing blocked.
    h.server.put(
        "networkpolicies",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": NAME, "namespace": NS },
            "spec": { "podSelector": {}, "policyTypes": ["Ingress"] },
        }),
    );
    h.create_and_apply(NAME, json!({})).await;
    let foreign = h.server.get(&network_policy_path(NAME)).unwrap();
    assert!(foreign["metadata"].get("ownerReferences").is_none());
    assert!(
        h.server.get(&sts_path(NAME)).is_some(),
        "the store was applied"
    );

    // Turned on while that policy is in the way: Degraded, never adopted.
    h.edit_spec(NAME, |spec| {
        spec["networkPolicy"] = json!({ "enabled": true })
    });
    pass(&h).await;
    assert_eq!(
        condition(&h.store(NAME), "Degraded"),
        ("True".into(), "ObjectNotOwned".into())
    );
    assert_eq!(
        h.server.get(&network_policy_path(NAME)).unwrap()["spec"],
        foreign["spec"]
    );

    // Once its owner deletes it, the store's own policy is applied.
    let policies: kube::Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        kube::Api::namespaced(h.ctx.client.clone(), NS);
    policies.delete(NAME, &Default::default()).await.unwrap();
    assert!(h.server.get(&network_policy_path(NAME)).is_none());
    pass(&h).await;
    let policy = h.server.get(&network_policy_path(NAME)).expect("applied");
    assert_eq!(
        policy["metadata"]["ownerReferences"][0]["kind"],
        "DrasiStateStore"
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["drasi.io/state-store-client"],
        NAME
    );
    assert_eq!(condition(&h.store(NAME), "Degraded").0, "False");

    // Turned off: the store's policy is deleted.
    h.edit_spec(NAME, |spec| spec["networkPolicy"]["enabled"] = json!(false));
    pass(&h).await;
    assert!(h.server.get(&network_policy_path(NAME)).is_none());
    let deletes = h
        .writes()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path == network_policy_path(NAME))
        .count();
    assert_eq!(deletes, 2, "the owner's delete above, then the operator's");
    h.assert_rbac_covers_every_request();
}

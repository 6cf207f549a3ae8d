//! The reconciler as a confused deputy: objects it did not create, Secrets
//! that did not opt in, images outside the allow-list, and resyncs that
//! must not write. Against the SIMULATED API server (`support/fake_api/`).

// The shared harness serves several test binaries; this one uses only part of it.
#[allow(dead_code)]
mod support;

use drasi_store_operator::crd::Phase;
use serde_json::json;

use support::*;

const NAME: &str = "orders";

/// Notes of the Warning events published so far.
fn warnings(h: &Harness) -> Vec<String> {
    h.server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .filter_map(|r| {
            let body = r.body.as_ref()?;
            (body["type"] == "Warning")
                .then(|| body["note"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn an_object_the_store_does_not_own_is_never_applied_over() {
    for (path, object) in [
        (
            secret_path("orders-connection"),
            json!({ "apiVersion": "v1", "kind": "Secret",
                    "metadata": { "name": "orders-connection", "namespace": NS },
                    "data": { "precious": "c2VjcmV0" } }),
        ),
        (
            service_path("orders-headless"),
            json!({ "apiVersion": "v1", "kind": "Service",
                    "metadata": { "name": "orders-headless", "namespace": NS },
                    "spec": { "ports": [{ "port": 80 }] } }),
        ),
        (
            secret_path("orders-auth"),
            json!({ "apiVersion": "v1", "kind": "Secret",
                    "metadata": { "name": "orders-auth", "namespace": NS,
                                  "ownerReferences": [{ "apiVersion": "drasi.io/v1alpha1",
                                    "kind": "DrasiStateStore", "name": NAME, "controller": true,
                                    "uid": "uid-of-an-older-store-with-this-name" }] },
                    "data": { "token": "c2VjcmV0LXRva2VuLTAxMjM0NTY3" } }),
        ),
    ] {
        let h = Harness::new();
        let plural = if path.contains("/services/") {
            "services"
        } else {
            "secrets"
        };
        h.server.put(plural, object.clone());
        h.create_and_apply(NAME, json!({})).await;

        let store = h.store(NAME);
        assert_eq!(
            store.status.as_ref().unwrap().phase,
            Some(Phase::Degraded),
            "{path}"
        );
        let (status, reason) = condition(&store, "Degraded");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "ObjectNotOwned")
        );
        assert!(
            h.object_writes().is_empty(),
            "{path}: {:?}",
            h.object_writes()
        );
        let name = object["metadata"]["name"].as_str().unwrap();
        assert!(
            warnings(&h).iter().any(|note| note.contains(name)),
            "a Warning event names {name}: {:?}",
            warnings(&h)
        );
        // Untouched, content and all.
        let now = h.server.get(&path).unwrap();
        assert_eq!(now["data"], object["data"]);
        assert_eq!(now["spec"]["ports"], object["spec"]["ports"]);
    }
}

#[tokio::test]
async fn the_stores_own_objects_are_reconciled_again() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    // A second pass finds every object owned by this store.
    h.reconcile(NAME).await.unwrap();
    let (status, reason) = condition(&h.store(NAME), "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AsExpected"));
}

#[tokio::test]
async fn a_referenced_secret_without_the_opt_in_label_is_not_mounted() {
    let h = Harness::new();
    h.add_labelled_secret("db-admin", &[("token", "0123456789abcdef0123")], json!({}));
    h.create_and_apply(NAME, json!({ "auth": { "existingSecret": "db-admin" } }))
        .await;
    let store = h.store(NAME);
    assert_eq!(condition(&store, "Degraded").1, "SecretNotOptedIn");
    assert!(h.object_writes().is_empty(), "{:?}", h.object_writes());

    // Labelled for another store: still refused.
    h.add_labelled_secret(
        "db-admin",
        &[("token", "0123456789abcdef0123")],
        json!({ "drasi.io/state-store-access": "billing" }),
    );
    h.reconcile(NAME).await.unwrap();
    assert_eq!(condition(&h.store(NAME), "Degraded").1, "SecretNotOptedIn");
    assert!(h.object_writes().is_empty());

    h.add_labelled_secret(
        "db-admin",
        &[("token", "0123456789abcdef0123")],
        json!({ "drasi.io/state-store-access": NAME }),
    );
    h.reconcile(NAME).await.unwrap();
    assert_eq!(condition(&h.store(NAME), "Degraded").1, "AsExpected");
    assert!(h.server.get(&sts_path(NAME)).is_some());
}

#[tokio::test]
async fn an_image_outside_the_allow_list_is_not_run() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "image": "docker.io/attacker/miner:latest" }))
        .await;
    let store = h.store(NAME);
    let degraded = condition_of(&store, "Degraded");
    assert_eq!(degraded.reason, "ImageNotAllowed");
    assert!(degraded.message.contains("docker.io/attacker/miner:latest"));
    assert!(h.object_writes().is_empty(), "{:?}", h.object_writes());
    assert!(h.server.get(&sts_path(NAME)).is_none());
}

#[tokio::test]
async fn a_resync_of_an_unchanged_store_writes_nothing() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    h.mark_statefulset_ready(NAME);
    h.reconcile(NAME).await.unwrap();
    assert_eq!(h.store(NAME).status.unwrap().phase, Some(Phase::Ready));

    h.server.clear_requests();
    for _ in 0..3 {
        h.reconcile(NAME).await.unwrap();
    }
    assert!(h.writes().is_empty(), "{:?}", h.writes());

    // An edit by someone else is still taken back.
    h.server.update(&service_path(NAME), |service| {
        service["spec"]["ports"][0]["port"] = json!(9999);
        service["metadata"]["managedFields"] =
            json!([{ "manager": "kubectl-edit", "operation": "Update" }]);
    });
    h.reconcile(NAME).await.unwrap();
    let service = h.server.get(&service_path(NAME)).unwrap();
    assert_eq!(service["spec"]["ports"][0]["port"], json!(7070));
}

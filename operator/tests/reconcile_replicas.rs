//! Replicated stores (`spec.replicas` 3 or 5) reconciled against the
//! SIMULATED API server (`support/fake_api/`): the peer token, peers
//! Service and PodDisruptionBudget are created, kept and removed when not
//! needed, and a replica count change of a running store is refused
//! without changing anything. A new pod template rolls out one replica at
//! a time, followers first, the leader last after it handed leadership
//! over.

// The shared harness serves several test binaries; this one uses only part of it.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use drasi_store_operator::builders::built_replicas;
use drasi_store_operator::crd::Phase;
use drasi_store_protocol::{ClusterInfo, ClusterRole, StepDownResponse};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use support::*;

const NAME: &str = "orders";

fn pdb_path(name: &str) -> String {
    format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{name}")
}

fn statefulset(h: &Harness) -> StatefulSet {
    serde_json::from_value(h.server.get(&sts_path(NAME)).expect("StatefulSet exists")).unwrap()
}

/// The owner reference the operator puts on everything it creates.
fn owned_by_store(h: &Harness) -> Value {
    let uid = h
        .store(NAME)
        .metadata
        .uid
        .expect("the API server set a uid");
    json!([{ "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStore", "name": NAME,
             "uid": uid, "controller": true }])
}

/// What the StatefulSet controller reports once all `replicas` are ready.
fn mark_ready(h: &Harness, replicas: i64) {
    h.server.update(&sts_path(NAME), |sts| {
        let generation = sts["metadata"]["generation"].clone();
        sts["status"] = json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": replicas,
            "currentRevision": format!("{NAME}-rev"),
            "updateRevision": format!("{NAME}-rev"),
            "updatedReplicas": replicas,
        });
    });
}

#[tokio::test]
async fn a_replicated_store_gets_its_peers_service_peer_token_and_disruption_budget() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "replicas": 3 })).await;

    let sts = statefulset(&h);
    assert_eq!(sts.spec.replicas, Some(3));
    assert_eq!(sts.spec.service_name.as_deref(), Some("orders-peers"));
    assert_eq!(built_replicas(&sts), 3);

    let peers = h
        .server
        .get(&service_path("orders-peers"))
        .expect("peers Service");
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(peers["spec"]["ports"][0]["port"], 7071);
    let budget = h.server.get(&pdb_path(NAME)).expect("PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    for object in [&peers, &budget] {
        assert_eq!(object["metadata"]["ownerReferences"], owned_by_store(&h));
    }

    let peer_secret = h
        .server
        .get(&secret_path("orders-peer-token"))
        .expect("peer token Secret");
    let peer_token = secret_value(&peer_secret, "token").unwrap();
    let client_token =
        secret_value(&h.server.get(&secret_path("orders-auth")).unwrap(), "token").unwrap();
    assert_eq!(peer_token.len(), 64, "a generated 256-bit token");
    assert_ne!(peer_token, client_token);
    let url = secret_value(
        &h.server.get(&secret_path("orders-connection")).unwrap(),
        "DRASI_STATE_STORE_URL",
    )
    .unwrap();
    assert_eq!(
        url,
        "http://orders.apps.svc:7070,http://orders-0.orders-peers.apps.svc:7070,\
         http://orders-1.orders-peers.apps.svc:7070,http://orders-2.orders-peers.apps.svc:7070"
    );

    // Ready once every replica is; then a resync rewrites nothing and
    // keeps the generated peer token.
    mark_ready(&h, 3);
    h.reconcile(NAME).await.unwrap();
    let store = h.store(NAME);
    assert_eq!(condition(&store, "Ready").0, "True");
    assert_eq!(
        condition(&store, "Degraded"),
        ("False".into(), "AsExpected".into())
    );
    let writes = h.object_writes().len();
    h.reconcile(NAME).await.unwrap();
    assert_eq!(h.object_writes().len(), writes, "a resync wrote objects");
    let again = h.server.get(&secret_path("orders-peer-token")).unwrap();
    assert_eq!(secret_value(&again, "token").unwrap(), peer_token);

    assert!(
        h.event_reasons().iter().any(|r| r == "Created"),
        "{:?}",
        h.event_reasons()
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_single_replica_store_has_none_of_them() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    assert_eq!(statefulset(&h).spec.replicas, Some(1));
    assert!(h.server.get(&service_path("orders-peers")).is_none());
    assert!(h.server.get(&pdb_path(NAME)).is_none());
    assert!(h.server.get(&secret_path("orders-peer-token")).is_none());
    // Nothing is deleted either: there was nothing to delete.
    assert!(
        h.writes().iter().all(|r| r.method != "DELETE"),
        "{:?}",
        h.writes()
    );
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn changing_replicas_of_a_running_store_is_refused_and_changes_nothing() {
    for (from, to) in [(1, 3), (3, 5), (5, 3), (3, 1)] {
        let h = Harness::new();
        h.create_and_apply(NAME, json!({ "replicas": from })).await;
        let before_sts = h.server.get(&sts_path(NAME)).unwrap();
        let before_writes = h.object_writes().len();

        h.edit_spec(NAME, |spec| spec["replicas"] = json!(to));
        h.reconcile(NAME).await.unwrap();

        assert_eq!(
            h.object_writes().len(),
            before_writes,
            "{from} -> {to}: objects were written: {:?}",
            &h.object_writes()[before_writes..]
        );
        assert_eq!(h.server.get(&sts_path(NAME)).unwrap(), before_sts);
        let store = h.store(NAME);
        let degraded = condition_of(&store, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ReplicasChangeNotSupported"),
            "{from} -> {to}"
        );
        assert!(
            degraded
                .message
                .starts_with("changing replicas of a running store is not supported yet: "),
            "{}",
            degraded.message
        );
        assert!(
            degraded.message.contains(&format!(
                "runs a group of {from} replica(s) and spec.replicas asks for {to}"
            )),
            "{}",
            degraded.message
        );
        // The peer objects of a replicated store stay as they were.
        assert_eq!(
            h.server.get(&pdb_path(NAME)).is_some(),
            from > 1,
            "{from} -> {to}"
        );

        // Setting it back heals the store, still without touching the
        // StatefulSet.
        h.edit_spec(NAME, |spec| spec["replicas"] = json!(from));
        h.reconcile(NAME).await.unwrap();
        let store = h.store(NAME);
        assert_eq!(
            condition(&store, "Degraded"),
            ("False".into(), "AsExpected".into())
        );
        assert_eq!(
            h.server.get(&sts_path(NAME)).unwrap()["spec"],
            before_sts["spec"]
        );
        h.assert_rbac_covers_every_request();
    }
}

#[tokio::test]
async fn a_replicated_statefulset_scaled_by_hand_is_set_back_not_refused() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "replicas": 3 })).await;
    // `kubectl scale` changes spec.replicas through the scale subresource
    // (the applied-hash annotation stays), not the peers the pods were
    // built with.
    h.server.update(&sts_path(NAME), |sts| {
        sts["spec"]["replicas"] = json!(4);
        let generation = sts["metadata"]["generation"].as_i64().unwrap();
        sts["metadata"]["generation"] = json!(generation + 1);
    });
    h.reconcile(NAME).await.unwrap();
    assert_eq!(statefulset(&h).spec.replicas, Some(3));
    assert_eq!(
        condition(&h.store(NAME), "Degraded"),
        ("False".into(), "AsExpected".into())
    );
}

#[tokio::test]
async fn leftover_peer_objects_of_a_single_replica_store_are_deleted() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "replicas": 3 })).await;
    assert!(h.server.get(&pdb_path(NAME)).is_some());
    // The StatefulSet is deleted by hand and the store asks for one
    // replica: the StatefulSet is re-created for one, and what only a
    // group needs goes.
    h.server.delete(&sts_path(NAME));
    h.edit_spec(NAME, |spec| spec["replicas"] = json!(1));
    h.reconcile(NAME).await.unwrap();

    assert_eq!(statefulset(&h).spec.replicas, Some(1));
    assert_eq!(
        statefulset(&h).spec.service_name.as_deref(),
        Some("orders-headless")
    );
    assert!(h.server.get(&service_path("orders-peers")).is_none());
    assert!(h.server.get(&pdb_path(NAME)).is_none());
    let deleted: Vec<String> = h
        .writes()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deleted, [service_path("orders-peers"), pdb_path(NAME)]);
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn someone_elses_disruption_budget_or_peers_service_is_never_taken_over() {
    for (plural, path, object) in [
        (
            "poddisruptionbudgets",
            pdb_path(NAME),
            json!({ "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": { "name": NAME, "namespace": NS },
                    "spec": { "minAvailable": 0 } }),
        ),
        (
            "services",
            service_path("orders-peers"),
            json!({ "apiVersion": "v1", "kind": "Service",
                    "metadata": { "name": "orders-peers", "namespace": NS },
                    "spec": { "ports": [{ "port": 80 }] } }),
        ),
    ] {
        let h = Harness::new();
        h.server.put(plural, object);
        let before = h.server.get(&path).unwrap();
        h.create_and_apply(NAME, json!({ "replicas": 3 })).await;
        assert_eq!(h.server.get(&path).unwrap(), before, "{path} was changed");
        assert!(
            h.server.get(&sts_path(NAME)).is_none(),
            "nothing is created"
        );
        let store = h.store(NAME);
        let degraded = condition_of(&store, "Degraded");
        assert_eq!(degraded.reason, "ObjectNotOwned", "{path}");
        assert!(degraded.message.contains(NAME), "{}", degraded.message);

        // Someone else's object under that name is none of a single
        // replica store's business: it is neither used nor deleted.
        let h = Harness::new();
        h.server
            .put(plural, serde_json::from_value(before.clone()).unwrap());
        h.create_and_apply(NAME, json!({})).await;
        assert_eq!(h.server.get(&path).unwrap(), before);
        assert_eq!(
            condition(&h.store(NAME), "Degraded"),
            ("False".into(), "AsExpected".into())
        );
    }
}

/// What replica `id` of a healthy group led by replica 0 answers.
fn cluster_info(id: u64, term: u64, applied: u64, lag: &[(u64, u64)]) -> ClusterInfo {
    ClusterInfo {
        node_id: id,
        role: if id == 0 {
            ClusterRole::Leader
        } else {
            ClusterRole::Follower
        },
        leader_id: Some(0),
        term,
        commit_index: 100,
        applied_index: applied,
        members: Vec::new(),
        lag: lag.iter().copied().collect(),
    }
}

#[tokio::test]
async fn replication_status_comes_from_the_probe_and_costs_no_write_when_unchanged() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "replicas": 3 })).await;
    mark_ready(&h, 3);
    h.probe.set(vec![
        Ok(cluster_info(0, 4, 100, &[(1, 0), (2, 2)])),
        Ok(cluster_info(1, 4, 100, &[])),
        Ok(cluster_info(2, 4, 98, &[])),
    ]);
    let action = h.reconcile(NAME).await.unwrap();
    // Re-probed every 30 s, although the store is Ready.
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    // Each replica through the peers Service, with the client token.
    let call = h.probe.calls().pop().expect("the replicas were probed");
    let urls: Vec<&str> = call
        .members
        .iter()
        .map(|(_, _, url)| url.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "http://orders-0.orders-peers.apps.svc:7070",
            "http://orders-1.orders-peers.apps.svc:7070",
            "http://orders-2.orders-peers.apps.svc:7070"
        ]
    );
    let client_token = secret_value(
        &h.server.get(&secret_path("orders-connection")).unwrap(),
        "DRASI_STATE_STORE_TOKEN",
    )
    .unwrap();
    assert_eq!(call.token, client_token);
    assert_eq!(call.ca_cert_pem, None);

    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "ReplicationHealthy"),
        ("True".into(), "LeaderElected".into())
    );
    assert_eq!(condition(&store, "Ready").0, "True");
    let replication = serde_json::to_value(&store.status.as_ref().unwrap().replication).unwrap();
    assert_eq!(replication["leader"], "orders-0");
    assert_eq!(replication["term"], 4);
    assert_eq!(replication["commitIndex"], 100);
    assert_eq!(
        replication["members"][2],
        json!({ "name": "orders-2", "nodeId": 2, "role": "Follower", "appliedIndex": 98,
                "lag": 2, "reachable": true })
    );
    assert!(replication["observedAt"].is_string());

    // The indexes moved on, nothing else: a resync writes nothing.
    h.probe.set(vec![
        Ok(cluster_info(0, 4, 100, &[(1, 0), (2, 0)])),
        Ok(cluster_info(1, 4, 100, &[])),
        Ok(cluster_info(2, 4, 100, &[])),
    ]);
    let writes = h.writes().len();
    h.reconcile(NAME).await.unwrap();
    assert_eq!(h.writes().len(), writes, "{:?}", &h.writes()[writes..]);

    // Replica 2 stops answering: reported, but the store stays Ready.
    h.probe.set(vec![
        Ok(cluster_info(0, 4, 100, &[(1, 0), (2, 7)])),
        Ok(cluster_info(1, 4, 100, &[])),
    ]);
    h.reconcile(NAME).await.unwrap();
    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "ReplicationHealthy"),
        ("False".into(), "ReplicaUnreachable".into())
    );
    assert!(
        condition_of(&store, "ReplicationHealthy")
            .message
            .contains("orders-2 (simulated: no pod)")
    );
    assert_eq!(condition(&store, "Ready").0, "True");
    assert_eq!(store.status.as_ref().unwrap().phase, Some(Phase::Ready));
    let member = &store
        .status
        .as_ref()
        .unwrap()
        .replication
        .as_ref()
        .unwrap()
        .members[2];
    assert!(!member.reachable);
    assert_eq!(member.lag, Some(7));
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_single_replica_store_is_not_probed_and_has_no_replication_status() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    h.mark_statefulset_ready(NAME);
    let action = h.reconcile(NAME).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(h.probe.calls().is_empty());
    let store = h.store(NAME);
    assert_eq!(store.status.as_ref().unwrap().replication, None);
    assert!(
        store
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "ReplicationHealthy")
    );
}

fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{name}")
}

/// A replica pod as the StatefulSet controller creates it from template
/// `revision`, and as the kubelet reports it.
fn put_pod(h: &Harness, ordinal: i64, revision: &str, ready: bool) {
    h.server.put(
        "pods",
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("{NAME}-{ordinal}"),
                "namespace": NS,
                "labels": {
                    "app.kubernetes.io/name": "drasi-state-store",
                    "app.kubernetes.io/instance": NAME,
                    "app.kubernetes.io/component": "store-server",
                    "controller-revision-hash": revision,
                    "apps.kubernetes.io/pod-index": ordinal.to_string(),
                },
            },
            "status": { "conditions": [
                { "type": "Ready", "status": if ready { "True" } else { "False" } },
            ] },
        }),
    );
}

/// What the StatefulSet controller reports mid-rollout: `updated` of 3
/// pods run `rev-2`.
fn mark_rolling(h: &Harness, updated: i64, ready: i64) {
    h.server.update(&sts_path(NAME), |sts| {
        let generation = sts["metadata"]["generation"].clone();
        sts["status"] = json!({
            "observedGeneration": generation,
            "replicas": 3,
            "readyReplicas": ready,
            "currentRevision": "orders-rev",
            "updateRevision": "rev-2",
            "updatedReplicas": updated,
        });
    });
}

/// Every replica answers; `leader` leads.
fn led_by(h: &Harness, leader: u64) {
    h.probe.set(
        (0..3)
            .map(|id| {
                Ok(ClusterInfo {
                    role: if id == leader {
                        ClusterRole::Leader
                    } else {
                        ClusterRole::Follower
                    },
                    leader_id: Some(leader),
                    ..cluster_info(id, 4, 100, &[])
                })
            })
            .collect(),
    );
}

/// How often the pods were listed.
fn pod_lists(h: &Harness) -> usize {
    h.server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/pods"))
        .count()
}

fn pod_deletes(h: &Harness) -> Vec<String> {
    h.server
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/pods/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_new_template_rolls_out_followers_first_and_the_leader_after_a_hand_over() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({ "replicas": 3 })).await;
    let sts = statefulset(&h);
    assert_eq!(
        sts.spec.update_strategy.and_then(|s| s.type_).as_deref(),
        Some("OnDelete"),
        "the operator, not the StatefulSet controller, restarts a replicated store's pods"
    );
    for ordinal in 0..3 {
        put_pod(&h, ordinal, "orders-rev", true);
    }
    mark_ready(&h, 3);
    led_by(&h, 1);
    let lists = pod_lists(&h);
    h.reconcile(NAME).await.unwrap();
    assert!(pod_deletes(&h).is_empty(), "nothing to roll out yet");
    assert_eq!(
        pod_lists(&h),
        lists,
        "every replica updated: the pods are not even listed"
    );

    // A new template: the StatefulSet controller moves updateRevision on.
    h.edit_spec(NAME, |spec| {
        spec["pod"] = json!({ "annotations": { "rollout": "2" } })
    });
    h.reconcile(NAME).await.unwrap();
    mark_rolling(&h, 0, 3);
    h.reconcile(NAME).await.unwrap();
    // The highest-ordinal follower first (the StatefulSet controller would
    // have started with the leader's neighbour by ordinal, leader or not).
    assert_eq!(pod_deletes(&h), ["orders-2"]);
    assert!(h.server.get(&pod_path("orders-2")).is_none());
    assert!(h.event_reasons().contains(&"ReplicaRestarted".to_owned()));
    let store = h.store(NAME);
    assert_eq!(
        condition(&store, "Progressing"),
        ("True".into(), "RollingOut".into())
    );
    let message = &condition_of(&store, "Progressing").message;
    assert!(
        message.contains("restarting follower orders-2"),
        "{message}"
    );

    // Its replacement is not ready yet (catching up): nothing else goes.
    h.reconcile(NAME).await.unwrap();
    assert_eq!(pod_deletes(&h), ["orders-2"], "waits for the missing pod");
    put_pod(&h, 2, "rev-2", false);
    mark_rolling(&h, 1, 2);
    h.reconcile(NAME).await.unwrap();
    assert_eq!(
        pod_deletes(&h),
        ["orders-2"],
        "waits for the new pod to be ready"
    );
    let store = h.store(NAME);
    let message = &condition_of(&store, "Progressing").message;
    assert!(message.contains("orders-2 is not ready"), "{message}");

    // Ready, but a replica stopped answering: still waits.
    put_pod(&h, 2, "rev-2", true);
    mark_rolling(&h, 1, 3);
    let mut answers: Vec<_> = (0..3u64)
        .map(|id| {
            Ok(ClusterInfo {
                leader_id: Some(1),
                ..cluster_info(id, 4, 100, &[])
            })
        })
        .collect();
    answers[0] = Err("no answer within 2 s".to_owned());
    h.probe.set(answers);
    h.reconcile(NAME).await.unwrap();
    assert_eq!(
        pod_deletes(&h),
        ["orders-2"],
        "waits for replication to be healthy"
    );

    // Healthy again: the other follower.
    led_by(&h, 1);
    h.reconcile(NAME).await.unwrap();
    assert_eq!(pod_deletes(&h), ["orders-2", "orders-0"]);
    put_pod(&h, 0, "rev-2", true);
    mark_rolling(&h, 2, 3);

    // Only the leader is left. A refused hand-over restarts nothing.
    h.probe
        .answer_step_down(Err("no other voter caught up".to_owned()));
    h.reconcile(NAME).await.unwrap();
    assert_eq!(h.probe.step_down_calls(), [1]);
    assert_eq!(pod_deletes(&h), ["orders-2", "orders-0"]);
    assert!(
        h.event_reasons()
            .contains(&"LeadershipHandOverFailed".to_owned())
    );

    // The next pass asks again; this time it hands over, then goes.
    h.probe.answer_step_down(Ok(StepDownResponse {
        stepped_down: true,
        leader_id: Some(2),
        term: 5,
        took_ms: 120,
    }));
    h.reconcile(NAME).await.unwrap();
    assert_eq!(h.probe.step_down_calls(), [1, 1]);
    assert_eq!(pod_deletes(&h), ["orders-2", "orders-0", "orders-1"]);
    assert!(
        h.event_reasons()
            .contains(&"LeadershipHandedOver".to_owned())
    );

    // Done: every pod runs rev-2.
    put_pod(&h, 1, "rev-2", true);
    h.server.update(&sts_path(NAME), |sts| {
        sts["status"]["updatedReplicas"] = json!(3);
        sts["status"]["currentRevision"] = json!("rev-2");
    });
    led_by(&h, 2);
    let lists = pod_lists(&h);
    h.reconcile(NAME).await.unwrap();
    assert_eq!(pod_lists(&h), lists, "rolled out: no more pod lists");
    assert_eq!(pod_deletes(&h).len(), 3);
    assert_eq!(h.probe.step_down_calls().len(), 2);
    let store = h.store(NAME);
    assert_eq!(store.status.unwrap().phase, Some(Phase::Ready));
    h.assert_rbac_covers_every_request();
}

#[tokio::test]
async fn a_single_replica_store_keeps_the_statefulset_rolling_update() {
    let h = Harness::new();
    h.create_and_apply(NAME, json!({})).await;
    assert_eq!(statefulset(&h).spec.update_strategy, None);
}

//! The pure builders: labels, owner references, Secrets, Services, the
//! StatefulSet, the config hash, and YAML snapshots of whole object sets.

use std::collections::BTreeMap;
use std::path::Path;

use drasi_store_operator::builders::{
    self, BuildContext, DesiredObjects, ImagePolicy, RESTORE_CONTAINER, RESTORE_SOURCE_DIR,
    RESTORE_SOURCE_VOLUME, ResolvedInputs, built_replicas, client_urls, config_hash,
    container_security_context, desired_objects, endpoint, pod_security_context,
};
use drasi_store_operator::controller::restore;
use drasi_store_operator::crd::{
    AntiAffinity, DrasiStateStore, Durability, ObjectStoreAccess, PodSettings, Replicas,
    RestoreSpec, RestoredFrom,
};
use drasi_store_operator::labels::{self, CONFIG_HASH_ANNOTATION};
use drasi_store_operator::validated::{Invalid, validate};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A named edit of a store, for the hash tests.
type Change = Box<dyn Fn(&mut DrasiStateStore)>;

const UID: &str = "5d3c2a1b-0000-4000-8000-000000000001";
const TOKEN: &str = "test-token-0123456789abcdef";
const CA: &str = "-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----\n";

/// Builders do not check images (`validate` does): any image is allowed here.
fn ctx() -> BuildContext {
    BuildContext {
        allowed_images: ImagePolicy::new(["*"]),
        ..BuildContext::new("ghcr.io/drasi-project/drasi-store-server:0.1.0")
    }
}

/// A sample from `examples/`, as the apiserver would hand it to the
/// reconciler: with a uid (and the `default` namespace when it has none).
fn example(file: &str) -> DrasiStateStore {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut store: DrasiStateStore = serde_yaml::from_str(&text).unwrap();
    store.metadata.uid = Some(UID.to_owned());
    store
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    store
}

fn inputs(store: &DrasiStateStore) -> ResolvedInputs {
    ResolvedInputs {
        token: TOKEN.to_owned(),
        ca_cert_pem: store.spec.tls.as_ref().map(|_| CA.to_owned()),
    }
}

fn build(store: &DrasiStateStore) -> DesiredObjects {
    desired_objects(store, &ctx(), &inputs(store)).unwrap()
}

fn template(store: &DrasiStateStore) -> PodTemplateSpec {
    build(store).statefulset.spec.template
}

fn container(objects: &DesiredObjects) -> Container {
    let pod = objects.statefulset.spec.template.spec.clone().unwrap();
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].clone()
}

fn hash(store: &DrasiStateStore) -> String {
    template(store).metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
}

fn secret_text(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

#[test]
fn snapshots_of_every_object() {
    for sample in ["minimal", "full", "tls", "existing-secret", "hardened"] {
        let store = example(&format!("{sample}.yaml"));
        insta::assert_yaml_snapshot!(sample, build(&store).all());
    }
    // Three replicas: peers, node ids, the disruption budget, anti-affinity.
    insta::assert_yaml_snapshot!("replicated", build(&example("replicated.yaml")).all());
    insta::assert_yaml_snapshot!(
        "replicated-preferred-tls",
        build(&replicated(example("tls.yaml"), 3)).all()
    );
}

#[test]
fn every_object_has_labels_namespace_and_controller_owner() {
    for sample in [
        "minimal.yaml",
        "full.yaml",
        "tls.yaml",
        "existing-secret.yaml",
        "hardened.yaml",
        "replicated.yaml",
    ] {
        let store = example(sample);
        let name = store.metadata.name.clone().unwrap();
        let namespace = store.metadata.namespace.clone().unwrap();
        let objects = build(&store).all();
        assert!(objects.len() >= 4);
        for object in objects {
            let meta = &object["metadata"];
            let what = format!("{sample}: {} {}", object["kind"], meta["name"]);
            assert_eq!(meta["namespace"], namespace.as_str(), "{what}");
            let expected = serde_json::to_value(labels::labels(&name)).unwrap();
            assert_eq!(meta["labels"], expected, "{what}");
            let owners = meta["ownerReferences"].as_array().expect(&what);
            assert_eq!(owners.len(), 1, "{what}");
            assert_eq!(owners[0]["uid"], UID, "{what}");
            assert_eq!(owners[0]["kind"], "DrasiStateStore", "{what}");
            assert_eq!(owners[0]["apiVersion"], "drasi.io/v1alpha1", "{what}");
            assert_eq!(owners[0]["name"], name.as_str(), "{what}");
            assert_eq!(owners[0]["controller"], true, "{what}");
        }
    }
}

#[test]
fn without_uid_there_are_no_owner_references() {
    let mut store = example("minimal.yaml");
    store.metadata.uid = None;
    for object in build(&store).all() {
        assert!(object["metadata"].get("ownerReferences").is_none());
    }
}

#[test]
fn objects_are_named_and_ordered_for_apply() {
    let store = example("minimal.yaml");
    let names: Vec<(String, String)> = build(&store)
        .all()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("Secret", "orders-state-auth"),
        ("Secret", "orders-state-connection"),
        ("Service", "orders-state-headless"),
        ("Service", "orders-state"),
        ("StatefulSet", "orders-state"),
    ];
    assert_eq!(
        names,
        expected
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn connection_secret_holds_exactly_the_client_env_vars() {
    let plain = build(&example("minimal.yaml"));
    let data = secret_text(&plain.connection_secret);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["DRASI_STATE_STORE_TOKEN", "DRASI_STATE_STORE_URL"]
    );
    assert_eq!(
        data["DRASI_STATE_STORE_URL"],
        "http://orders-state.default.svc:7070"
    );
    assert_eq!(data["DRASI_STATE_STORE_TOKEN"], TOKEN);

    let tls = build(&example("tls.yaml"));
    let data = secret_text(&tls.connection_secret);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        [
            "DRASI_STATE_STORE_CA_CERT",
            "DRASI_STATE_STORE_TOKEN",
            "DRASI_STATE_STORE_URL"
        ]
    );
    assert_eq!(
        data["DRASI_STATE_STORE_URL"],
        "https://orders-state.drasi.svc:7070"
    );
    assert_eq!(data["DRASI_STATE_STORE_CA_CERT"], CA);
    assert_eq!(
        endpoint(&example("tls.yaml")),
        data["DRASI_STATE_STORE_URL"]
    );
}

#[test]
fn generated_auth_secret_holds_the_token() {
    let objects = build(&example("minimal.yaml"));
    let auth = objects.auth_secret.expect("generated auth Secret");
    assert_eq!(auth.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret_text(&auth),
        BTreeMap::from([("token".to_owned(), TOKEN.to_owned())])
    );
}

#[test]
fn existing_secret_is_mounted_and_its_first_token_handed_out() {
    let store = example("existing-secret.yaml");
    let inputs = ResolvedInputs {
        token: "\n  first-token \nsecond-token\n".to_owned(),
        ca_cert_pem: None,
    };
    let objects = desired_objects(&store, &ctx(), &inputs).unwrap();
    assert!(objects.auth_secret.is_none());
    assert_eq!(
        secret_text(&objects.connection_secret)["DRASI_STATE_STORE_TOKEN"],
        "first-token"
    );
    let pod = objects.statefulset.spec.template.spec.unwrap();
    let auth = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "auth")
        .unwrap();
    let secret = auth.secret.unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("orders-state-tokens"));
    let items = secret.items.unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("token", "token")
    );
}

#[test]
fn validation_problems_name_the_secret_and_never_echo_it() {
    let store = example("existing-secret.yaml");
    let blank = ResolvedInputs {
        token: " \n\n".to_owned(),
        ca_cert_pem: None,
    };
    let err = desired_objects(&store, &ctx(), &blank).unwrap_err();
    assert_eq!(
        err,
        Invalid::AuthSecretInvalid {
            secret: "orders-state-tokens".to_owned()
        }
    );

    let tls = example("tls.yaml");
    let no_ca = ResolvedInputs {
        token: TOKEN.to_owned(),
        ca_cert_pem: None,
    };
    let err = desired_objects(&tls, &ctx(), &no_ca).unwrap_err();
    assert!(
        matches!(err, Invalid::TlsSecretMissing { ref secret, .. } if secret == "orders-state-tls"),
        "{err:?}"
    );

    let mut invalid = example("minimal.yaml");
    invalid.spec.storage.size = Quantity("-1Gi".to_owned());
    let err = desired_objects(&invalid, &ctx(), &inputs(&invalid)).unwrap_err();
    assert!(matches!(err, Invalid::Spec(_)), "{err:?}");
    assert!(err.to_string().contains("spec.storage.size"), "{err}");
    // The error never echoes the token.
    assert!(!err.to_string().contains(TOKEN));
}

/// The exact command lines are pinned by the snapshots; these are the
/// rules behind them, checked on every sample.
#[test]
fn server_args_follow_the_spec() {
    for sample in ["minimal", "full", "tls", "existing-secret", "hardened"] {
        let store = example(&format!("{sample}.yaml"));
        let args = container(&build(&store)).args.unwrap();
        let value = |flag: &str| {
            let at: Vec<usize> = (0..args.len()).filter(|&i| args[i] == flag).collect();
            assert!(at.len() <= 1, "{sample}: {flag} given twice: {args:?}");
            at.first().map(|&i| args[i + 1].as_str())
        };
        assert!(
            args.iter().step_by(2).all(|a| a.starts_with("--")),
            "{sample}: every flag has one value: {args:?}"
        );
        assert_eq!(value("--data-dir"), Some("/data"), "{sample}");
        assert_eq!(
            value("--durability"),
            Some(store.spec.durability.as_ref()),
            "{sample}"
        );
        assert!(value("--auth-token-file").is_some(), "{sample}");
        let tls = store.spec.tls.is_some();
        assert_eq!(value("--tls-cert-file").is_some(), tls, "{sample}");
        assert_eq!(value("--tls-key-file").is_some(), tls, "{sample}");
        let limits = store.spec.limits.clone().unwrap_or_default();
        assert_eq!(
            value("--max-key-bytes"),
            limits.max_key_bytes.map(|v| v.to_string()).as_deref(),
            "{sample}"
        );
        assert_eq!(
            value("--max-value-bytes"),
            limits.max_value_bytes.map(|v| v.to_string()).as_deref(),
            "{sample}"
        );
    }
}

/// Mounts and probes as rules over every sample (the snapshots pin the
/// exact lists).
#[test]
fn probes_ports_and_mounts() {
    for sample in ["minimal", "full", "tls", "existing-secret", "hardened"] {
        let store = example(&format!("{sample}.yaml"));
        let objects = build(&store);
        let pod = objects.statefulset.spec.template.spec.clone().unwrap();
        let main = container(&objects);
        let scheme = if store.spec.tls.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        };
        for probe in [
            main.readiness_probe.clone(),
            main.liveness_probe.clone(),
            main.startup_probe.clone(),
        ] {
            let get = probe.unwrap().http_get.unwrap();
            assert_eq!(get.scheme.as_deref(), Some(scheme), "{sample}");
        }
        let startup = main.startup_probe.clone().unwrap();
        assert!(
            startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 600,
            "{sample}: startup probe must allow a long redb repair"
        );
        // Every mount has a volume (or the claim template); Secrets are
        // mounted read-only, the data volume writable.
        let volumes = pod.volumes.unwrap();
        for mount in main.volume_mounts.unwrap() {
            match volumes.iter().find(|v| v.name == mount.name) {
                Some(volume) if volume.secret.is_some() => {
                    assert_eq!(mount.read_only, Some(true), "{sample}: {}", mount.name)
                }
                Some(_) => {}
                None => {
                    assert_eq!(mount.name, "data", "{sample}: {} has no volume", mount.name);
                    assert_ne!(mount.read_only, Some(true), "{sample}");
                }
            }
        }
        assert_eq!(
            volumes.iter().any(|v| v.name == "tls"),
            store.spec.tls.is_some(),
            "{sample}"
        );
    }
}

#[test]
fn pod_is_locked_down() {
    let objects = build(&example("minimal.yaml"));
    let pod = objects.statefulset.spec.template.spec.clone().unwrap();
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.run_as_group, Some(65532));
    assert_eq!(psc.fs_group, Some(65532));
    assert_eq!(
        psc.fs_group_change_policy.as_deref(),
        Some("OnRootMismatch")
    );
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    assert!(pod.termination_grace_period_seconds.unwrap() >= 30);
    let csc = container(&objects).security_context.unwrap();
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
}

#[test]
fn statefulset_shape() {
    let store = example("full.yaml");
    let sts = build(&store).statefulset.spec;
    assert_eq!(sts.replicas, Some(1));
    assert_eq!(sts.service_name.as_deref(), Some("orders-state-headless"));
    assert_eq!(
        sts.selector.match_labels.unwrap(),
        labels::selector_labels("orders-state")
    );
    let retention = sts.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    let claims = sts.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let claim = claims[0].spec.clone().unwrap();
    assert_eq!(claim.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        claim.resources.unwrap().requests.unwrap()["storage"],
        Quantity("10Gi".into())
    );
    // User pod labels are added; the operator's labels are kept.
    let pod_labels = sts.template.metadata.unwrap().labels.unwrap();
    assert_eq!(pod_labels["team"], "orders");
    for (k, v) in labels::labels("orders-state") {
        assert_eq!(pod_labels[&k], v);
    }
    let pod = sts.template.spec.unwrap();
    assert_eq!(pod.priority_class_name.as_deref(), Some("drasi-critical"));
    assert_eq!(
        pod.image_pull_secrets.unwrap()[0].name,
        "registry-credentials"
    );
    assert_eq!(pod.tolerations.unwrap().len(), 1);
    assert!(pod.affinity.is_some());

    let deleting = example("existing-secret.yaml");
    let retention = build(&deleting)
        .statefulset
        .spec
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
}

#[test]
fn services() {
    let objects = build(&example("full.yaml"));
    let svc = objects.service.spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        svc.selector.unwrap(),
        labels::selector_labels("orders-state")
    );
    let port = &svc.ports.unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 7070));
    assert_eq!(
        objects.service.metadata.annotations.unwrap()["service.kubernetes.io/topology-mode"],
        "Auto"
    );
    let headless = objects.headless_service.spec.unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    assert!(objects.headless_service.metadata.annotations.is_none());
}

#[test]
fn resources_default_only_when_unset() {
    let defaulted = container(&build(&example("minimal.yaml")))
        .resources
        .unwrap();
    assert_eq!(
        defaulted.requests.unwrap()["memory"],
        Quantity("128Mi".into())
    );
    assert!(!defaulted.limits.as_ref().unwrap().contains_key("cpu"));
    let explicit = container(&build(&example("full.yaml"))).resources.unwrap();
    assert_eq!(explicit.limits.unwrap()["memory"], Quantity("2Gi".into()));
}

#[test]
fn same_store_same_template() {
    let store = example("full.yaml");
    let a = build(&store);
    let b = build(&store);
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a.all()).unwrap(),
        serde_json::to_string(&b.all()).unwrap()
    );
    // Re-reading the CR (another map order in the input) changes nothing.
    assert_eq!(hash(&example("full.yaml")), hash(&store));
}

#[test]
fn hash_changes_with_inputs_that_shape_the_pod() {
    let base = example("minimal.yaml");
    let before = hash(&base);
    let changes: Vec<(&str, Change)> = vec![
        (
            "durability",
            Box::new(|s| s.spec.durability = Durability::Eventual),
        ),
        (
            "limits",
            Box::new(|s| {
                s.spec.limits = Some(drasi_store_operator::crd::LimitsSpec {
                    max_key_bytes: Some(100),
                    max_value_bytes: None,
                })
            }),
        ),
        (
            "resources",
            Box::new(|s| s.spec.resources = example("full.yaml").spec.resources),
        ),
        (
            "image",
            Box::new(|s| s.spec.image = Some("example/other:1".into())),
        ),
        (
            "tls",
            Box::new(|s| s.spec.tls = example("tls.yaml").spec.tls),
        ),
        (
            "auth",
            Box::new(|s| s.spec.auth = example("existing-secret.yaml").spec.auth),
        ),
        (
            "pod",
            Box::new(|s| s.spec.pod = example("full.yaml").spec.pod),
        ),
        (
            "imagePullPolicy",
            Box::new(|s| s.spec.image_pull_policy = example("full.yaml").spec.image_pull_policy),
        ),
    ];
    for (field, change) in changes {
        let mut store = base.clone();
        change(&mut store);
        assert_ne!(hash(&store), before, "changing {field} must roll the pod");
    }
    // The operator-wide default image is an input too, when spec.image is unset.
    let other = BuildContext {
        allowed_images: ImagePolicy::new(["*"]),
        ..BuildContext::new("example/server:2")
    };
    let t = desired_objects(&base, &other, &inputs(&base)).unwrap();
    assert_ne!(
        t.statefulset
            .spec
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION],
        before
    );
}

#[test]
fn fields_that_do_not_shape_the_pod_leave_the_template_alone() {
    let base = example("full.yaml");
    let before = template(&base);
    let changes: Vec<(&str, Change)> = vec![
        ("paused", Box::new(|s| s.spec.paused = true)),
        (
            "service annotations",
            Box::new(|s| {
                s.spec.service.as_mut().unwrap().annotations =
                    Some(BTreeMap::from([("a".into(), "b".into())]))
            }),
        ),
        (
            "storage size",
            Box::new(|s| s.spec.storage.size = Quantity("20Gi".into())),
        ),
        (
            "pvcRetention",
            Box::new(|s| s.spec.pvc_retention = example("existing-secret.yaml").spec.pvc_retention),
        ),
    ];
    for (field, change) in changes {
        let mut store = base.clone();
        change(&mut store);
        assert_eq!(
            template(&store),
            before,
            "changing {field} must not roll the pod"
        );
    }
    // Nor does the token's value: the server re-reads its token file.
    let rotated = ResolvedInputs {
        token: "rotated".into(),
        ca_cert_pem: Some(CA.into()),
    };
    assert_eq!(
        desired_objects(&base, &ctx(), &rotated)
            .unwrap()
            .statefulset
            .spec
            .template,
        before
    );
}

/// The hash of a fixed store must not change between operator versions:
/// a new value here restarts every managed pod on upgrade. If the change is
/// deliberate, bump `SCHEMA` in config_hash.rs, update the value and say so
/// in the release notes.
#[test]
fn hash_is_stable_across_operator_versions() {
    let store = example("minimal.yaml");
    let valid = validate(&store, &ctx(), &inputs(&store).referenced()).unwrap();
    assert_eq!(
        valid.image,
        "ghcr.io/drasi-project/drasi-store-server:0.1.0"
    );
    assert_eq!(valid.token.secret.name(), "orders-state-auth");
    let value = config_hash(&valid);
    assert_eq!(value, hash(&store));
    assert_eq!(value.len(), 64);
    assert_eq!(
        value,
        "5c77509edc6bf619c4c9d5a8a63fb4abeb8b787c5d37e6b95b57ddefea3b3ff1"
    );
}

fn network_policy(store: &DrasiStateStore) -> serde_json::Value {
    serde_json::to_value(build(store).network_policy.expect("a NetworkPolicy")).unwrap()
}

#[test]
fn network_policy_only_when_enabled() {
    assert!(build(&example("minimal.yaml")).network_policy.is_none());
    let mut disabled = example("full.yaml");
    disabled.spec.network_policy.as_mut().unwrap().enabled = false;
    assert!(build(&disabled).network_policy.is_none());
    // Nor does it touch the pod: enabling it rolls nothing.
    assert_eq!(template(&disabled), template(&example("full.yaml")));
}

#[test]
fn network_policy_admits_clients_scrapers_and_peers_only() {
    let store = example("full.yaml");
    let policy = network_policy(&store);
    let spec = &policy["spec"];
    let selector = serde_json::to_value(labels::selector_labels("orders-state")).unwrap();
    assert_eq!(spec["podSelector"]["matchLabels"], selector);
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    assert!(spec.get("egress").is_none());
    let rules = spec["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    let port = |i: usize| {
        let ports = rules[i]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0]["protocol"], "TCP");
        ports[0]["port"].as_i64().unwrap()
    };
    // Clients as listed, on the API port.
    let np = store.spec.network_policy.as_ref().unwrap();
    assert_eq!(
        rules[0]["from"],
        serde_json::to_value(np.clients.as_ref().unwrap()).unwrap()
    );
    assert_eq!(port(0), 7070);
    // Only the store's own pods on the peer port.
    assert_eq!(
        rules[1]["from"],
        serde_json::json!([{ "podSelector": { "matchLabels": selector } }])
    );
    assert_eq!(port(1), 7071);
    // The scrapers on the port that serves /metrics.
    assert_eq!(
        rules[2]["from"],
        serde_json::to_value(np.metrics_scrapers.as_ref().unwrap()).unwrap()
    );
    assert_eq!(port(2), 7070);
}

#[test]
fn network_policy_defaults_to_the_client_label_and_no_scrapers() {
    let mut store = example("hardened.yaml");
    store.spec.network_policy.as_mut().unwrap().metrics_scrapers = None;
    let policy = network_policy(&store);
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "no scraper rule without metricsScrapers");
    assert_eq!(
        rules[0]["from"],
        serde_json::json!([{ "podSelector": { "matchLabels": {
            labels::CLIENT_LABEL: "orders-state"
        } } }])
    );
}

#[test]
fn network_policy_is_applied_before_the_services_and_the_statefulset() {
    let kinds: Vec<String> = build(&example("hardened.yaml"))
        .all()
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "Secret",
            "Secret",
            "NetworkPolicy",
            "Service",
            "Service",
            "StatefulSet"
        ]
    );
}

#[test]
fn empty_network_policy_peers_are_invalid() {
    let mut store = example("full.yaml");
    let np = store.spec.network_policy.as_mut().unwrap();
    np.metrics_scrapers = Some(vec![Default::default()]);
    np.clients = Some(vec![]);
    let err = desired_objects(&store, &ctx(), &inputs(&store)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("spec.networkPolicy.metricsScrapers[0]"),
        "{text}"
    );
    assert!(
        text.contains("spec.networkPolicy.clients: must not be empty"),
        "{text}"
    );
}

#[test]
fn network_policy_admits_the_stores_backup_jobs_when_it_has_destinations() {
    let mut store = example("full.yaml");
    assert!(store.spec.backup.is_none());
    let without = network_policy(&store);
    store.spec.backup = Some(
        serde_json::from_value(serde_json::json!({ "destinations": [
            { "name": "s3", "objectStore": { "bucket": "b", "credentialsSecret": "creds" } }] }))
        .unwrap(),
    );
    let policy = network_policy(&store);
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let before = without["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), before.len() + 1);
    let backup_rule = rules
        .iter()
        .find(|r| r["from"][0]["podSelector"]["matchLabels"][labels::COMPONENT_LABEL] == "backup")
        .expect("an ingress rule for backup pods");
    assert_eq!(backup_rule["ports"][0]["port"], 7070);
    // The rule selects exactly what the backup Job's pods carry.
    let selected: BTreeMap<String, String> =
        serde_json::from_value(backup_rule["from"][0]["podSelector"]["matchLabels"].clone())
            .unwrap();
    let job_labels = drasi_store_operator::backup::job::job_labels("orders-state", "any-backup");
    for (k, v) in &selected {
        assert_eq!(job_labels.get(k), Some(v), "backup pods lack {k}={v}");
    }
    assert_eq!(selected["app.kubernetes.io/instance"], "orders-state");
    // Declaring destinations neither changes nor rolls the store's pod, and
    // the pod never sees the bucket credentials.
    assert_eq!(template(&store), template(&example("full.yaml")));
    let sts = serde_json::to_string(&build(&store).statefulset).unwrap();
    assert!(!sts.contains("creds") && !sts.contains("AWS_"));
}

// ---------------------------------------------------------------------------
// Restore: the init container of spec.restore.
// ---------------------------------------------------------------------------

/// `store` built as the reconciler builds it once `spec.restore` resolved
/// to `from`.
fn build_restoring(store: &DrasiStateStore, from: RestoredFrom) -> DesiredObjects {
    let mut referenced = inputs(store).referenced();
    referenced.restore = Some(from);
    builders::build(&validate(store, &ctx(), &referenced).unwrap())
}

/// What `examples/restore.yaml`'s backup (`examples/backup/`) resolves to.
fn from_s3_backup() -> RestoredFrom {
    RestoredFrom {
        backup: Some("orders-state-manual-1".into()),
        location: "s3://drasi-backups/stores/default/orders-state/orders-state-manual-1.snap"
            .into(),
        object_store: Some(ObjectStoreAccess {
            endpoint: Some("http://minio.minio.svc:9000".into()),
            region: Some("us-east-1".into()),
            credentials_secret: Some("orders-backup-s3".into()),
        }),
    }
}

fn volume_source_store() -> DrasiStateStore {
    let mut store = example("minimal.yaml");
    store.spec.restore = Some(RestoreSpec {
        source: Some("pvc://drasi-backups/stores/default/orders-state/b1.snap".into()),
        ..RestoreSpec::default()
    });
    store
}

fn from_volume_source() -> RestoredFrom {
    restore::resolve(&volume_source_store(), None)
        .unwrap()
        .unwrap()
}

fn pod(objects: &DesiredObjects) -> PodSpec {
    objects.statefulset.spec.template.spec.clone().unwrap()
}

fn init_container(objects: &DesiredObjects) -> Container {
    let init = pod(objects).init_containers.expect("an init container");
    assert_eq!(init.len(), 1);
    init[0].clone()
}

#[test]
fn snapshots_of_restoring_stores() {
    insta::assert_yaml_snapshot!(
        "restore-from-backup",
        build_restoring(&example("restore.yaml"), from_s3_backup()).all()
    );
    insta::assert_yaml_snapshot!(
        "restore-from-volume",
        build_restoring(&volume_source_store(), from_volume_source()).all()
    );
}

#[test]
fn stores_without_restore_have_no_init_container() {
    for sample in ["minimal.yaml", "full.yaml", "hardened.yaml"] {
        assert_eq!(pod(&build(&example(sample))).init_containers, None);
    }
    // A resolved restore is ignored without spec.restore: only a store that
    // asks for one is restored into.
    let plain = example("minimal.yaml");
    assert_eq!(
        pod(&build_restoring(&plain, from_s3_backup())).init_containers,
        None
    );
}

#[test]
fn the_restore_init_container_runs_the_stores_image_into_the_data_volume() {
    let objects = build_restoring(&example("restore.yaml"), from_s3_backup());
    let server = container(&objects);
    let init = init_container(&objects);
    assert_eq!(init.name, RESTORE_CONTAINER);
    assert_eq!(init.image, server.image);
    assert_eq!(init.image_pull_policy, server.image_pull_policy);
    assert_eq!(init.resources, server.resources);
    assert_eq!(
        init.args.clone().unwrap(),
        [
            "restore",
            "--input",
            "s3://drasi-backups/stores/default/orders-state/orders-state-manual-1.snap",
            "--data-dir",
            "/data",
            "--if-empty",
        ]
    );
    let data_mount = |c: &Container| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "data")
            .map(|m| (m.mount_path.clone(), m.read_only))
    };
    assert_eq!(data_mount(&init), data_mount(&server));
    // The same lock-down as the server.
    assert_eq!(init.security_context, Some(container_security_context()));
    assert_eq!(pod(&objects).security_context, Some(pod_security_context()));
}

#[test]
fn object_store_credentials_go_to_the_init_container_only_and_are_optional() {
    let objects = build_restoring(&example("restore.yaml"), from_s3_backup());
    let env: BTreeMap<String, EnvVar> = init_container(&objects)
        .env
        .unwrap()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    assert_eq!(
        env["AWS_ENDPOINT_URL"].value.as_deref(),
        Some("http://minio.minio.svc:9000")
    );
    assert_eq!(env["AWS_ALLOW_HTTP"].value.as_deref(), Some("true"));
    assert_eq!(env["AWS_REGION"].value.as_deref(), Some("us-east-1"));
    for key in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        let reference = env[key]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{key} is not a Secret reference"));
        assert_eq!(reference.name, "orders-backup-s3");
        assert_eq!(reference.key, key);
        // A restarted pod whose volume is already restored must start even
        // after the Secret is gone: the init container then reads nothing.
        assert_eq!(reference.optional, Some(true), "{key}");
        assert_eq!(env[key].value, None);
    }
    let server = container(&objects);
    assert_eq!(server.env, None, "the server container gets no credentials");
    assert_eq!(server.env_from, None);
    let yaml = serde_yaml::to_string(&objects.statefulset).unwrap();
    assert_eq!(yaml.matches("orders-backup-s3").count(), 3, "{yaml}");
}

#[test]
fn a_volume_source_is_mounted_read_only_into_the_init_container_only() {
    let objects = build_restoring(&volume_source_store(), from_volume_source());
    let init = init_container(&objects);
    assert_eq!(
        init.args.as_ref().unwrap()[2],
        format!("{RESTORE_SOURCE_DIR}/stores/default/orders-state/b1.snap")
    );
    assert_eq!(init.env, None);
    let mount = init
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == RESTORE_SOURCE_VOLUME)
        .expect("the source claim is mounted");
    assert_eq!(mount.mount_path, RESTORE_SOURCE_DIR);
    assert_eq!(mount.read_only, Some(true));
    let volume = pod(&objects)
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == RESTORE_SOURCE_VOLUME)
        .expect("the source claim volume");
    let claim = volume.persistent_volume_claim.unwrap();
    assert_eq!(claim.claim_name, "drasi-backups");
    assert_eq!(claim.read_only, Some(true));
    assert!(
        container(&objects)
            .volume_mounts
            .iter()
            .flatten()
            .all(|m| m.name != RESTORE_SOURCE_VOLUME),
        "the server never sees the source claim"
    );
}

#[test]
fn a_restoring_template_is_stable_and_keeps_other_stores_hashes() {
    let store = example("restore.yaml");
    let first = build_restoring(&store, from_s3_backup());
    let again = build_restoring(&store, from_s3_backup());
    assert_eq!(first.statefulset, again.statefulset);
    // Without spec.restore the hash is the one every existing store has
    // (see hash_is_stable_across_operator_versions): adding the field did
    // not roll any pod.
    let mut plain = store.clone();
    plain.spec.restore = None;
    let restoring_hash = first
        .statefulset
        .spec
        .template
        .metadata
        .clone()
        .unwrap()
        .annotations
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone();
    assert_ne!(restoring_hash, hash(&plain));
    // A different snapshot is a different pod.
    let other = RestoredFrom {
        location: "s3://drasi-backups/other.snap".into(),
        ..from_s3_backup()
    };
    assert_ne!(
        build_restoring(&store, other).statefulset.spec.template,
        first.statefulset.spec.template
    );
}

// ---------------------------------------------------------------------------
// Replicated stores (`spec.replicas` 3 or 5).
// ---------------------------------------------------------------------------

fn replicated(mut store: DrasiStateStore, replicas: i32) -> DrasiStateStore {
    store.spec.replicas = Replicas(replicas);
    store
}

fn env(container: &Container) -> BTreeMap<String, EnvVar> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect()
}

#[test]
fn a_single_replica_has_no_replication_objects_or_settings() {
    for sample in [
        "minimal.yaml",
        "full.yaml",
        "tls.yaml",
        "existing-secret.yaml",
        "hardened.yaml",
    ] {
        let objects = build(&example(sample));
        assert!(objects.peer_token_secret.is_none(), "{sample}");
        assert!(objects.peers_service.is_none(), "{sample}");
        assert!(objects.pod_disruption_budget.is_none(), "{sample}");
        let c = container(&objects);
        assert!(c.env.is_none(), "{sample}");
        assert_eq!(c.ports.unwrap().len(), 1, "{sample}");
        assert_eq!(objects.statefulset.spec.replicas, Some(1));
        assert_eq!(
            built_replicas(&objects.statefulset),
            1,
            "{sample}: a single server is a group of one"
        );
    }
    // Asking for one replica explicitly changes nothing.
    let implicit = example("full.yaml");
    let explicit = replicated(example("full.yaml"), 1);
    assert_eq!(build(&implicit), build(&explicit));
}

#[test]
fn replicated_objects_are_named_and_ordered_for_apply() {
    let names: Vec<(String, String)> = build(&example("replicated.yaml"))
        .all()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("Secret", "orders-state-auth"),
        ("Secret", "orders-state-peer-token"),
        ("Secret", "orders-state-connection"),
        ("NetworkPolicy", "orders-state"),
        ("Service", "orders-state-headless"),
        ("Service", "orders-state-peers"),
        ("Service", "orders-state"),
        ("PodDisruptionBudget", "orders-state"),
        ("StatefulSet", "orders-state"),
    ];
    assert_eq!(
        names,
        expected
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn replicas_get_node_ids_from_their_ordinal_and_every_peer() {
    for replicas in [3, 5] {
        let objects = build(&replicated(example("minimal.yaml"), replicas));
        let sts = &objects.statefulset.spec;
        assert_eq!(sts.replicas, Some(replicas));
        assert_eq!(sts.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(sts.service_name.as_deref(), Some("orders-state-peers"));
        assert_eq!(built_replicas(&objects.statefulset), replicas);
        let c = container(&objects);
        let env = env(&c);
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            [
                "DRASI_STORE_NODE_ID",
                "DRASI_STORE_PEERS",
                "DRASI_STORE_PEER_LISTEN",
                "DRASI_STORE_PEER_TOKEN_FILE"
            ]
        );
        let node_id = env["DRASI_STORE_NODE_ID"].value_from.clone().unwrap();
        assert_eq!(
            node_id.field_ref.unwrap().field_path,
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        let peers: Vec<String> = (0..replicas)
            .map(|i| format!("{i}=orders-state-{i}.orders-state-peers.default.svc:7071"))
            .collect();
        assert_eq!(
            env["DRASI_STORE_PEERS"].value.as_deref(),
            Some(peers.join(",").as_str())
        );
        assert_eq!(
            env["DRASI_STORE_PEER_LISTEN"].value.as_deref(),
            Some("0.0.0.0:7071")
        );
        let ports = c.ports.clone().unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[1].name.as_deref(), ports[1].container_port),
            (Some("peer"), 7071)
        );
    }
}

#[test]
fn the_peer_token_has_its_own_secret_mounted_read_only() {
    let store = replicated(example("minimal.yaml"), 3);
    let objects = build(&store);
    let secret = objects.peer_token_secret.clone().unwrap();
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some("orders-state-peer-token")
    );
    let peer_token = &secret_text(&secret)["token"];
    assert_ne!(
        peer_token, TOKEN,
        "the client token must never be the peer token"
    );
    // Clients get the client token only.
    let connection = secret_text(&objects.connection_secret);
    assert!(connection.values().all(|v| v != peer_token));

    let c = container(&objects);
    let file = env(&c)["DRASI_STORE_PEER_TOKEN_FILE"]
        .value
        .clone()
        .unwrap();
    let mount = c
        .volume_mounts
        .unwrap()
        .into_iter()
        .find(|m| file.starts_with(&format!("{}/", m.mount_path)))
        .expect("the peer token file is on a mount");
    assert_eq!(mount.read_only, Some(true));
    let volume = pod(&objects)
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let source = volume.secret.unwrap();
    assert_eq!(
        source.secret_name.as_deref(),
        Some("orders-state-peer-token")
    );
    assert_eq!(source.items.unwrap()[0].key, "token");
    assert!(file.ends_with("/token"));
    // The server's own args do not change with replication.
    assert_eq!(
        c.args.unwrap(),
        container(&build(&example("minimal.yaml"))).args.unwrap()
    );
}

#[test]
fn the_peers_service_publishes_the_peer_port_of_unready_pods() {
    let objects = build(&replicated(example("minimal.yaml"), 3));
    let peers = objects.peers_service.unwrap();
    assert_eq!(peers.metadata.name.as_deref(), Some("orders-state-peers"));
    let spec = peers.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(
        spec.selector.unwrap(),
        labels::selector_labels("orders-state")
    );
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("peer"), 7071)
    );
    // The client Services are the single-replica ones.
    let single = build(&example("minimal.yaml"));
    assert_eq!(objects.service, single.service);
    assert_eq!(objects.headless_service, single.headless_service);
}

#[test]
fn one_replica_at_a_time_may_be_disrupted() {
    let budget = build(&replicated(example("minimal.yaml"), 5))
        .pod_disruption_budget
        .unwrap();
    assert_eq!(budget.metadata.name.as_deref(), Some("orders-state"));
    let spec = budget.spec.unwrap();
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert!(spec.min_available.is_none());
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap(),
        labels::selector_labels("orders-state")
    );
}

#[test]
fn replicas_spread_over_nodes_preferred_or_required_keeping_the_users_affinity() {
    let selector = Some(labels::selector_labels("orders-state"));
    // Preferred by default; full.yaml brings its own node affinity.
    let preferred = pod(&build(&replicated(example("full.yaml"), 3)))
        .affinity
        .unwrap();
    assert!(
        preferred.node_affinity.is_some(),
        "the user's affinity is kept"
    );
    let anti = preferred.pod_anti_affinity.unwrap();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    let terms = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0].weight, 100);
    let term = &terms[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert_eq!(term.label_selector.clone().unwrap().match_labels, selector);

    let mut store = replicated(example("full.yaml"), 3);
    store.spec.anti_affinity = AntiAffinity::Required;
    let anti = pod(&build(&store))
        .affinity
        .unwrap()
        .pod_anti_affinity
        .unwrap();
    assert!(
        anti.preferred_during_scheduling_ignored_during_execution
            .is_none()
    );
    let terms = anti
        .required_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0].topology_key, "kubernetes.io/hostname");
    assert_eq!(
        terms[0].label_selector.clone().unwrap().match_labels,
        selector
    );

    // A user's own anti-affinity terms stay, the operator's is added.
    let mut store = replicated(example("minimal.yaml"), 3);
    let user: k8s_openapi::api::core::v1::Affinity = serde_json::from_value(serde_json::json!({
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
              "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "orders-state"}}}}
        ]}
    }))
    .unwrap();
    store.spec.pod = Some(PodSettings {
        affinity: Some(user),
        ..PodSettings::default()
    });
    let terms = pod(&build(&store))
        .affinity
        .unwrap()
        .pod_anti_affinity
        .unwrap()
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(
        terms
            .iter()
            .map(|t| t.pod_affinity_term.topology_key.as_str())
            .collect::<Vec<_>>(),
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    );
    // One replica: the anti-affinity setting is ignored.
    let mut single = example("minimal.yaml");
    single.spec.anti_affinity = AntiAffinity::Required;
    assert!(pod(&build(&single)).affinity.is_none());
}

#[test]
fn consumers_get_the_service_first_then_every_replica() {
    let objects = build(&replicated(example("tls.yaml"), 3));
    let url = secret_text(&objects.connection_secret)["DRASI_STATE_STORE_URL"].clone();
    assert_eq!(
        url,
        "https://orders-state.drasi.svc:7070,\
         https://orders-state-0.orders-state-peers.drasi.svc:7070,\
         https://orders-state-1.orders-state-peers.drasi.svc:7070,\
         https://orders-state-2.orders-state-peers.drasi.svc:7070"
    );
    assert_eq!(
        url.split(',').next(),
        Some(endpoint(&example("tls.yaml")).as_str())
    );
    assert_eq!(
        client_urls(&replicated(example("tls.yaml"), 3)),
        url,
        "the Secret holds exactly client_urls"
    );
}

#[test]
fn the_hash_of_a_replicated_pod_follows_its_anti_affinity_only() {
    let single = hash(&example("minimal.yaml"));
    let three = hash(&replicated(example("minimal.yaml"), 3));
    assert_ne!(single, three);
    assert_ne!(three, hash(&replicated(example("minimal.yaml"), 5)));
    let mut required = replicated(example("minimal.yaml"), 3);
    required.spec.anti_affinity = AntiAffinity::Required;
    assert_ne!(three, hash(&required));
    // With one replica the anti-affinity is not an input.
    let mut single_required = example("minimal.yaml");
    single_required.spec.anti_affinity = AntiAffinity::Required;
    assert_eq!(single, hash(&single_required));
}

#[test]
fn a_changed_replica_count_is_refused_before_anything_is_built() {
    let store = replicated(example("minimal.yaml"), 3);
    let mut referenced = inputs(&store).referenced();
    referenced.existing_replicas = Some(1);
    let err = validate(&store, &ctx(), &referenced).unwrap_err();
    assert_eq!(err.reason().to_string(), "ReplicasChangeNotSupported");
    let message = err.to_string();
    assert!(
        message.starts_with("changing replicas of a running store is not supported yet: "),
        "{message}"
    );
    assert!(message.contains("default/orders-state"), "{message}");
    assert!(message.contains("group of 1 replica(s)"), "{message}");
    assert!(message.contains("asks for 3"), "{message}");
    // The same count is fine.
    referenced.existing_replicas = Some(3);
    assert!(validate(&store, &ctx(), &referenced).is_ok());
    // A group is recognised by what its pods were built with, not by a
    // StatefulSet `kubectl scale` changed.
    let mut scaled = build(&store).statefulset;
    scaled.spec.replicas = Some(4);
    assert_eq!(built_replicas(&scaled), 3);
}

/// The `tls` volume's keys and `DRASI_STORE_PEER_TLS_CA_FILE`, if set.
fn tls_mount_and_peer_ca(objects: &DesiredObjects) -> (Vec<String>, Option<String>) {
    let pod = objects.statefulset.spec.template.spec.clone().unwrap();
    let tls = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "tls")
        .expect("a tls volume");
    let keys = tls
        .secret
        .as_ref()
        .and_then(|s| s.items.as_ref())
        .unwrap()
        .iter()
        .map(|i| i.key.clone())
        .collect();
    let ca = env(&container(objects))
        .get("DRASI_STORE_PEER_TLS_CA_FILE")
        .and_then(|e| e.value.clone());
    (keys, ca)
}

#[test]
fn replicas_of_a_tls_store_authenticate_each_other_by_mutual_tls() {
    // ca.crt in the Secret: mounted next to the pair, named as the CA.
    let store = replicated(example("tls.yaml"), 3);
    assert_eq!(
        tls_mount_and_peer_ca(&build(&store)),
        (
            vec!["tls.crt".into(), "tls.key".into(), "ca.crt".into()],
            Some("/var/run/drasi-store/tls/ca.crt".into())
        )
    );
    // A self-signed certificate without ca.crt is its own CA.
    let mut referenced = inputs(&store).referenced();
    referenced.tls_secret = Some(BTreeMap::from([(
        "tls.crt".to_owned(),
        k8s_openapi::ByteString(CA.as_bytes().to_vec()),
    )]));
    let objects = builders::build(&validate(&store, &ctx(), &referenced).unwrap());
    assert_eq!(
        tls_mount_and_peer_ca(&objects),
        (
            vec!["tls.crt".into(), "tls.key".into()],
            Some("/var/run/drasi-store/tls/tls.crt".into())
        )
    );
    // A group formed without mutual TLS (by an operator before it) keeps
    // plain peer traffic: switching one replica at a time would split it.
    let mut referenced = inputs(&store).referenced();
    referenced.existing_peer_tls = Some(false);
    let objects = builders::build(&validate(&store, &ctx(), &referenced).unwrap());
    assert_eq!(
        tls_mount_and_peer_ca(&objects),
        (vec!["tls.crt".into(), "tls.key".into()], None)
    );
    assert!(!builders::built_with_peer_tls(&objects.statefulset));
    referenced.existing_peer_tls = Some(true);
    let objects = builders::build(&validate(&store, &ctx(), &referenced).unwrap());
    assert!(builders::built_with_peer_tls(&objects.statefulset));
    // One replica has no peers: nothing changes for it.
    assert_eq!(
        tls_mount_and_peer_ca(&build(&example("tls.yaml"))),
        (vec!["tls.crt".into(), "tls.key".into()], None)
    );
}

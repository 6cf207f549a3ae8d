//! The generated CRD: the committed file matches it, and its schema carries
//! the names, columns and validation rules the project promises.

use std::path::PathBuf;

use drasi_store_operator::crd::{self, CRD_FILE, MAX_NAME_LENGTH};
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

/// Fails when `crds/` drifts from the types. `DRASI_UPDATE_CRD=1` rewrites
/// the file instead (same bytes as `drasi-store-operator crd`).
#[test]
fn committed_crd_matches_generated() {
    let path = repo_root().join(CRD_FILE);
    let generated = crd::crd_yaml();
    if std::env::var_os("DRASI_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write CRD file");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{CRD_FILE} is out of date with the CRD types; regenerate it with\n  \
         cargo run -p drasi-store-operator -- crd > {CRD_FILE}\n\
         (or DRASI_UPDATE_CRD=1 cargo test -p drasi-store-operator --test crd)"
    );
}

fn crd_json() -> Value {
    serde_json::to_value(crd::crd()).unwrap()
}

fn version(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    &versions[0]
}

fn schema(crd: &Value) -> &Value {
    &version(crd)["schema"]["openAPIV3Schema"]
}

fn rules(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| r["rule"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn names_scope_and_subresources() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "drasistatestores.drasi.io");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "drasi.io");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "DrasiStateStore");
    assert_eq!(spec["names"]["plural"], "drasistatestores");
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["dss"]));
    assert_eq!(spec["names"]["categories"], serde_json::json!(["drasi"]));
    let v = version(&crd);
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["served"], true);
    assert_eq!(v["storage"], true);
    assert!(v["subresources"]["status"].is_object());
}

#[test]
fn printer_columns() {
    let crd = crd_json();
    let columns: Vec<(String, String)> = version(&crd)["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["jsonPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("Phase", ".status.phase"),
        ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
        ("Endpoint", ".status.endpoint"),
        ("Leader", ".status.replication.leader"),
        ("Age", ".metadata.creationTimestamp"),
    ];
    assert_eq!(
        columns,
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn spec_fields_enums_and_defaults() {
    // Optional enums list `null` among their values (kube's OptionalEnum
    // transform, needed with `nullable: true`); compare the real values.
    fn values(node: &Value) -> Value {
        Value::Array(
            node["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| !v.is_null())
                .cloned()
                .collect(),
        )
    }
    let crd = crd_json();
    let spec = &schema(&crd)["properties"]["spec"]["properties"];
    let mut fields: Vec<&str> = spec
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "antiAffinity",
            "auth",
            "backup",
            "durability",
            "image",
            "imagePullPolicy",
            "imagePullSecrets",
            "limits",
            "networkPolicy",
            "paused",
            "pod",
            "pvcRetention",
            "replicas",
            "resources",
            "restore",
            "service",
            "storage",
            "tls"
        ]
    );
    assert_eq!(spec["durability"]["default"], "Immediate");
    assert_eq!(
        values(&spec["durability"]),
        serde_json::json!(["Immediate", "Eventual"])
    );
    assert_eq!(
        values(&spec["imagePullPolicy"]),
        serde_json::json!(["Always", "IfNotPresent", "Never"])
    );
    assert_eq!(spec["replicas"]["default"], 1);
    assert_eq!(spec["replicas"]["type"], "integer");
    assert_eq!(values(&spec["replicas"]), serde_json::json!([1, 3, 5]));
    assert_eq!(spec["antiAffinity"]["default"], "Preferred");
    assert_eq!(
        values(&spec["antiAffinity"]),
        serde_json::json!(["Preferred", "Required"])
    );
    assert_eq!(spec["storage"]["properties"]["size"]["default"], "1Gi");
    assert_eq!(spec["storage"]["properties"]["size"]["type"], "string");
    assert_eq!(
        values(&spec["pvcRetention"]["properties"]["whenDeleted"]),
        serde_json::json!(["Retain", "Delete"])
    );
    assert_eq!(
        spec["pvcRetention"]["properties"]["whenDeleted"]["default"],
        "Retain"
    );
    assert_eq!(
        values(&spec["service"]["properties"]["type"]),
        serde_json::json!(["ClusterIP", "NodePort", "LoadBalancer"])
    );
    let rotation = &spec["auth"]["properties"]["rotation"]["properties"];
    assert_eq!(
        rotation["gracePeriodSeconds"]["minimum"].as_f64(),
        Some(120.0)
    );
    assert_eq!(rotation["trigger"]["maxLength"].as_u64(), Some(63));
    let policy = &spec["networkPolicy"]["properties"];
    assert_eq!(policy["enabled"]["type"], "boolean");
    assert_eq!(policy["clients"]["minItems"].as_u64(), Some(1));
    assert_eq!(policy["clients"]["maxItems"].as_u64(), Some(32));
    assert_eq!(policy["metricsScrapers"]["maxItems"].as_u64(), Some(32));
    let limits = &spec["limits"]["properties"];
    assert_eq!(limits["maxKeyBytes"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(limits["maxKeyBytes"]["maximum"].as_f64(), Some(65536.0));
    assert_eq!(limits["maxValueBytes"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(
        limits["maxValueBytes"]["maximum"].as_f64(),
        Some(67108864.0)
    );
    assert!(
        spec["tls"]["required"]
            .as_array()
            .unwrap()
            .contains(&"secretName".into())
    );
    assert!(spec["tls"]["properties"]["secretName"]["pattern"].is_string());
    assert!(spec["auth"]["properties"]["existingSecret"]["pattern"].is_string());
}

#[test]
fn cel_rules_are_in_the_schema() {
    let crd = crd_json();
    let root = schema(&crd);
    let root_rules = rules(root);
    assert!(
        root_rules
            .iter()
            .any(|r| r.contains(&format!("self.metadata.name.size() <= {MAX_NAME_LENGTH}"))),
        "{root_rules:?}"
    );
    assert!(
        root_rules
            .iter()
            .any(|r| r.contains("self.metadata.name.matches("))
    );

    let spec = &root["properties"]["spec"]["properties"];
    let storage = rules(&spec["storage"]);
    assert!(
        storage
            .iter()
            .any(|r| r.contains("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0")),
        "grow-only rule missing: {storage:?}"
    );
    assert!(
        storage
            .iter()
            .any(|r| r.contains("self.storageClassName == oldSelf.storageClassName")),
        "immutable storageClassName rule missing: {storage:?}"
    );
    assert!(storage.iter().any(|r| r.contains("isQuantity(self.size)")));

    let spec_rules = rules(&root["properties"]["spec"]);
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("self.restore == oldSelf.restore")),
        "immutable spec.restore rule missing: {spec_rules:?}"
    );
    assert!(
        spec_rules
            .iter()
            .any(|r| r.contains("!has(self.restore) || !has(self.replicas) || self.replicas == 1")),
        "restore-only-with-one-replica rule missing: {spec_rules:?}"
    );
    assert!(
        rules(&spec["restore"])
            .iter()
            .any(|r| r.contains("has(self.fromBackup) != has(self.source)")),
        "exactly-one-of rule of spec.restore missing"
    );

    let pod = &spec["pod"]["properties"];
    let label_rules = rules(&pod["labels"]);
    for key in drasi_store_operator::labels::RESERVED_LABEL_KEYS {
        assert!(
            label_rules.iter().any(|r| r.contains(&format!("'{key}'"))),
            "{key} not protected: {label_rules:?}"
        );
    }
    assert!(
        rules(&pod["annotations"])
            .iter()
            .any(|r| r.contains(drasi_store_operator::labels::CONFIG_HASH_ANNOTATION))
    );

    // Every rule carries a human message: the apiserver shows it verbatim.
    fn walk(node: &Value, out: &mut Vec<Value>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(rules.iter().cloned());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    walk(root, &mut all);
    assert!(all.len() >= 7, "{all:?}");
    for rule in all {
        assert!(rule["message"].is_string(), "rule without message: {rule}");
    }
}

#[test]
fn status_conditions_are_a_map_list_keyed_by_type() {
    let crd = crd_json();
    let status = &schema(&crd)["properties"]["status"]["properties"];
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        status["conditions"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    for field in [
        "phase",
        "observedGeneration",
        "readyReplicas",
        "endpoint",
        "connectionSecret",
        "image",
        "storage",
    ] {
        assert!(status[field].is_object(), "status.{field} missing");
    }
    assert_eq!(
        Value::Array(
            status["phase"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| !v.is_null())
                .cloned()
                .collect()
        ),
        serde_json::json!([
            "Pending",
            "Provisioning",
            "Ready",
            "Degraded",
            "Paused",
            "Terminating"
        ])
    );
}

/// Fails when `crds/drasistatestorebackups.drasi.io.yaml` drifts from the
/// types. `DRASI_UPDATE_CRD=1` rewrites it.
#[test]
fn committed_backup_crd_matches_generated() {
    let path = repo_root().join(crd::BACKUP_CRD_FILE);
    let generated = crd::crd_yaml_named("drasistatestorebackups.drasi.io").expect("backup CRD");
    if std::env::var_os("DRASI_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write CRD file");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date; regenerate it with\n  cargo run -p drasi-store-operator -- crd \
         --name drasistatestorebackups.drasi.io > {}",
        crd::BACKUP_CRD_FILE,
        crd::BACKUP_CRD_FILE
    );
}

#[test]
fn backup_crd_names() {
    let crd = serde_json::to_value(
        crd::all_crds()
            .into_iter()
            .find(|(file, _)| *file == crd::BACKUP_CRD_FILE)
            .expect("backup CRD listed")
            .1,
    )
    .unwrap();
    assert_eq!(crd["metadata"]["name"], "drasistatestorebackups.drasi.io");
    let names = &crd["spec"]["names"];
    assert_eq!(names["kind"], "DrasiStateStoreBackup");
    assert_eq!(names["plural"], "drasistatestorebackups");
    assert_eq!(names["shortNames"], serde_json::json!(["dssbackup"]));
    assert_eq!(names["categories"], serde_json::json!(["drasi"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let v = version(&crd);
    assert_eq!(v["name"], "v1alpha1");
    assert!(v["subresources"]["status"].is_object());
    let phases = &schema(&crd)["properties"]["status"]["properties"]["phase"]["enum"];
    for phase in ["Pending", "Running", "Completed", "Failed"] {
        assert!(
            phases.as_array().unwrap().iter().any(|p| p == phase),
            "{phase} in {phases}"
        );
    }
}

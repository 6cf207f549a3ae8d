//! The CRD's CEL rules (`x-kubernetes-validations`), EXECUTED client-side
//! with kube's `cel` feature (crate `kube-cel`, the Kubernetes CEL extension
//! libraries including `quantity`) against the exact `openAPIV3Schema` that
//! `drasi-store-operator crd` prints and `crds/` ships.
//!
//! `tests/crd.rs` only checks that the rules are present; here every rule is
//! compiled, every sample CR in `examples/` must pass them, every fixture in
//! `tests/fixtures/invalid-crs/` marked `# rejected-by: cel` must be rejected
//! by the expected rule, and the transition rules (grow-only `storage.size`,
//! immutable `storage.storageClassName`) are exercised as updates.
//!
//! What this cannot prove (listed in docs/operator.md): kube-cel reproduces
//! neither the apiserver's CEL type checker nor its cost estimation, nor CRD
//! validation ratcheting.

mod samples;

use std::path::{Path, PathBuf};

use drasi_store_operator::crd::{self, MAX_NAME_LENGTH};
use kube::core::cel::{CompiledSchema, ErrorKind, ValidationError, Validator, compile_schema};
use samples::{file_name, yaml_files};
use serde_json::{Value, json};

/// The shipped `openAPIV3Schema` (the one version of the generated CRD).
fn schema() -> Value {
    let crd = crd::crd();
    assert_eq!(crd.spec.versions.len(), 1, "one served version expected");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has an openAPIV3Schema");
    serde_json::to_value(schema).expect("schema serializes to JSON")
}

fn load_cr(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let value: Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    assert_eq!(value["kind"], "DrasiStateStore", "{}", path.display());
    value
}

/// Runs every CEL rule of the shipped schema: creation when `old` is `None`,
/// otherwise an update from `old` (transition rules run only then).
fn validate(object: &Value, old: Option<&Value>) -> Result<(), Vec<ValidationError>> {
    Validator::new()
        .validate(&schema(), object, old)
        .map_err(|errors| errors.into_vec())
}

fn describe(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("  [{:?}] {} (rule: {})", e.kind, e, e.rule))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that exactly one rule rejected the object, that it did so by
/// evaluating to false (not by failing to compile or evaluate), at
/// `field_path`, with a message containing `message`.
#[track_caller]
fn assert_rejected_by(result: Result<(), Vec<ValidationError>>, field_path: &str, message: &str) {
    let errors = match result {
        Ok(()) => panic!("accepted, but the rule \"{message}\" at {field_path} should reject it"),
        Err(errors) => errors,
    };
    assert!(
        errors.len() == 1
            && errors[0].kind == ErrorKind::ValidationFailure
            && errors[0].field_path == field_path
            && errors[0].message.contains(message),
        "expected exactly one ValidationFailure at {field_path} containing {message:?}, got:\n{}",
        describe(&errors)
    );
}

#[track_caller]
fn assert_accepted(result: Result<(), Vec<ValidationError>>, what: &str) {
    if let Err(errors) = result {
        panic!("{what} was rejected:\n{}", describe(&errors));
    }
}

// ---------------------------------------------------------------------------
// Every rule compiles.
// ---------------------------------------------------------------------------

/// Every `x-kubernetes-validations` rule in the schema, with its JSON path.
fn rules_in(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match schema {
        Value::Object(map) => {
            if let Some(rules) = map.get("x-kubernetes-validations") {
                for rule in rules
                    .as_array()
                    .expect("x-kubernetes-validations is a list")
                {
                    let text = rule["rule"].as_str().expect("every rule has a `rule`");
                    out.push((path.to_owned(), text.to_owned()));
                }
            }
            for (key, child) in map {
                if key != "x-kubernetes-validations" {
                    rules_in(child, &format!("{path}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                rules_in(child, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Compilation errors (and the number of compiled rules) of a compiled tree.
/// kube-cel reports a rule that fails to compile only when the validator
/// walks a value at that node; walking the compiled schema itself catches
/// rules on fields no sample sets.
fn compiled_rules(node: &CompiledSchema, path: &str, count: &mut usize, errors: &mut Vec<String>) {
    *count += node.validations.len();
    for error in node.compilation_errors() {
        errors.push(format!("{path}: {error}"));
    }
    let mut children: Vec<(String, &CompiledSchema)> = node
        .properties
        .iter()
        .map(|(name, child)| (format!("{path}.{name}"), child))
        .collect();
    children.extend(node.items.as_deref().map(|c| (format!("{path}[]"), c)));
    children.extend(
        node.additional_properties
            .as_deref()
            .map(|c| (format!("{path}{{}}"), c)),
    );
    for (kind, branches) in [
        ("allOf", &node.all_of),
        ("oneOf", &node.one_of),
        ("anyOf", &node.any_of),
    ] {
        for (i, branch) in branches.iter().enumerate() {
            children.push((format!("{path}/{kind}/{i}"), branch));
        }
    }
    for (child_path, child) in children {
        compiled_rules(child, &child_path, count, errors);
    }
}

#[test]
fn every_rule_compiles() {
    let schema = schema();
    let mut rules = Vec::new();
    rules_in(&schema, "", &mut rules);
    // name length, name format, size positive, size grow-only, class
    // immutable, pod.annotations, pod.labels, auth rotation only for the
    // generated token, and the backup destinations' unique names, one-of
    // objectStore/volume, endpoint scheme, relative path; spec.restore
    // immutable, its exactly-one-of fromBackup/source, objectStore only
    // with s3://, no '..' in a pvc:// source, and the endpoint scheme of
    // spec.restore.objectStore and of status.restoredFrom.objectStore;
    // spec.restore only with one replica.
    assert_eq!(
        rules.len(),
        19,
        "the CRD's CEL rules changed; extend this test to execute the new ones: {rules:#?}"
    );

    let compiled = compile_schema(&schema);
    let mut count = 0;
    let mut errors = Vec::new();
    compiled_rules(&compiled, "", &mut count, &mut errors);
    assert!(
        errors.is_empty(),
        "CEL rules that fail to compile (a real apiserver would reject the whole CRD):\n{}",
        errors.join("\n")
    );
    assert_eq!(
        count,
        rules.len(),
        "kube-cel compiled a different number of rules than the schema holds"
    );
}

// ---------------------------------------------------------------------------
// Samples.
// ---------------------------------------------------------------------------

#[test]
fn every_example_passes_every_rule_on_create_and_on_a_no_op_update() {
    let files = yaml_files("examples");
    assert!(files.len() >= 4, "too few examples: {files:?}");
    for file in files {
        let cr = load_cr(&file);
        assert_accepted(validate(&cr, None), &format!("{} (create)", file.display()));
        // An update that changes nothing (e.g. a label edit) must pass the
        // transition rules too.
        assert_accepted(
            validate(&cr, Some(&cr)),
            &format!("{} (no-op update)", file.display()),
        );
    }
}

/// For each fixture only CEL rejects: the path and message of the rule that
/// must reject it.
fn expected_cel_rejection(fixture: &str) -> (&'static str, &'static str) {
    match fixture {
        "name-not-dns-label.yaml" => ("", "must be a DNS-1035 label"),
        "name-too-long.yaml" => ("", "must be at most 52 characters"),
        "pod-annotation-config-hash.yaml" => (
            "spec.pod.annotations",
            "pod.annotations must not set drasi.io/config-hash",
        ),
        "pod-label-overrides-managed-by.yaml" | "pod-label-overrides-selector.yaml" => (
            "spec.pod.labels",
            "pod.labels must not set the app.kubernetes.io/",
        ),
        "storage-size-zero.yaml" => ("spec.storage", "storage.size must be a positive quantity"),
        "rotation-with-existing-secret.yaml" => (
            "spec.auth",
            "spec.auth.rotation rotates the generated <name>-auth token",
        ),
        "restore-with-replicas.yaml" => {
            ("spec", "spec.restore is not supported with spec.replicas")
        }
        other => panic!(
            "tests/fixtures/invalid-crs/{other} is marked `# rejected-by: cel`: add the rule \
             that must reject it to expected_cel_rejection() in {}",
            file!()
        ),
    }
}

#[test]
fn every_cel_marked_invalid_fixture_is_rejected_by_its_rule() {
    let marked: Vec<PathBuf> = yaml_files("tests/fixtures/invalid-crs")
        .into_iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l.trim_start_matches('#').trim() == "rejected-by: cel")
        })
        .collect();
    assert!(
        marked.len() >= 6,
        "expected at least 6 fixtures marked `# rejected-by: cel`, found {marked:?}"
    );
    for file in marked {
        let name = file_name(&file);
        let (field_path, message) = expected_cel_rejection(&name);
        let cr = load_cr(&file);
        let result = validate(&cr, None);
        let errors = result.clone().err().unwrap_or_default();
        assert!(
            !errors.is_empty(),
            "{name} is marked `# rejected-by: cel` but every CEL rule accepts it"
        );
        assert_rejected_by(result, field_path, message);
    }
}

// ---------------------------------------------------------------------------
// Creation rules beyond the fixtures.
// ---------------------------------------------------------------------------

fn store(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "drasi.io/v1alpha1",
        "kind": "DrasiStateStore",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

#[test]
fn restore_only_into_a_single_replica() {
    let restore = json!({"fromBackup": "nightly"});
    for ok in [
        json!({"restore": restore}),
        json!({"restore": restore, "replicas": 1}),
        json!({"replicas": 3}),
        json!({"replicas": 5, "antiAffinity": "Required"}),
    ] {
        assert_accepted(validate(&store("s", ok.clone()), None), &ok.to_string());
    }
    for replicas in [3, 5] {
        assert_rejected_by(
            validate(
                &store("s", json!({"restore": restore, "replicas": replicas})),
                None,
            ),
            "spec",
            "spec.restore is not supported with spec.replicas",
        );
    }
}

#[test]
fn metadata_name_rules() {
    let longest = format!("s{}", "a".repeat(MAX_NAME_LENGTH - 1));
    assert_eq!(MAX_NAME_LENGTH, 52);
    for ok in ["a", "store", "store-1", "a-b-c", longest.as_str()] {
        assert_accepted(validate(&store(ok, json!({})), None), ok);
    }
    let too_long = format!("{longest}a");
    assert_rejected_by(
        validate(&store(&too_long, json!({})), None),
        "",
        "must be at most 52 characters",
    );
    for bad in [
        "1store", "Store", "store-", "-store", "st.ore", "st_ore", "",
    ] {
        assert_rejected_by(
            validate(&store(bad, json!({})), None),
            "",
            "must be a DNS-1035 label",
        );
    }
}

#[test]
fn every_reserved_pod_label_is_rejected_and_others_are_allowed() {
    for reserved in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
    ] {
        let cr = store(
            "s",
            json!({"pod": {"labels": {"team": "a", reserved: "x"}}}),
        );
        assert_rejected_by(
            validate(&cr, None),
            "spec.pod.labels",
            "pod.labels must not set the app.kubernetes.io/",
        );
    }
    let cr = store(
        "s",
        json!({"pod": {
            "labels": {"app.kubernetes.io/version": "1", "team": "a", "name": "x"},
            "annotations": {"drasi.io/other": "1", "prometheus.io/scrape": "true"},
        }}),
    );
    assert_accepted(validate(&cr, None), "non-reserved pod labels/annotations");
    assert_accepted(
        validate(
            &store("s", json!({"pod": {"labels": {}, "annotations": {}}})),
            None,
        ),
        "empty pod labels/annotations",
    );
}

#[test]
fn storage_size_must_be_a_positive_quantity() {
    for ok in ["1", "1Gi", "500Mi", "10G", "1.5Gi", "1e3", "100m"] {
        assert_accepted(
            validate(&store("s", json!({"storage": {"size": ok}})), None),
            ok,
        );
    }
    for bad in ["0", "0Gi", "0.0", "-1Gi"] {
        assert_rejected_by(
            validate(&store("s", json!({"storage": {"size": bad}})), None),
            "spec.storage",
            "storage.size must be a positive quantity",
        );
    }
}

// ---------------------------------------------------------------------------
// Transition rules (updates).
// ---------------------------------------------------------------------------

const SHRINK: &str = "storage.size may grow but never shrink";
const CLASS_IMMUTABLE: &str = "storage.storageClassName is immutable";

fn with_storage(storage: Value) -> Value {
    store("s", json!({"storage": storage}))
}

fn update(old: Value, new: Value) -> Result<(), Vec<ValidationError>> {
    validate(&with_storage(new), Some(&with_storage(old)))
}

#[test]
fn storage_size_may_grow_but_never_shrink() {
    for (old, new) in [
        ("1Gi", "2Gi"),
        ("1Gi", "1Gi"),
        ("1Gi", "1024Mi"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("10G", "10Gi"),
        ("500Mi", "1G"),
    ] {
        assert_accepted(
            update(json!({"size": old}), json!({"size": new})),
            &format!("size {old} -> {new}"),
        );
    }
    for (old, new) in [("2Gi", "1Gi"), ("1Gi", "1023Mi"), ("10Gi", "10G")] {
        assert_rejected_by(
            update(json!({"size": old}), json!({"size": new})),
            "spec.storage",
            SHRINK,
        );
    }
    // An omitted size is the default 1Gi, on both sides.
    assert_accepted(
        update(json!({}), json!({"size": "2Gi"})),
        "size default -> 2Gi",
    );
    assert_rejected_by(
        update(json!({"size": "2Gi"}), json!({})),
        "spec.storage",
        SHRINK,
    );
    let omitted = store("s", json!({}));
    assert_rejected_by(
        validate(&omitted, Some(&with_storage(json!({"size": "2Gi"})))),
        "spec.storage",
        SHRINK,
    );
    // On create the transition rule does not apply.
    assert_accepted(
        validate(&with_storage(json!({"size": "1Mi"})), None),
        "create 1Mi",
    );
}

#[test]
fn storage_class_name_cannot_be_set_changed_or_removed_after_creation() {
    let fast = json!({"size": "1Gi", "storageClassName": "fast"});
    let slow = json!({"size": "1Gi", "storageClassName": "slow"});
    let unset = json!({"size": "1Gi"});

    assert_accepted(update(unset.clone(), unset.clone()), "unset -> unset");
    assert_accepted(update(fast.clone(), fast.clone()), "fast -> fast");
    assert_accepted(
        update(
            fast.clone(),
            json!({"size": "2Gi", "storageClassName": "fast"}),
        ),
        "fast -> fast with a larger size",
    );
    assert_rejected_by(update(fast.clone(), slow), "spec.storage", CLASS_IMMUTABLE);
    assert_rejected_by(
        update(unset.clone(), fast.clone()),
        "spec.storage",
        CLASS_IMMUTABLE,
    );
    assert_rejected_by(
        update(fast.clone(), unset.clone()),
        "spec.storage",
        CLASS_IMMUTABLE,
    );
    // A store created without any `storage` (defaulted to {size: 1Gi})
    // cannot pick a class later either.
    assert_rejected_by(
        validate(&with_storage(fast.clone()), Some(&store("s", json!({})))),
        "spec.storage",
        CLASS_IMMUTABLE,
    );
    // Creation may choose any class.
    assert_accepted(validate(&with_storage(fast), None), "create with a class");

    // Shrinking AND changing the class reports both rules.
    let errors = update(
        json!({"size": "2Gi", "storageClassName": "fast"}),
        json!({"size": "1Gi", "storageClassName": "slow"}),
    )
    .expect_err("shrink + class change must be rejected");
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        errors.len() == 2
            && messages.iter().any(|m| m.contains(SHRINK))
            && messages.iter().any(|m| m.contains(CLASS_IMMUTABLE)),
        "{}",
        describe(&errors)
    );
}

// ---------------------------------------------------------------------------
// Backups: spec.backup.destinations, and the DrasiStateStoreBackup CRD.
// ---------------------------------------------------------------------------

/// Exactly one rule rejected the object by evaluating to false, with a
/// message containing `message` (wherever the rule sits).
#[track_caller]
fn assert_rejected_with(result: Result<(), Vec<ValidationError>>, message: &str) {
    let errors = result.expect_err(&format!("accepted, but \"{message}\" should reject it"));
    assert!(
        errors.len() == 1
            && errors[0].kind == ErrorKind::ValidationFailure
            && errors[0].message.contains(message),
        "expected exactly one ValidationFailure containing {message:?}, got:\n{}",
        describe(&errors)
    );
}

fn with_destinations(destinations: Value) -> Value {
    store("s", json!({ "backup": { "destinations": destinations } }))
}

#[test]
fn backup_destination_rules() {
    let s3 = json!({ "name": "s3", "objectStore": { "bucket": "b-1",
        "endpoint": "https://s3.example", "credentialsSecret": "c" } });
    let vol = json!({ "name": "vol", "volume": { "claimName": "pvc", "path": "a/b" } });
    assert_accepted(
        validate(&with_destinations(json!([s3, vol])), None),
        "two distinct destinations",
    );
    assert_accepted(
        validate(
            &with_destinations(json!([{ "name": "m", "objectStore": {
                "bucket": "bbb", "endpoint": "http://minio:9000" } }])),
            None,
        ),
        "http endpoint",
    );
    assert_rejected_with(
        validate(&with_destinations(json!([s3, s3])), None),
        "spec.backup.destinations must have unique names",
    );
    assert_rejected_with(
        validate(
            &with_destinations(json!([{ "name": "both", "objectStore": { "bucket": "bbb" },
                "volume": { "claimName": "pvc" } }])),
            None,
        ),
        "exactly one of objectStore and volume",
    );
    assert_rejected_with(
        validate(&with_destinations(json!([{ "name": "none" }])), None),
        "exactly one of objectStore and volume",
    );
    assert_rejected_with(
        validate(
            &with_destinations(json!([{ "name": "f", "objectStore": {
                "bucket": "bbb", "endpoint": "file:///etc" } }])),
            None,
        ),
        "objectStore.endpoint must be an http:// or https:// URL",
    );
    for path in ["/abs", "a/../b", ".."] {
        assert_rejected_with(
            validate(
                &with_destinations(json!([{ "name": "v", "volume": {
                    "claimName": "pvc", "path": path } }])),
                None,
            ),
            "volume.path must be relative and must not contain '..'",
        );
    }
}

// ---------------------------------------------------------------------------
// Restore: spec.restore.
// ---------------------------------------------------------------------------

const RESTORE_IMMUTABLE: &str = "spec.restore is set at creation only";
const EXACTLY_ONE: &str = "spec.restore sets exactly one of fromBackup and source";

fn with_restore(restore: Value) -> Value {
    store("s", json!({ "restore": restore }))
}

#[test]
fn restore_sets_exactly_one_of_from_backup_and_source() {
    for ok in [
        json!({ "fromBackup": "orders-1" }),
        json!({ "source": "s3://bkt/stores/a.snap" }),
        json!({ "source": "s3://bkt/a.snap", "objectStore": {
            "endpoint": "http://minio:9000", "region": "r", "credentialsSecret": "c" } }),
        json!({ "source": "pvc://backups/stores/default/orders/b.snap" }),
    ] {
        assert_accepted(validate(&with_restore(ok.clone()), None), &ok.to_string());
    }
    assert_rejected_by(
        validate(
            &with_restore(json!({ "fromBackup": "b", "source": "s3://bkt/a.snap" })),
            None,
        ),
        "spec.restore",
        EXACTLY_ONE,
    );
    assert_rejected_by(
        validate(&with_restore(json!({})), None),
        "spec.restore",
        EXACTLY_ONE,
    );
    for restore in [
        json!({ "fromBackup": "b", "objectStore": { "region": "r" } }),
        json!({ "source": "pvc://c/a.snap", "objectStore": { "region": "r" } }),
    ] {
        assert_rejected_by(
            validate(&with_restore(restore), None),
            "spec.restore",
            "spec.restore.objectStore goes only with an s3:// source",
        );
    }
    assert_rejected_with(
        validate(
            &with_restore(json!({ "source": "pvc://c/a/../b.snap" })),
            None,
        ),
        "a pvc:// path must not contain '..'",
    );
    assert_rejected_with(
        validate(
            &with_restore(json!({ "source": "s3://bkt/a.snap",
                "objectStore": { "endpoint": "ftp://x" } })),
            None,
        ),
        "objectStore.endpoint must be an http:// or https:// URL",
    );
}

#[test]
fn restore_cannot_be_added_changed_or_removed_after_creation() {
    let from_b1 = with_restore(json!({ "fromBackup": "b1" }));
    let from_b2 = with_restore(json!({ "fromBackup": "b2" }));
    let from_source = with_restore(json!({ "source": "s3://bkt/a.snap" }));
    let none = store("s", json!({}));

    assert_accepted(validate(&from_b1, Some(&from_b1)), "unchanged restore");
    assert_accepted(validate(&none, Some(&none)), "no restore, unchanged");
    // Other fields may still change next to it.
    let mut grown = from_b1.clone();
    grown["spec"]["storage"] = json!({ "size": "5Gi" });
    assert_accepted(validate(&grown, Some(&from_b1)), "restore kept, size grown");

    for (old, new, what) in [
        (&none, &from_b1, "added"),
        (&from_b1, &none, "removed"),
        (&from_b1, &from_b2, "changed backup"),
        (&from_b1, &from_source, "fromBackup -> source"),
    ] {
        let result = validate(new, Some(old));
        let errors = result.clone().err().unwrap_or_default();
        assert!(!errors.is_empty(), "{what}: accepted");
        assert_rejected_by(result, "spec", RESTORE_IMMUTABLE);
    }
    let with_creds = with_restore(json!({ "source": "s3://bkt/a.snap",
        "objectStore": { "credentialsSecret": "c" } }));
    assert_rejected_by(
        validate(&with_creds, Some(&from_source)),
        "spec",
        RESTORE_IMMUTABLE,
    );
}

fn backup_schema() -> Value {
    let (_, crd) = crd::all_crds()
        .into_iter()
        .find(|(file, _)| *file == crd::BACKUP_CRD_FILE)
        .expect("the backup CRD");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("an openAPIV3Schema");
    serde_json::to_value(schema).unwrap()
}

#[test]
fn backup_crd_rules_compile_and_run() {
    let schema = backup_schema();
    let mut rules = Vec::new();
    rules_in(&schema, "", &mut rules);
    // name length, immutable spec, and status.destination's copies of the
    // destination rules (one-of, endpoint scheme, relative path).
    assert_eq!(rules.len(), 5, "{rules:#?}");
    let mut count = 0;
    let mut errors = Vec::new();
    compiled_rules(&compile_schema(&schema), "", &mut count, &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(count, 5);

    let backup = |name: &str, spec: Value| {
        json!({ "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStoreBackup",
                "metadata": { "name": name, "namespace": "default" }, "spec": spec })
    };
    let run = |object: &Value, old: Option<&Value>| {
        Validator::new()
            .validate(&schema, object, old)
            .map_err(|e| e.into_vec())
    };
    let ok = backup("orders-1", json!({ "store": "orders" }));
    assert_accepted(run(&ok, None), "a backup");
    assert_accepted(run(&ok, Some(&ok)), "a no-op update");
    assert_rejected_with(
        run(&backup(&"b".repeat(64), json!({ "store": "orders" })), None),
        "metadata.name must be at most 63 characters",
    );
    let moved = backup(
        "orders-1",
        json!({ "store": "orders", "destination": "vol" }),
    );
    assert_rejected_with(run(&moved, Some(&ok)), "spec is immutable");
}

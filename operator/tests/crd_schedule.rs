//! The `DrasiStateStoreScheduledBackup` CRD: the committed file matches
//! the types, the fixed names, the CEL rules EXECUTED client-side (kube's
//! `cel` feature, as tests/crd_cel.rs does for the store), and the schema
//! `pattern`s agree with the operator's own parsers, so admission never
//! refuses what the controller would accept.

use std::path::PathBuf;

use drasi_store_operator::crd::{
    self, MAX_AGE_PATTERN, MAX_SCHEDULE_NAME, SCHEDULE_PATTERN, TIME_ZONE_PATTERN,
};
use drasi_store_operator::schedule::cron::Schedule;
use drasi_store_operator::schedule::retention::parse_max_age;
use kube::core::cel::{ErrorKind, ValidationError, Validator, compile_schema};
use serde_json::{Value, json};

const NAME: &str = "drasistatestorescheduledbackups.drasi.io";

fn crd_value() -> Value {
    serde_json::to_value(
        crd::all_crds()
            .into_iter()
            .find(|(file, _)| *file == crd::SCHEDULED_BACKUP_CRD_FILE)
            .expect("the scheduled backup CRD is listed")
            .1,
    )
    .unwrap()
}

fn schema() -> Value {
    crd_value()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Fails when the committed CRD drifts from the types.
/// `DRASI_UPDATE_CRD=1` rewrites it.
#[test]
fn committed_crds_match_generated() {
    let generated = crd::crd_yaml_named(NAME).expect("scheduled backup CRD");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(crd::SCHEDULED_BACKUP_CRD_FILE);
    if std::env::var_os("DRASI_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write CRD file");
    }
    for file in [
        path,
        root.join("charts/drasi-store-operator")
            .join(crd::SCHEDULED_BACKUP_CRD_FILE),
    ] {
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date; regenerate it with\n  cargo run -p drasi-store-operator -- crd \
             --name {NAME} > {}",
            file.display(),
            crd::SCHEDULED_BACKUP_CRD_FILE
        );
    }
}

#[test]
fn names_and_printer_columns() {
    let crd = crd_value();
    assert_eq!(crd["metadata"]["name"], NAME);
    let names = &crd["spec"]["names"];
    assert_eq!(names["kind"], "DrasiStateStoreScheduledBackup");
    assert_eq!(names["plural"], "drasistatestorescheduledbackups");
    assert_eq!(names["shortNames"], json!(["dssschedule"]));
    assert_eq!(names["categories"], json!(["drasi"]));
    assert_eq!(crd["spec"]["group"], "drasi.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Store", "Schedule", "Suspend", "Last Backup", "Next", "Age"]
    );
    let spec = &schema()["properties"]["spec"];
    assert_eq!(spec["required"], json!(["schedule", "store"]));
    assert_eq!(spec["properties"]["keepLast"]["minimum"], 1.0);
}

fn describe(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {:?} at {}: {}", e.kind, e.field_path, e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn schedule_object(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "drasi.io/v1alpha1", "kind": "DrasiStateStoreScheduledBackup",
            "metadata": { "name": name, "namespace": "default" }, "spec": spec })
}

#[test]
fn cel_rules_compile_and_run() {
    let schema = schema();
    let compiled = compile_schema(&schema);
    assert!(
        compiled.compilation_errors().is_empty(),
        "{:?}",
        compiled.compilation_errors()
    );
    assert_eq!(compiled.validations.len(), 2);
    let run = |object: &Value, old: Option<&Value>| {
        Validator::new()
            .validate(&schema, object, old)
            .map_err(|e| e.into_vec())
    };
    let reject = |result: Result<(), Vec<ValidationError>>, message: &str| {
        let errors = result.expect_err(message);
        assert!(
            errors.len() == 1
                && errors[0].kind == ErrorKind::ValidationFailure
                && errors[0].message.contains(message),
            "expected {message:?}, got:\n{}",
            describe(&errors)
        );
    };
    let spec = json!({ "store": "orders", "schedule": "0 2 * * *" });
    let ok = schedule_object("nightly", spec.clone());
    run(&ok, None).expect("a schedule");
    run(&ok, Some(&ok)).expect("a no-op update");
    let longest = schedule_object(&"n".repeat(MAX_SCHEDULE_NAME), spec.clone());
    run(&longest, None).expect("a name of the longest length");
    reject(
        run(
            &schedule_object(&"n".repeat(MAX_SCHEDULE_NAME + 1), spec.clone()),
            None,
        ),
        "metadata.name must be at most 50 characters",
    );

    let edited = schedule_object(
        "nightly",
        json!({ "store": "orders", "schedule": "0 3 * * *", "suspend": true, "keepLast": 3 }),
    );
    run(&edited, Some(&ok)).expect("schedule, suspend and retention may change");
    let moved = schedule_object(
        "nightly",
        json!({ "store": "payments", "schedule": "0 2 * * *" }),
    );
    reject(run(&moved, Some(&ok)), "spec.store is immutable");
}

fn full_match(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("the CRD pattern compiles")
}

#[test]
fn the_schedule_pattern_admits_every_schedule_the_controller_accepts() {
    let pattern = full_match(SCHEDULE_PATTERN);
    let now = "2024-01-01T00:00:00Z".parse().unwrap();
    let accepted = [
        "0 2 * * *",
        "*/15 * * * *",
        "0 0 1,15 * MON-FRI",
        "30 4 1 JAN *",
        " 0  2 * * * ",
        "@daily",
        "@HOURLY",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    ];
    for expression in accepted {
        assert!(
            Schedule::parse(expression, None, now).is_ok(),
            "{expression}"
        );
        assert!(pattern.is_match(expression), "{expression}");
    }
    // The pattern refuses the wrong field counts early; the controller
    // refuses those and everything else.
    for expression in ["", "* * * *", "0 0 * * * *", "0 0 0 * * * 2024", "@"] {
        assert!(!pattern.is_match(expression), "{expression}");
        assert!(
            Schedule::parse(expression, None, now).is_err(),
            "{expression}"
        );
    }
}

#[test]
fn the_max_age_pattern_admits_every_max_age_the_controller_accepts() {
    let pattern = full_match(MAX_AGE_PATTERN);
    for ok in ["30d", "12h", "90m", "1w", "1w3d", "1d12h30m"] {
        assert!(pattern.is_match(ok), "{ok}");
        assert!(parse_max_age(ok).is_ok(), "{ok}");
    }
    for bad in ["", "30", "d", "30s", "1.5d", "-1d", "1d 2h", "30D"] {
        assert!(!pattern.is_match(bad), "{bad}");
        assert!(parse_max_age(bad).is_err(), "{bad}");
    }
    // Matches the pattern, refused by the controller with a clear status.
    assert!(pattern.is_match("0d") && parse_max_age("0d").is_err());
}

#[test]
fn the_time_zone_pattern_admits_every_zone_the_controller_knows() {
    let pattern = full_match(TIME_ZONE_PATTERN);
    let now = "2024-01-01T00:00:00Z".parse().unwrap();
    for zone in [
        "UTC",
        "Europe/Berlin",
        "America/Argentina/Buenos_Aires",
        "Etc/GMT+5",
        "America/Port-au-Prince",
    ] {
        assert!(pattern.is_match(zone), "{zone}");
        assert!(
            Schedule::parse("0 2 * * *", Some(zone), now).is_ok(),
            "{zone}"
        );
    }
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "Europe//Berlin",
        "Europe/Berlin ",
        "Europe/",
    ] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
}

//! The sample CRs: every `examples/*.yaml` store is valid and renders; every
//! `tests/fixtures/invalid-crs/*.yaml` says why it is invalid and is
//! rejected by the operator's own validation (`render`), which mirrors the
//! CRD's schema and CEL rules.

mod samples;

use drasi_store_operator::builders::BuildContext;
use drasi_store_operator::render::render;
use samples::{file_name, yaml_files};

fn ctx() -> BuildContext {
    BuildContext::new("ghcr.io/drasi-project/drasi-store-server:0.1.0")
}

#[test]
fn examples_render() {
    let files = yaml_files("examples");
    let names: Vec<String> = files.iter().map(|p| file_name(p)).collect();
    for required in [
        "minimal.yaml",
        "full.yaml",
        "tls.yaml",
        "existing-secret.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "examples/{required} missing"
        );
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.contains("kind: DrasiStateStore") {
            continue;
        }
        let out = render(&text, &ctx())
            .unwrap_or_else(|e| panic!("{} does not render: {e}", file.display()));
        assert!(out.contains("kind: StatefulSet"), "{}", file.display());
    }
}

#[test]
fn invalid_fixtures_are_rejected_and_say_why() {
    let files = yaml_files("tests/fixtures/invalid-crs");
    assert!(files.len() >= 10, "too few invalid fixtures: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let reason = text.lines().next().unwrap_or_default();
        assert!(
            reason.starts_with("# ") && reason.len() > 10,
            "{} must start with a comment saying why it is invalid",
            file.display()
        );
        assert_eq!(
            text.matches("kind: DrasiStateStore").count(),
            1,
            "{} must hold exactly one DrasiStateStore",
            file.display()
        );
        let err = render(&text, &ctx())
            .expect_err(&format!("{} was accepted ({reason})", file.display()));
        // The error names the offending field, which the comment names too.
        let message = err.to_string();
        let field = reason
            .trim_start_matches("# ")
            .split_whitespace()
            .next()
            .unwrap();
        let leaf = field.rsplit('.').next().unwrap();
        assert!(
            message.contains(leaf),
            "{}: error {message:?} does not name {field}",
            file.display()
        );
    }
}

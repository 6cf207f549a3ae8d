//! The reasons users look up are documented where they look: the README's
//! troubleshooting table and docs/reconciler.md list exactly the condition
//! reasons the operator can set (with their condition and status), and
//! docs/reconciler.md lists exactly its phases and Event reasons. The lists
//! come from the enums themselves, so adding a reason without documenting
//! it (or documenting one that does not exist) fails here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use drasi_store_operator::controller::events::EventReason;
use drasi_store_operator::controller::status::all_reasons;
use drasi_store_operator::crd::Phase;
use strum::IntoEnumIterator;

type Triple = (String, bool, String);

fn read(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text after `heading` up to the next heading of level `level` or higher.
fn section<'a>(text: &'a str, heading: &str, level: usize) -> &'a str {
    let rest = text
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"))
        .1;
    let mut end = rest.len();
    for hashes in 1..=level {
        let marker = format!("\n{} ", "#".repeat(hashes));
        if let Some(i) = rest.find(&marker) {
            end = end.min(i);
        }
    }
    &rest[..end]
}

/// The table rows of `text`, as trimmed cells.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("|---"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// Every `code` span in a cell.
fn codes(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn status(cell: &str) -> bool {
    match cell {
        "True" => true,
        "False" => false,
        other => panic!("status {other:?} is neither True nor False"),
    }
}

fn defined_reasons() -> BTreeSet<Triple> {
    all_reasons()
        .into_iter()
        .map(|(condition, status, reason)| (condition.to_string(), status, reason.to_owned()))
        .collect()
}

#[track_caller]
fn assert_same<T: Ord + std::fmt::Debug>(
    defined: &BTreeSet<T>,
    documented: &BTreeSet<T>,
    doc: &str,
) {
    let missing: Vec<_> = defined.difference(documented).collect();
    let unknown: Vec<_> = documented.difference(defined).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{doc} is out of step with the operator:\n  not documented: {missing:?}\n  \
         documented but never set: {unknown:?}"
    );
}

#[test]
fn reconciler_md_reasons_table_lists_every_condition_reason() {
    let docs = read("docs/reconciler.md");
    let table = section(&docs, "### Conditions and reasons", 3);
    let documented: BTreeSet<Triple> = rows(table)
        .into_iter()
        .filter(|cells| cells[0].starts_with('`'))
        .map(|cells| {
            let reasons = codes(cells[2]);
            assert_eq!(reasons.len(), 1, "one reason per row: {cells:?}");
            (
                cells[0].trim_matches('`').to_owned(),
                status(cells[1]),
                reasons[0].to_owned(),
            )
        })
        .collect();
    assert_same(
        &defined_reasons(),
        &documented,
        "docs/reconciler.md (Conditions and reasons)",
    );
}

#[test]
fn readme_troubleshooting_table_lists_every_condition_reason() {
    let readme = read("README.md");
    let table = section(&readme, "## Troubleshooting", 2);
    let documented: BTreeSet<Triple> = rows(table)
        .into_iter()
        .filter_map(|cells| {
            let (condition, state) = cells[0].split_once('=')?;
            let state = status(state);
            Some(
                codes(cells[1])
                    .into_iter()
                    .map(move |reason| (condition.to_owned(), state, reason.to_owned())),
            )
        })
        .flatten()
        .collect();
    assert_same(
        &defined_reasons(),
        &documented,
        "README.md (Troubleshooting)",
    );
}

#[test]
fn reconciler_md_lists_every_phase_and_event_reason() {
    let docs = read("docs/reconciler.md");
    let phases: BTreeSet<String> = rows(section(&docs, "## Status", 3))
        .into_iter()
        .filter(|cells| cells[0].starts_with('`'))
        .map(|cells| cells[0].trim_matches('`').to_owned())
        .collect();
    assert_same(
        &Phase::iter().map(|p| p.to_string()).collect(),
        &phases,
        "docs/reconciler.md (Status, phases)",
    );

    let events: BTreeSet<String> = rows(section(&docs, "## Events", 2))
        .into_iter()
        .filter(|cells| matches!(cells[0], "Normal" | "Warning"))
        .flat_map(|cells| {
            codes(cells[1])
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_same(
        &EventReason::iter().map(|r| r.to_string()).collect(),
        &events,
        "docs/reconciler.md (Events)",
    );
}

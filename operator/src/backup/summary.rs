//! What a finished backup pod reports. `drasi-store-server backup --json`
//! prints one JSON object as its last line of standard output; the
//! operator reads it from the pod's log once the Job succeeded. A failed
//! pod's error is its termination message (`FallbackToLogsOnError`: the
//! tail of its log).

use serde::Deserialize;

/// Longest error message copied into a backup's status.
pub const MAX_ERROR_CHARS: usize = 1024;

/// The `--json` summary of `drasi-store-server backup`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    pub location: String,
    pub records: u64,
    pub stores: u64,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default)]
    pub created_at_unix_ms: Option<i64>,
}

/// The last line of `log` that is a backup summary. Log lines of the
/// server's tracing output are JSON too, but lack the summary's fields.
pub fn parse_summary(log: &str) -> Option<BackupSummary> {
    log.lines()
        .rev()
        .map(str::trim)
        .filter(|line| line.starts_with('{'))
        .find_map(|line| serde_json::from_str::<BackupSummary>(line).ok())
        .filter(|s| s.sha256.len() == 64 && s.sha256.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A termination message made fit for `status.message`: trimmed, and cut
/// to [`MAX_ERROR_CHARS`] from the end, where the error is.
pub fn error_message(termination_message: &str) -> String {
    let trimmed = termination_message.trim();
    let count = trimmed.chars().count();
    if count <= MAX_ERROR_CHARS {
        return trimmed.to_owned();
    }
    let tail: String = trimmed.chars().skip(count - MAX_ERROR_CHARS).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn finds_the_summary_after_log_lines() {
        let log = format!(
            "{{\"level\":\"INFO\",\"fields\":{{\"message\":\"connecting\"}}}}\n\
             {{\"location\":\"s3://b/k.snap\",\"records\":10,\"stores\":2,\"bytes\":4096,\"sha256\":\"{SHA}\",\"createdAtUnixMs\":1700000000000,\"serverVersion\":\"0.1.0\",\"selectedStores\":null}}\n"
        );
        let summary = parse_summary(&log).expect("summary");
        assert_eq!(summary.location, "s3://b/k.snap");
        assert_eq!(
            (summary.records, summary.stores, summary.bytes),
            (10, 2, 4096)
        );
        assert_eq!(summary.created_at_unix_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn rejects_logs_without_a_valid_summary() {
        assert_eq!(parse_summary(""), None);
        assert_eq!(parse_summary("backup: /x\n  records: 3\n"), None);
        let bad_sha = r#"{"location":"x","records":1,"stores":1,"bytes":1,"sha256":"zz"}"#;
        assert_eq!(parse_summary(bad_sha), None);
    }

    #[test]
    fn long_errors_keep_their_end() {
        let message = format!("{}the real error", "x".repeat(5000));
        let cut = error_message(&message);
        assert!(cut.ends_with("the real error"));
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS + 1);
        assert_eq!(error_message("  short\n"), "short");
    }
}

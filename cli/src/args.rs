//! The command line. kubectl runs the plugin as `kubectl-drasi_store <args>`
//! for `kubectl drasi-store <args>`; the global flags follow kubectl's names.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-drasi_store",
    bin_name = "kubectl drasi-store",
    version,
    about = "Operate DrasiStateStores: status, backups, restore, export/import, pause, token rotation, support reports"
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the cluster and the store's server.
#[derive(Debug, Args, Default, Clone)]
pub struct KubeArgs {
    /// Namespace of the store (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config,
    /// then the in-cluster service account).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Reach the store's server at this base URL instead of through a
    /// port-forward to its pod (e.g. `http://orders.apps.svc:7070` from
    /// inside the cluster). The token still comes from the connection Secret.
    #[arg(long, global = true, value_name = "URL")]
    pub server_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Phase, conditions, pods, volumes, key counts and the last backup of a store.
    Status {
        store: String,
        #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Create a DrasiStateStoreBackup of a store.
    Backup {
        store: String,
        /// One of the store's `spec.backup.destinations` (default: the first).
        #[arg(long)]
        destination: Option<String>,
        /// Follow the backup until it is Completed (exit 0) or Failed (exit 1).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (`90s`, `10m`, `1h`, or seconds).
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        timeout: Duration,
    },
    /// Create a new store from a completed backup.
    Restore {
        /// The DrasiStateStoreBackup to restore.
        backup: String,
        /// Name of the new DrasiStateStore (must not exist).
        #[arg(long = "to", value_name = "NEW_STORE")]
        to: String,
    },
    /// Export some DrasiLib store_ids of a store into a snapshot file.
    Export {
        store: String,
        /// The store_ids to export, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        stores: Vec<String>,
        /// The snapshot file to write (must not exist).
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Replace the store_ids held by a snapshot file in a store.
    Import {
        store: String,
        /// A snapshot file written by `export` (or a backup).
        #[arg(short = 'i', long)]
        input: PathBuf,
    },
    /// Stop the operator from changing the store (`spec.paused: true`).
    Pause { store: String },
    /// Let the operator reconcile the store again (`spec.paused: false`).
    Resume { store: String },
    /// Start a zero-downtime rotation of the store's generated token.
    RotateToken { store: String },
    /// Write a support archive (store, backups, events, logs, objects,
    /// metrics; no Secrets, tokens redacted).
    Report {
        store: String,
        /// The archive to write, e.g. report.tar.gz (must not exist).
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Log lines per server container.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(i64).range(1..))]
        tail_lines: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// `90s`, `10m`, `1h`, `1h30m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use h, m or s)")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?}: a number must precede {c:?}"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("{text:?}: the last number has no unit (h, m or s)"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1h30").is_err());
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-drasi_store").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&[
            "status",
            "orders",
            "-n",
            "apps",
            "-o",
            "yaml",
            "--context",
            "kind",
        ])
        .unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("apps"));
        assert_eq!(cli.kube.context.as_deref(), Some("kind"));
        assert!(matches!(
            cli.command,
            Command::Status { ref store, output: OutputFormat::Yaml } if store == "orders"
        ));
        let cli = parse(&["-n", "apps", "pause", "orders"]).unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("apps"));
    }

    #[test]
    fn status_defaults_to_a_table_and_refuses_other_formats() {
        let cli = parse(&["status", "orders"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status {
                output: OutputFormat::Table,
                ..
            }
        ));
        assert!(parse(&["status", "orders", "-o", "wide"]).is_err());
    }

    #[test]
    fn export_splits_store_ids_on_commas() {
        let cli = parse(&[
            "export", "orders", "--stores", "a,b", "--stores", "c", "-o", "x.snap",
        ])
        .unwrap();
        let Command::Export { stores, output, .. } = cli.command else {
            panic!("not export");
        };
        assert_eq!(stores, ["a", "b", "c"]);
        assert_eq!(output, PathBuf::from("x.snap"));
        assert!(
            parse(&["export", "orders", "-o", "x.snap"]).is_err(),
            "--stores is required"
        );
    }

    #[test]
    fn restore_needs_a_target_and_backup_parses_its_timeout() {
        assert!(parse(&["restore", "b1"]).is_err());
        let cli = parse(&["restore", "b1", "--to", "orders-2"]).unwrap();
        assert!(
            matches!(cli.command, Command::Restore { ref backup, ref to } if backup == "b1" && to == "orders-2")
        );
        let cli = parse(&["backup", "orders", "--wait", "--timeout", "5m"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Backup { wait: true, timeout, destination: None, .. } if timeout == Duration::from_secs(300)
        ));
    }

    #[test]
    fn report_and_rotate_token_parse() {
        let cli = parse(&["report", "orders", "-o", "r.tar.gz"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Report {
                tail_lines: 2000,
                ..
            }
        ));
        assert!(parse(&["report", "orders", "-o", "r.tgz", "--tail-lines", "0"]).is_err());
        let cli = parse(&["rotate-token", "orders"]).unwrap();
        assert!(matches!(cli.command, Command::RotateToken { ref store } if store == "orders"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}

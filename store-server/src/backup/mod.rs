//! The data-protection subcommands of `drasi-store-server`: `backup`,
//! `export`, `restore`, `verify` (docs/backup.md).
//!
//! They are dispatched on the first argument, before the serve flags are
//! parsed, so that running the binary without a subcommand behaves exactly
//! as a plain server.

mod client;
mod fetch;
mod location;
mod push;
mod restore;
mod sink;
mod source;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use drasi_store_protocol::snapshot::{SnapshotHeader, SnapshotReader, SnapshotSummary};

pub use client::CONNECT_TIMEOUT;
pub use location::Location;
pub use restore::{DB_NAME, RESTORING_NAME, refuse_interrupted_restore};

/// First arguments that select a subcommand instead of serving.
pub const SUBCOMMANDS: &[&str] = &["backup", "export", "import", "restore", "verify"];

#[derive(Debug, Parser)]
#[command(
    name = "drasi-store-server",
    version,
    about = "Back up, restore and verify drasi-store snapshots"
)]
pub struct AdminCli {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Stream a consistent snapshot of a running server to a file or to
    /// s3://bucket/key. The destination appears only once the snapshot is
    /// complete and verified.
    Backup(BackupArgs),
    /// Like `backup`, for the given store_ids only.
    Export {
        #[command(flatten)]
        backup: BackupArgs,
        /// A store_id to export; repeat for several.
        #[arg(long = "store", required = true)]
        stores: Vec<String>,
    },
    /// Send a snapshot (file or s3://bucket/key) to a running server, which
    /// replaces exactly the store_ids it holds, all at once.
    Import {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        input: String,
    },
    /// Fill an empty data dir from a snapshot (file or s3://bucket/key).
    Restore {
        #[arg(long)]
        input: String,
        /// The server's data dir; must be empty or missing.
        #[arg(long, env = "DRASI_STORE_DATA_DIR")]
        data_dir: PathBuf,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check a snapshot completely; exit 0 only if it is intact.
    Verify {
        #[arg(long)]
        input: String,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach a running server.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:7070.
    #[arg(long)]
    pub url: String,
    /// File holding the bearer token (its first non-empty line).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for an https URL, in addition to the
    /// system roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// A file path or s3://bucket/key; must not exist yet.
    #[arg(long)]
    pub output: String,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// True when `args` (including the program name) start with a subcommand.
pub fn is_subcommand(args: &[std::ffi::OsString]) -> bool {
    args.get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| SUBCOMMANDS.contains(&a))
}

/// Runs a subcommand to completion: exit 0 on success, 1 with the error on
/// stderr otherwise.
pub fn main(cli: AdminCli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Backup(args) => {
            let json = args.json;
            let (location, header, summary) = fetch::backup(&args, &[]).await?;
            report(
                "backup written",
                &location.to_string(),
                &header,
                &summary,
                json,
            );
        }
        AdminCommand::Export { backup, stores } => {
            let json = backup.json;
            let (location, header, summary) = fetch::backup(&backup, &stores).await?;
            report(
                "export written",
                &location.to_string(),
                &header,
                &summary,
                json,
            );
        }
        AdminCommand::Import { server, input } => {
            let answer = push::import(&server, &input).await?;
            println!("{}", serde_json::to_string(&answer)?);
        }
        AdminCommand::Restore {
            input,
            data_dir,
            json,
        } => {
            let location = Location::parse(&input)?;
            let reader = source::open(&location).await?;
            let dir = data_dir.clone();
            let (header, summary) =
                tokio::task::spawn_blocking(move || restore::restore_into(&dir, reader))
                    .await
                    .context("restore task failed")?
                    .with_context(|| format!("restoring {location} into {}", data_dir.display()))?;
            report(
                &format!("restored into {}", data_dir.display()),
                &location.to_string(),
                &header,
                &summary,
                json,
            );
        }
        AdminCommand::Verify { input, json } => {
            let location = Location::parse(&input)?;
            let reader = source::open(&location).await?;
            let (header, summary) =
                tokio::task::spawn_blocking(move || SnapshotReader::new(reader)?.verify_to_end())
                    .await
                    .context("verify task failed")?
                    .with_context(|| format!("{location} is not an intact snapshot"))?;
            report(
                "snapshot intact",
                &location.to_string(),
                &header,
                &summary,
                json,
            );
        }
    }
    Ok(())
}

fn report(
    what: &str,
    location: &str,
    header: &SnapshotHeader,
    summary: &SnapshotSummary,
    json: bool,
) {
    if json {
        let value = serde_json::json!({
            "location": location,
            "records": summary.records,
            "stores": summary.stores,
            "bytes": summary.bytes,
            "sha256": summary.sha256_hex(),
            "createdAtUnixMs": header.created_at_unix_ms,
            "serverVersion": header.server_version,
            "selectedStores": header.selected_stores,
        });
        println!("{value}");
        return;
    }
    println!("{what}: {location}");
    println!("  records: {}", summary.records);
    println!("  stores:  {}", summary.stores);
    println!("  bytes:   {}", summary.bytes);
    println!("  sha256:  {}", summary.sha256_hex());
    if let Some(ms) = header.created_at_unix_ms {
        println!("  created: {ms} (unix ms)");
    }
    if let Some(v) = &header.server_version {
        println!("  server version: {v}");
    }
    if header.is_selective() {
        println!("  selected stores: {:?}", header.selected_stores);
    }
}

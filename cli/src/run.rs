//! Runs one parsed command line: the glue between [`crate::args`] and the
//! command modules, and what each command prints.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;

use crate::args::{Cli, Command};
use crate::cluster::Cluster;
use crate::{backup, pause, report, restore, rotate, server, status, transfer};

/// How often `backup --wait` looks at the backup.
const WAIT_POLL: Duration = Duration::from_secs(2);

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&cli.kube).await?;
    execute(&cluster, cli.command, &mut std::io::stdout()).await
}

/// Runs `command` against `cluster`, printing its result to `out`
/// (progress bars go to stderr).
pub async fn execute(
    cluster: &Cluster,
    command: Command,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        Command::Status { store, output } => {
            let report = status::collect(cluster, &store).await?;
            write!(out, "{}", status::render(&report, output)?)?;
        }
        Command::Backup {
            store,
            destination,
            wait,
            timeout,
        } => {
            let created = backup::create(cluster, &store, destination.as_deref()).await?;
            let name = kube::ResourceExt::name_any(&created);
            writeln!(out, "drasistatestorebackup.drasi.io/{name} created")?;
            if wait {
                // Each phase is printed as it is reached; a broken stdout
                // must not stop the wait, whose outcome is the exit code.
                backup::wait(cluster, &name, timeout, WAIT_POLL, |b| {
                    let _ = writeln!(out, "{}", backup::describe(b));
                    let _ = out.flush();
                })
                .await?;
            }
        }
        Command::Restore { backup, to } => {
            let restored = restore::restore(cluster, &backup, &to).await?;
            match &restored.spec_from {
                Some(source) => writeln!(
                    out,
                    "drasistatestore.drasi.io/{to} created from backup {backup} (spec copied from {source})"
                )?,
                None => writeln!(
                    out,
                    "drasistatestore.drasi.io/{to} created from backup {backup} (the backed-up store no longer exists: operator defaults apart from spec.restore)"
                )?,
            }
        }
        Command::Export {
            store,
            stores,
            output,
        } => {
            let target = cluster.store(&store).await?;
            let access = server::access(cluster, &target).await?;
            let bar = transfer::progress_bar(None, "exporting");
            let exported = transfer::export(&access, &stores, &output, &bar).await;
            bar.finish_and_clear();
            let exported = exported?;
            writeln!(
                out,
                "exported {} records of {} store_id(s) ({} bytes, sha256 {}) to {}",
                exported.summary.records,
                exported.summary.stores,
                exported.summary.bytes,
                exported.summary.sha256_hex(),
                exported.path.display()
            )?;
        }
        Command::Import { store, input } => {
            let target = cluster.store(&store).await?;
            let access = server::access(cluster, &target).await?;
            let bar = transfer::progress_bar(Some(0), "importing");
            let imported = transfer::import(&access, &input, &bar).await;
            bar.finish_and_clear();
            let imported = imported?;
            writeln!(
                out,
                "imported {} records into {} store_id(s) of {store}: {}",
                imported.records,
                imported.stores.len(),
                imported.stores.join(", ")
            )?;
        }
        Command::Pause { store } => {
            let changed = pause::set_paused(cluster, &store, true).await?;
            let what = if changed {
                "paused"
            } else {
                "was already paused"
            };
            writeln!(out, "drasistatestore.drasi.io/{store} {what}")?;
        }
        Command::Resume { store } => {
            let changed = pause::set_paused(cluster, &store, false).await?;
            let what = if changed { "resumed" } else { "was not paused" };
            writeln!(out, "drasistatestore.drasi.io/{store} {what}")?;
        }
        Command::RotateToken { store } => {
            let request = rotate::request(cluster, &store).await?;
            writeln!(
                out,
                "token rotation of {store} requested (trigger {})",
                request.trigger
            )?;
            if request.paused {
                writeln!(
                    out,
                    "the store is paused (spec.paused): the rotation starts once it is resumed"
                )?;
            }
            if let Some(stage) = request.in_flight {
                writeln!(
                    out,
                    "a rotation is in flight (stage {stage}); this one starts when it finishes"
                )?;
            }
            writeln!(
                out,
                "follow it: kubectl get events -n {} --field-selector involvedObject.name={store} | grep TokenRotation",
                cluster.namespace
            )?;
        }
        Command::Report {
            store,
            output,
            tail_lines,
        } => {
            let written = report::write(cluster, &store, tail_lines, &output)
                .await
                .with_context(|| format!("writing the report of {store}"))?;
            writeln!(
                out,
                "wrote {} ({} files)",
                written.path.display(),
                written.files.len()
            )?;
            for error in &written.errors {
                writeln!(out, "not collected: {error}")?;
            }
        }
    }
    Ok(())
}

//! `drasi-store-operator`: see `drasi-store-operator --help`.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use tokio::sync::watch;

use drasi_store_operator::cli::{self, Cli, Command, LogFormat, RenderArgs, RunArgs};
use drasi_store_operator::controller::{self, Context};
use drasi_store_operator::leader::{self, LeaderElectionConfig, LeaderExit};
use drasi_store_operator::metrics::{self, Health, Metrics};
use drasi_store_operator::{crd, rbac, render};

/// How long `--manage-crd` waits for the API server to serve the CRD.
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let result = match Cli::parse().into_command() {
        Command::Crd(args) => crd::crd_yaml_named(&args.name)
            .with_context(|| format!("no CustomResourceDefinition named {}", args.name))
            .and_then(|yaml| print_output(&yaml)),
        Command::Rbac => print_output(&rbac::cluster_role_rules_yaml()),
        Command::Render(args) => render_command(&args),
        // `run` logs its own errors through tracing.
        Command::Run(args) => return run_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes command output; a closed pipe (`... | head`) is not an error.
fn print_output(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

fn render_command(args: &RenderArgs) -> anyhow::Result<()> {
    let input = if args.file.as_os_str() == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading the DrasiStateStore from standard input")?;
        input
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let ctx = cli::build_context(&args.server_image, &args.allowed_images);
    let output = render::render(&input, &ctx)
        .with_context(|| format!("rendering {}", args.file.display()))?;
    print_output(&output)
}

fn run_command(args: RunArgs) -> ExitCode {
    init_logging(args.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => {
            tracing::info!("operator stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "operator stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting drasi-store-operator"
    );
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or kubeconfig)")?;
    if args.manage_crd {
        controller::manage_crd::apply_crd(&client, CRD_ESTABLISHED_TIMEOUT).await?;
    }

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, finishing in-flight reconciles");
        let _ = shutdown_tx.send(true);
    });
    let server = tokio::spawn(metrics::serve(
        args.metrics_addr,
        metrics.clone(),
        health.clone(),
        shutdown_signal(shutdown_rx.clone()),
    ));

    let identity = leader::holder_identity(
        std::env::var("POD_NAME").ok().as_deref(),
        hostname().as_deref(),
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        cli::build_context(&args.server_image, &args.allowed_images),
        metrics,
        Some(identity.clone()),
    ));
    let watch_namespace = args.watch_namespace().map(str::to_string);
    match &watch_namespace {
        Some(ns) => tracing::info!(namespace = %ns, "watching one namespace"),
        None => tracing::info!("watching all namespaces"),
    }

    let result = if args.leader_elect {
        let config = LeaderElectionConfig {
            namespace: args
                .leader_election_namespace(std::env::var("POD_NAMESPACE").ok().as_deref()),
            lease_name: args.leader_election_lease.clone(),
            identity,
        };
        // A standby is healthy and ready to take over; it reports ready.
        health.set_ready(true);
        let leader_health = health.clone();
        leader::run_with_leader_election(
            client,
            config,
            shutdown_rx.clone(),
            || leader_health.set_ready(false),
            |stop| {
                controller::run(
                    ctx,
                    watch_namespace.as_deref(),
                    health.clone(),
                    shutdown_signal(stop),
                )
            },
        )
        .await
        .map(|exit| {
            if exit == LeaderExit::ShutdownWhileStandby {
                tracing::info!("shut down while standby");
            }
        })
        .map_err(anyhow::Error::from)
    } else {
        controller::run(
            ctx,
            watch_namespace.as_deref(),
            health.clone(),
            shutdown_signal(shutdown_rx.clone()),
        )
        .await;
        Ok(())
    };

    // The controller is done (shutdown or lost leadership): stop serving.
    health.set_ready(false);
    server.abort();
    let _ = server.await;
    result
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn shutdown_signal(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                tokio::select! {
                    _ = sigterm.recv() => {}
                    () = ctrl_c => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

//! Command line of the `drasi-store-operator` binary.
//!
//! `run` is the default so the container image needs no arguments; every
//! `run` flag can also come from `DRASI_OPERATOR_<FLAG>` so the Helm chart can
//! configure the Deployment through `env:` without rewriting `args:`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Image of the store server used when a `DrasiStateStore` has no `spec.image`.
/// Pinned to this crate's version so operator and server are released together.
pub const DEFAULT_SERVER_IMAGE: &str = concat!(
    "ghcr.io/drasi-project/drasi-store-server:",
    env!("CARGO_PKG_VERSION")
);

/// Lease used for leader election when `--leader-election-lease` is not given.
pub const DEFAULT_LEASE_NAME: &str = "drasi-store-operator-leader";

#[derive(Debug, Parser)]
#[command(
    name = "drasi-store-operator",
    version,
    about = "Reconciles DrasiStateStore resources into drasi-store-server StatefulSets",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Flags of `run`, accepted without the subcommand because `run` is the default.
    #[command(flatten)]
    run: RunArgs,
}

impl Cli {
    /// The subcommand to execute; `run` when none was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print a CustomResourceDefinition as YAML (DrasiStateStore's by default).
    Crd(CrdArgs),
    /// Print every object the operator would apply for a DrasiStateStore, without a cluster.
    Render(RenderArgs),
    /// Print the ClusterRole rules the operator needs, as YAML.
    Rbac,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Namespace to watch; all namespaces when absent or empty.
    #[arg(long, env = "DRASI_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Default drasi-store-server image for stores without `spec.image`.
    #[arg(long, env = "DRASI_OPERATOR_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    pub server_image: String,

    /// Images a store may run (`spec.image`), comma-separated: repositories
    /// (any tag or digest of exactly that repository) or globs with `*`
    /// [default: the repository of --server-image].
    #[arg(long, env = "DRASI_OPERATOR_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,

    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints.
    #[arg(
        long,
        env = "DRASI_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,

    /// Reconcile only while holding a Lease, so several replicas never reconcile at once.
    #[arg(long, env = "DRASI_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Namespace of the leader election Lease [default: $POD_NAMESPACE, else `default`].
    #[arg(long, env = "DRASI_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader election Lease.
    #[arg(long, env = "DRASI_OPERATOR_LEADER_ELECTION_LEASE", default_value = DEFAULT_LEASE_NAME)]
    pub leader_election_lease: String,

    /// Apply the operator's own CRD at startup (Helm never upgrades CRDs).
    #[arg(long, env = "DRASI_OPERATOR_MANAGE_CRD")]
    pub manage_crd: bool,

    /// Log output format.
    #[arg(long, env = "DRASI_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The namespace to watch, `None` meaning all. An empty value counts as
    /// unset because charts commonly template `value: ""` for "not configured".
    pub fn watch_namespace(&self) -> Option<&str> {
        non_empty(self.watch_namespace.as_deref())
    }

    /// Namespace of the Lease: the flag, else `POD_NAMESPACE` (the downward API
    /// value, so the Lease lives next to the operator), else `default`.
    pub fn leader_election_namespace(&self, pod_namespace: Option<&str>) -> String {
        non_empty(self.leader_election_namespace.as_deref())
            .or(non_empty(pod_namespace))
            .unwrap_or("default")
            .to_string()
    }
}

#[derive(Debug, Clone, Args)]
pub struct CrdArgs {
    /// `metadata.name` of the CRD to print, e.g. `drasistatestorebackups.drasi.io`.
    #[arg(long, default_value = "drasistatestores.drasi.io")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// DrasiStateStore manifest to render, `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Default drasi-store-server image for stores without `spec.image`.
    #[arg(long, env = "DRASI_OPERATOR_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    pub server_image: String,
    /// Images a store may run (`spec.image`), comma-separated: repositories
    /// (any tag or digest of exactly that repository) or globs with `*`
    /// [default: the repository of --server-image].
    #[arg(long, env = "DRASI_OPERATOR_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The build settings of `server_image` and `allowed_images` flags.
pub fn build_context(
    server_image: &str,
    allowed_images: &[String],
) -> crate::builders::BuildContext {
    crate::builders::BuildContext {
        server_image: server_image.to_owned(),
        allowed_images: crate::builders::ImagePolicy::new(allowed_images)
            .or_repository_of(server_image),
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(args)
            .expect("valid command line")
            .into_command()
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args) {
            Command::Run(run) => run,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn run_is_the_default_with_documented_defaults() {
        let run = run_args(&["drasi-store-operator"]);
        assert_eq!(run.watch_namespace(), None);
        assert_eq!(
            run.server_image,
            format!(
                "ghcr.io/drasi-project/drasi-store-server:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(run.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert!(!run.leader_elect);
        assert!(!run.manage_crd);
        assert_eq!(run.leader_election_lease, "drasi-store-operator-leader");
        assert_eq!(run.log_format, LogFormat::Text);
    }

    #[test]
    fn run_flags_are_accepted_with_and_without_the_subcommand() {
        for prefix in [
            &["drasi-store-operator"][..],
            &["drasi-store-operator", "run"][..],
        ] {
            let mut args = prefix.to_vec();
            args.extend([
                "--watch-namespace",
                "stores",
                "--server-image",
                "registry.local/server:dev",
                "--allowed-images",
                "registry.local/server, registry.local/team/*",
                "--metrics-addr",
                "127.0.0.1:9090",
                "--leader-elect",
                "--leader-election-namespace",
                "ops",
                "--leader-election-lease",
                "my-lease",
                "--manage-crd",
                "--log-format",
                "json",
            ]);
            let run = run_args(&args);
            assert_eq!(run.watch_namespace(), Some("stores"));
            assert_eq!(run.server_image, "registry.local/server:dev");
            let build = build_context(&run.server_image, &run.allowed_images);
            assert!(build.allowed_images.allows("registry.local/team/x:1"));
            assert!(!build.allowed_images.allows("registry.local/other:1"));
            assert_eq!(run.metrics_addr, "127.0.0.1:9090".parse().unwrap());
            assert!(run.leader_elect);
            assert!(run.manage_crd);
            assert_eq!(run.leader_election_namespace(Some("pod-ns")), "ops");
            assert_eq!(run.leader_election_lease, "my-lease");
            assert_eq!(run.log_format, LogFormat::Json);
        }
    }

    #[test]
    fn without_allowed_images_only_the_default_repository_is_allowed() {
        let run = run_args(&["drasi-store-operator", "--server-image", "reg/server:2"]);
        let build = build_context(&run.server_image, &run.allowed_images);
        assert!(build.allowed_images.allows("reg/server:3"));
        assert!(!build.allowed_images.allows("reg/other:3"));
    }

    #[test]
    fn empty_watch_namespace_means_all_namespaces() {
        let run = run_args(&["drasi-store-operator", "--watch-namespace", ""]);
        assert_eq!(run.watch_namespace(), None);
    }

    #[test]
    fn lease_namespace_falls_back_to_pod_namespace_then_default() {
        let run = run_args(&["drasi-store-operator"]);
        assert_eq!(
            run.leader_election_namespace(Some("operators")),
            "operators"
        );
        assert_eq!(run.leader_election_namespace(Some("")), "default");
        assert_eq!(run.leader_election_namespace(None), "default");
    }

    #[test]
    fn every_run_flag_reads_its_drasi_operator_env_var() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        let mut checked = 0;
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let expected = format!(
                "DRASI_OPERATOR_{}",
                long.to_ascii_uppercase().replace('-', "_")
            );
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env.as_deref(), Some(expected.as_str()), "--{long}");
            checked += 1;
        }
        assert_eq!(checked, 9, "every documented run flag is checked");
    }

    #[test]
    fn other_subcommands_parse() {
        assert!(matches!(
            parse(&["drasi-store-operator", "crd"]),
            Command::Crd(CrdArgs { name }) if name == "drasistatestores.drasi.io"
        ));
        assert!(matches!(
            parse(&["drasi-store-operator", "rbac"]),
            Command::Rbac
        ));
        match parse(&["drasi-store-operator", "render", "-f", "-"]) {
            Command::Render(render) => {
                assert_eq!(render.file, PathBuf::from("-"));
                assert_eq!(render.server_image, DEFAULT_SERVER_IMAGE);
            }
            other => panic!("expected render, got {other:?}"),
        }
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(Cli::try_parse_from(["drasi-store-operator", "--log-format", "xml"]).is_err());
        assert!(Cli::try_parse_from(["drasi-store-operator", "--metrics-addr", "nope"]).is_err());
        assert!(Cli::try_parse_from(["drasi-store-operator", "render"]).is_err());
        assert!(Cli::try_parse_from(["drasi-store-operator", "--leader-elect", "crd"]).is_err());
    }
}

//! Command-line flags. Every flag can also come from `DRASI_STORE_<FLAG>`
//! (the operator configures the server through the environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use drasi_store_protocol::Limits;
use drasi_store_protocol::limits::{
    DEFAULT_MAX_BATCH_ENTRIES, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
};

/// Default redb page cache. Small on purpose: the hot working set of
/// checkpoint-style workloads is tiny, and the RSS budget of the pod
/// (see docs/server.md) must hold with 100k distinct store_ids.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    /// Every acknowledged write is fsynced (one fsync per commit group).
    Immediate,
    /// Writes are acknowledged before they are fsynced; a flush happens at
    /// least every second, on `/v1/sync` and at shutdown.
    Eventual,
}

impl From<DurabilityMode> for drasi_store_protocol::Durability {
    fn from(mode: DurabilityMode) -> Self {
        match mode {
            DurabilityMode::Immediate => Self::Immediate,
            DurabilityMode::Eventual => Self::Eventual,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "drasi-store-server",
    version,
    about = "Durable redb-backed state store for DrasiLib, served over HTTP"
)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (logged at startup).
    #[arg(long, env = "DRASI_STORE_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,

    /// Directory holding the database file `state.redb`.
    #[arg(
        long,
        env = "DRASI_STORE_DATA_DIR",
        default_value = "./drasi-store-data"
    )]
    pub data_dir: PathBuf,

    #[arg(long, env = "DRASI_STORE_DURABILITY", value_enum, default_value_t = DurabilityMode::Immediate)]
    pub durability: DurabilityMode,

    /// With `--durability immediate`: acknowledge a commit group once it
    /// is synced to the commit journal (`state.journal`, one sequential
    /// write) and checkpoint redb durably in the background, at least every
    /// second. `false` makes every group a durable redb commit (slower; the
    /// same guarantee). A journal left by an earlier run is replayed either
    /// way.
    #[arg(
        long,
        env = "DRASI_STORE_JOURNAL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub journal: bool,

    /// File with bearer tokens, one per line; re-read when its content changes.
    #[arg(long, env = "DRASI_STORE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Serve without authentication. Required when no token file is given.
    #[arg(
        long,
        env = "DRASI_STORE_INSECURE_NO_AUTH",
        conflicts_with = "auth_token_file"
    )]
    pub insecure_no_auth: bool,

    /// PEM certificate chain; enables TLS together with `--tls-key-file`.
    /// Both files are re-read when they change (certificate renewal).
    #[arg(long, env = "DRASI_STORE_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "DRASI_STORE_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Largest store_id or key, in bytes.
    #[arg(long, env = "DRASI_STORE_MAX_KEY_BYTES", default_value_t = DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,

    /// Largest single value, in bytes.
    #[arg(long, env = "DRASI_STORE_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,

    /// Most entries in one batch request.
    #[arg(long, env = "DRASI_STORE_MAX_BATCH_ENTRIES", default_value_t = DEFAULT_MAX_BATCH_ENTRIES)]
    pub max_batch_entries: usize,

    /// Largest batch request body, in bytes.
    #[arg(long, env = "DRASI_STORE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Largest `get_many` answer, in bytes; a larger one is refused with
    /// `413 response_too_large` before it is built.
    #[arg(long, env = "DRASI_STORE_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_response_bytes: usize,

    /// Most bytes of request bodies held at once, over all requests; a
    /// request that does not fit gets `503 unavailable` with `Retry-After`.
    #[arg(
        long,
        env = "DRASI_STORE_MAX_INFLIGHT_BODY_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub max_inflight_body_bytes: usize,

    /// redb page cache size, in bytes.
    #[arg(long, env = "DRASI_STORE_CACHE_BYTES", default_value_t = DEFAULT_CACHE_BYTES)]
    pub cache_bytes: usize,

    #[arg(long, env = "DRASI_STORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long a client may take to send request headers and body (408 after).
    #[arg(
        long,
        env = "DRASI_STORE_REQUEST_BODY_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_body_timeout_ms: u64,

    /// Most connections served at once; a small reserve beyond it answers
    /// only the health probes. Lowered at startup when the open-file limit
    /// cannot hold that many.
    #[arg(long, env = "DRASI_STORE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Close a connection that had no request in flight for this long.
    #[arg(long, env = "DRASI_STORE_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub idle_timeout_ms: u64,

    /// How long the database may stay closed after an I/O error (e.g. a
    /// full disk) while the server tries to reopen it, before `/healthz`
    /// fails so that the pod is restarted.
    #[arg(
        long,
        env = "DRASI_STORE_DB_RECOVERY_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub db_recovery_timeout_ms: u64,

    /// This node's id in a replicated store (the StatefulSet ordinal).
    /// Required with `--peers`.
    #[arg(long, env = "DRASI_STORE_NODE_ID")]
    pub node_id: Option<u64>,

    /// Every voter of a replicated store, this node included:
    /// `<id>=<host:port>,...` (the peer addresses). Without it the server is
    /// a single node. See docs/replication.md.
    #[arg(long, env = "DRASI_STORE_PEERS", value_parser = crate::replication::Peers::parse)]
    pub peers: Option<crate::replication::Peers>,

    /// Where the peer (Raft) listener binds; only used with `--peers`.
    #[arg(long, env = "DRASI_STORE_PEER_LISTEN", default_value = "0.0.0.0:7071")]
    pub peer_listen: SocketAddr,

    /// File with the peer tokens, one per line (the first is the one this
    /// node sends); a different secret from the client tokens. Required
    /// with `--peers` unless `--insecure-no-auth`.
    #[arg(long, env = "DRASI_STORE_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,

    /// PEM file with the CA certificate(s) that signed every node's
    /// certificate. With `--tls-cert-file` and `--peers`, peer traffic then
    /// uses mutual TLS: each node serves its certificate on the peer port,
    /// presents it when it calls a peer, and accepts only peers whose
    /// certificate this CA signed (so `--peer-token-file` becomes optional).
    #[arg(long, env = "DRASI_STORE_PEER_TLS_CA_FILE")]
    pub peer_tls_ca_file: Option<PathBuf>,

    /// Raft log entries between snapshots of a replicated store. Entries a
    /// snapshot holds are purged (all but the last tenth, at most 10,000,
    /// so a briefly stopped replica catches up from the log); a replica
    /// that fell further behind is rebuilt from the snapshot.
    #[arg(
        long,
        env = "DRASI_STORE_RAFT_SNAPSHOT_LOGS",
        default_value_t = 100_000
    )]
    pub raft_snapshot_logs: u64,

    /// How long shutdown waits for in-flight requests before closing them.
    #[arg(
        long,
        env = "DRASI_STORE_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub shutdown_timeout_ms: u64,
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_batch_entries: self.max_batch_entries,
            max_body_bytes: self.max_body_bytes,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("state.redb")
    }

    pub fn request_body_timeout(&self) -> Duration {
        Duration::from_millis(self.request_body_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn db_recovery_timeout(&self) -> Duration {
        Duration::from_millis(self.db_recovery_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.auth_token_file.is_none() && !self.insecure_no_auth {
            anyhow::bail!(
                "no --auth-token-file given: refusing to serve without authentication \
                 (pass --insecure-no-auth to do so deliberately)"
            );
        }
        if self.max_key_bytes == 0 || self.max_batch_entries == 0 || self.max_body_bytes == 0 {
            anyhow::bail!("--max-key-bytes, --max-batch-entries and --max-body-bytes must be > 0");
        }
        // The protocol frames lengths as u32.
        if self.max_value_bytes > u32::MAX as usize || self.max_body_bytes > u32::MAX as usize {
            anyhow::bail!("--max-value-bytes and --max-body-bytes must fit in 32 bits");
        }
        if self.request_body_timeout_ms == 0 {
            anyhow::bail!("--request-body-timeout-ms must be > 0");
        }
        if self.max_response_bytes == 0 || self.max_inflight_body_bytes == 0 {
            anyhow::bail!("--max-response-bytes and --max-inflight-body-bytes must be > 0");
        }
        if self.max_inflight_body_bytes < self.max_body_bytes
            || self.max_inflight_body_bytes < self.max_value_bytes
        {
            anyhow::bail!(
                "--max-inflight-body-bytes must be at least --max-body-bytes and \
                 --max-value-bytes, or the largest request could never be read"
            );
        }
        if let Some(peers) = &self.peers {
            let Some(id) = self.node_id else {
                anyhow::bail!("--peers needs --node-id (this node's id in the list)");
            };
            if peers.address(id).is_none() {
                anyhow::bail!(
                    "--node-id {id} is not one of the --peers ids ({})",
                    peers
                        .ids()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if self.peer_tls_ca_file.is_some() && self.tls_cert_file.is_none() {
                anyhow::bail!(
                    "--peer-tls-ca-file needs --tls-cert-file and --tls-key-file: a node \
                     presents its own certificate to its peers"
                );
            }
            if self.peer_token_file.is_none()
                && self.peer_tls_ca_file.is_none()
                && !self.insecure_no_auth
            {
                anyhow::bail!(
                    "--peers needs --peer-token-file (or mutual TLS: --peer-tls-ca-file with \
                     --tls-cert-file): refusing to let peers talk unauthenticated (pass \
                     --insecure-no-auth to do so deliberately)"
                );
            }
            if self.raft_snapshot_logs == 0 {
                anyhow::bail!("--raft-snapshot-logs must be > 0");
            }
        } else if self.node_id.is_some() {
            anyhow::bail!("--node-id is only meaningful with --peers");
        } else if self.peer_tls_ca_file.is_some() {
            anyhow::bail!("--peer-tls-ca-file is only meaningful with --peers");
        }
        if self.max_connections == 0 || self.idle_timeout_ms == 0 {
            anyhow::bail!("--max-connections and --idle-timeout-ms must be > 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::parse_from(["drasi-store-server", "--insecure-no-auth"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:7070");
        assert_eq!(c.db_path(), PathBuf::from("./drasi-store-data/state.redb"));
        assert_eq!(c.durability, DurabilityMode::Immediate);
        assert_eq!(c.limits(), Limits::default());
        c.validate().unwrap();
    }

    #[test]
    fn refuses_to_run_without_auth() {
        let c = Config::parse_from(["drasi-store-server"]);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--insecure-no-auth"), "{err}");
    }

    #[test]
    fn peer_mutual_tls_needs_the_node_certificate_and_replaces_the_peer_token() {
        let base = [
            "x",
            "--auth-token-file",
            "t",
            "--peers",
            "0=a:7071,1=b:7071,2=c:7071",
            "--node-id",
            "0",
        ];
        let with = |extra: &[&str]| {
            Config::parse_from(base.iter().chain(extra.iter()).copied()).validate()
        };
        let err = with(&[]).unwrap_err().to_string();
        assert!(err.contains("--peer-token-file"), "{err}");
        let err = with(&["--peer-tls-ca-file", "ca.pem"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --tls-cert-file"), "{err}");
        with(&[
            "--peer-tls-ca-file",
            "ca.pem",
            "--tls-cert-file",
            "c.pem",
            "--tls-key-file",
            "k.pem",
        ])
        .unwrap();
        let single =
            Config::parse_from(["x", "--insecure-no-auth", "--peer-tls-ca-file", "ca.pem"]);
        let err = single.validate().unwrap_err().to_string();
        assert!(err.contains("only meaningful with --peers"), "{err}");
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let r = Config::try_parse_from(["x", "--insecure-no-auth", "--tls-cert-file", "c.pem"]);
        assert!(r.is_err());
    }
}

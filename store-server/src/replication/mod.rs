//! Replication on Raft (openraft 0.9). docs/replication.md is the design
//! and lists what exists.
//!
//! [`LogStore`] keeps the Raft log in its own redb file, [`StateMachine`]
//! applies one group per entry to the engine's database (snapshots are the
//! backup stream), [`network`] and [`peer_api`] carry the RPCs between
//! nodes, and [`ReplicaNode`] is what the request path talks to.

mod hand_over;
mod log_store;
mod network;
mod node;
mod peer_api;
mod peers;
mod state_machine;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::http::auth::TokenSet;
pub use log_store::{LOG_FILE_NAME, LogStore};
pub(crate) use node::NotReady;
pub use node::ReplicaNode;
pub use peers::Peers;
pub use state_machine::StateMachine;

/// A node's id: the StatefulSet ordinal of its pod (`--node-id`).
pub type NodeId = u64;

/// One group-commit group, the payload of one log entry.
///
/// `group` holds the group's write requests in the commit journal's record
/// encoding (`engine::journal::encode`); the log store treats it as opaque.
/// It is base64 in JSON (log entries and peer requests), not an array of
/// numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPayload {
    #[serde(with = "base64_bytes")]
    pub group: Vec<u8>,
}

/// The answers to one applied group, one per request
/// (`state_machine::encode_replies`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupResult {
    #[serde(with = "base64_bytes")]
    pub replies: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

openraft::declare_raft_types!(
    /// The Raft types of a replicated store. Members are addressed by
    /// [`openraft::BasicNode`], whose `addr` is the peer `host:port`.
    /// Snapshots are files in the data directory holding the backup
    /// snapshot stream, so a large one is never held in memory.
    pub TypeConfig:
        D = LogPayload,
        R = GroupResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
);

/// The longest a follower waits for a heartbeat before it stands for
/// election.
pub(crate) const ELECTION_TIMEOUT_MAX_MS: u64 = 1000;
const ELECTION_TIMEOUT_MIN_MS: u64 = 500;
/// How often a leader tells its followers it is alive.
pub(crate) const HEARTBEAT_INTERVAL_MS: u64 = 150;

/// Timing of elections and heartbeats; docs/replication.md explains the
/// values (a new leader within a few seconds of losing one, no needless
/// elections on a noisy node).
fn raft_config(snapshot_logs: u64) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "drasi-store".into(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        install_snapshot_timeout: 30_000,
        max_in_snapshot_log_to_keep: (snapshot_logs / 10).min(10_000),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs),
        max_payload_entries: 64,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// How a replicated node runs (from the flags).
pub struct Options {
    pub node_id: NodeId,
    pub peers: Peers,
    pub peer_listen: SocketAddr,
    /// `None` with `--insecure-no-auth`, or with mutual TLS alone.
    pub peer_tokens: Option<Arc<TokenSet>>,
    /// Mutual TLS on the peer port (`--peer-tls-ca-file` with TLS on).
    pub peer_tls: Option<PeerTls>,
    pub snapshot_logs: u64,
}

/// Both ends of mutual TLS between peers: the peer listener's acceptor
/// (asks for and verifies client certificates) and the configuration peer
/// calls go out with (verifies the server, presents this node's
/// certificate).
pub struct PeerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub client: rustls::ClientConfig,
}

/// A running replicated node: Raft, the peer listener, and how to stop them.
pub struct Replication {
    pub node: Arc<ReplicaNode>,
    pub peer_addr: SocketAddr,
    stop: watch::Sender<bool>,
    listener: JoinHandle<()>,
}

impl Replication {
    /// Starts Raft over the engine's database and binds the peer listener.
    /// The node with the lowest id initializes a cluster that has never
    /// been initialized; the others wait to be contacted.
    pub async fn start(engine: &Arc<Engine>, options: Options) -> anyhow::Result<Replication> {
        let Options {
            node_id,
            peers,
            peer_listen,
            peer_tokens,
            peer_tls,
            snapshot_logs,
        } = options;
        let (acceptor, client_tls) = match peer_tls {
            Some(PeerTls { acceptor, client }) => (Some(acceptor), Some(client)),
            None => (None, None),
        };
        let db = engine.db_slot();
        let dir = db
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let log_path = dir.join(LOG_FILE_NAME);
        let log = tokio::task::spawn_blocking(move || LogStore::open(&log_path))
            .await
            .context("opening the Raft log")??;
        let weak = Arc::downgrade(engine);
        // A node that starts with nothing (a new pod, or a lost volume)
        // must not help elect a leader that might lack committed entries
        // until it holds them itself; see `ReplicaNode::may_vote`.
        let fresh = {
            use openraft::storage::RaftLogStorage as _;
            let mut probe = log.clone();
            let state = probe.get_log_state().await?;
            let vote = probe.read_vote().await?;
            state.last_log_id.is_none() && state.last_purged_log_id.is_none() && vote.is_none()
        };
        if fresh && state_machine::holds_unreplicated_data(&db)? {
            anyhow::bail!(
                "{} holds data written by a single-node server (stores or write-ahead logs, and \
                 no Raft state); a replicated node must start on an empty data directory or on \
                 its own replicated data (moving a single-node store into a replicated one is \
                 not supported yet)",
                db.path().display()
            );
        }
        let state_machine = StateMachine::new(db).on_garbage(move || {
            if let Some(engine) = weak.upgrade() {
                engine.collect_garbage();
            }
        });
        // Calls to peers leave from the peer listener's address when it is
        // a specific one, so peer traffic stays on the peer interface.
        let local = Some(peer_listen.ip()).filter(|ip| !ip.is_unspecified());
        let client = network::PeerClient::new(peer_tokens.clone(), local, client_tls)?;
        let network = network::Network {
            client: client.clone(),
        };
        let raft = openraft::Raft::new(
            node_id,
            Arc::new(raft_config(snapshot_logs)?),
            network,
            log.clone(),
            state_machine,
        )
        .await
        .context("starting Raft")?;
        if fresh {
            tracing::info!(
                node_id,
                "starting with an empty log: this node votes only for candidates of a new \
                 cluster until it has caught up with a leader"
            );
        }
        let node = ReplicaNode::start(raft, node_id, client, log, fresh);
        let (stop, stop_rx) = watch::channel(false);
        let (peer_addr, listener) =
            peer_api::serve(peer_listen, node.clone(), peer_tokens, acceptor, stop_rx).await?;
        let first = peers.ids().next();
        if first == Some(node_id) && !node.raft.is_initialized().await? {
            match node.raft.initialize(peers.members()).await {
                Ok(()) => tracing::info!(peers = %peers, "initialized the cluster"),
                // Another start got there first: nothing to do.
                Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => {}
                Err(err) => return Err(err).context("initializing the cluster"),
            }
        }
        tracing::info!(node_id, peer_addr = %peer_addr, peers = %peers, "replication started");
        Ok(Replication {
            node,
            peer_addr,
            stop,
            listener,
        })
    }

    /// Stops Raft and the peer listener.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(err) = self.node.raft.shutdown().await {
            tracing::warn!(error = %err, "raft did not stop cleanly");
        }
        let _ = self.listener.await;
    }
}

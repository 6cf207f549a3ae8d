//! A replicated node: the Raft instance plus what the request path needs
//! from it. Writes are grouped the way the single-node writer groups them
//! (one group = one log entry), proposed on the leader or forwarded to it,
//! and answered only once the entry is committed (held durably by a
//! majority) and applied. Reads wait behind a read index confirmed by a
//! quorum. docs/replication.md has the reasoning.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{LogId, Raft, ServerState};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::network::{PeerCallError, PeerClient, routes};
use super::state_machine::decode_replies;
use drasi_store_protocol::{ClusterInfo, ClusterMember, ClusterRole};

use super::{GroupResult, LogPayload, NodeId, TypeConfig};
use crate::engine::{EngineError, EngineResult, Reply, WriteOp, journal};

/// Most requests and payload bytes in one proposed group: smaller than the
/// single-node writer's group, since an entry also travels to every peer
/// in one append request.
const MAX_GROUP_OPS: usize = 1024;
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Groups being replicated at once: the next group forms while earlier
/// ones replicate, and memory stays bounded under a flood.
const MAX_INFLIGHT_GROUPS: usize = 8;
/// Writes waiting to join a group.
const QUEUE_CAPACITY: usize = 8192;
/// The longest a write or a read index waits for the cluster. A leader cut
/// off from its majority never commits; its clients get a `503` after
/// this, never an acknowledgement.
pub(crate) const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);

type Answers = oneshot::Sender<Vec<EngineResult<Reply>>>;

struct Proposal {
    ops: Vec<WriteOp>,
    answers: Answers,
}

pub struct ReplicaNode {
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) id: NodeId,
    pub(super) client: PeerClient,
    queue: mpsc::Sender<Proposal>,
    log: super::LogStore,
    /// Elections and leadership (openraft 0.9 counts no elections; this
    /// watches its metrics for the transitions).
    pub(super) transitions: Arc<Transitions>,
    /// Started with an empty log and not caught up with a leader yet.
    pub(super) rejoining: std::sync::atomic::AtomicBool,
    /// True while this leader hands leadership over (`hand_over`).
    pub(super) handing_over: std::sync::atomic::AtomicBool,
    /// Every proposal holds it shared until its entry is committed; a
    /// hand-over holds it exclusively, so that it starts from a log no
    /// proposal is still adding to, and writes wait meanwhile.
    pub(super) gate: tokio::sync::RwLock<()>,
}

impl ReplicaNode {
    /// Wraps a started Raft instance and starts the grouping task.
    pub(crate) fn start(
        raft: Raft<TypeConfig>,
        id: NodeId,
        client: PeerClient,
        log: super::LogStore,
        fresh: bool,
    ) -> Arc<ReplicaNode> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let transitions = Arc::new(Transitions::default());
        tokio::spawn(watch_transitions(raft.metrics(), transitions.clone()));
        let node = Arc::new(ReplicaNode {
            raft,
            id,
            client,
            queue,
            log,
            transitions,
            rejoining: std::sync::atomic::AtomicBool::new(fresh),
            handing_over: std::sync::atomic::AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
        });
        tokio::spawn(group_loop(Arc::downgrade(&node), rx));
        if fresh {
            tokio::spawn(watch_catch_up(Arc::downgrade(&node)));
        }
        node
    }

    /// Whether this node, having started with an empty log, now holds
    /// everything a leader told it is committed (then it may vote again).
    pub(super) fn caught_up(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let committed = self.log.committed().map(|id| id.index);
        let applied = m.last_applied.map(|id| id.index);
        m.current_leader.is_some() && committed.is_some() && applied >= committed
    }

    /// Whether this node may answer a vote request from a candidate whose
    /// log ends at `candidate_last_index`.
    ///
    /// A node that started with an empty log (a lost volume) has forgotten
    /// both its log and its vote. Voting then could elect a candidate that
    /// lacks entries this node had acknowledged to a leader, losing
    /// committed writes, or vote twice in one term. So until it has
    /// applied everything a leader told it is committed, it votes only in
    /// a brand new cluster (a candidate whose log holds nothing but the
    /// initial membership, index 0), which is what lets a new cluster of
    /// empty nodes elect its first leader.
    pub(crate) fn may_vote(&self, candidate_last_index: Option<u64>) -> bool {
        use std::sync::atomic::Ordering;
        if !self.rejoining.load(Ordering::Acquire) {
            return true;
        }
        if self.caught_up() {
            self.done_rejoining();
            return true;
        }
        candidate_last_index.unwrap_or(0) == 0
    }

    fn done_rejoining(&self) {
        if self
            .rejoining
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::info!(
                node_id = self.id,
                "caught up with the leader after starting empty; voting again"
            );
        }
    }

    /// Elections this node started since it started.
    pub(crate) fn elections(&self) -> u64 {
        self.transitions
            .elections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes `ops` (in order, in one group) and answers each.
    pub(crate) async fn write(&self, ops: Vec<WriteOp>) -> Vec<EngineResult<Reply>> {
        let count = ops.len();
        let refused = ops.iter().find_map(|op| match op {
            WriteOp::Import(_) => Some("importing a snapshot into a running replicated store"),
            // A replica rebuilt from a Raft snapshot would come back
            // without its write-ahead logs (the snapshot stream carries
            // key-value stores only), so WAL writes are refused rather
            // than acknowledged and later lost.
            WriteOp::Wal(_) => Some(
                "the write-ahead log on a replicated store (Raft snapshots do not carry \
                 write-ahead logs yet; use a single-replica store for it)",
            ),
            op if journal::encode(std::iter::once(op)).is_none() => {
                Some("this operation on a replicated store")
            }
            _ => None,
        });
        if let Some(what) = refused {
            return vec![Err(EngineError::NotReplicated { what }); count];
        }
        let (answers, rx) = oneshot::channel();
        if let Err(err) = self.queue.try_send(Proposal { ops, answers }) {
            let e = match err {
                mpsc::error::TrySendError::Full(_) => EngineError::Busy {
                    capacity: QUEUE_CAPACITY,
                },
                mpsc::error::TrySendError::Closed(_) => EngineError::Unavailable,
            };
            return vec![Err(e); count];
        }
        rx.await
            .unwrap_or_else(|_| vec![Err(EngineError::Unavailable); count])
    }

    /// Proposes one encoded group: on the leader directly, otherwise
    /// through the leader's peer port.
    async fn propose(&self, payload: LogPayload) -> EngineResult<GroupResult> {
        let _proposing = self.pass_gate().await.map_err(replication)?;
        let local = tokio::time::timeout(CLUSTER_TIMEOUT, self.raft.client_write(payload.clone()));
        match local.await {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => {
                let Some(leader) = to.leader_node else {
                    return Err(no_leader());
                };
                let answer: Result<GroupResult, Forwarded> = self
                    .client
                    .call(
                        &leader.addr,
                        routes::FORWARD_WRITE,
                        &payload,
                        CLUSTER_TIMEOUT,
                    )
                    .await
                    .map_err(|e| match e {
                        // Nothing reached the leader, or it refused the
                        // request before proposing it: nothing was applied.
                        PeerCallError::Unreachable { .. } | PeerCallError::Refused { .. } => {
                            replication(format!("forwarding a write to the leader: {e}"))
                        }
                        PeerCallError::Network { .. } => {
                            indeterminate(format!("forwarding a write to the leader: {e}"))
                        }
                    })?;
                answer.map_err(|refused| match refused {
                    Forwarded::NotLeader(detail) => replication(detail),
                    Forwarded::Indeterminate(detail) => indeterminate(detail),
                })
            }
            // Refused before it was proposed.
            Ok(Err(RaftError::APIError(err))) => Err(replication(err.to_string())),
            Ok(Err(RaftError::Fatal(err))) => Err(indeterminate(format!(
                "replication stopped while writing: {err}"
            ))),
            Err(_) => Err(indeterminate(format!(
                "the write was not committed by a majority within {} s; it may still be applied",
                CLUSTER_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Serves a group a follower forwarded: only the leader proposes it.
    pub(crate) async fn propose_forwarded(
        &self,
        payload: LogPayload,
    ) -> Result<GroupResult, Forwarded> {
        let _proposing = self.pass_gate().await.map_err(Forwarded::NotLeader)?;
        match tokio::time::timeout(CLUSTER_TIMEOUT, self.raft.client_write(payload)).await {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(err))) => Err(Forwarded::NotLeader(format!(
                "node {} refused the forwarded write: {err}",
                self.id
            ))),
            Ok(Err(RaftError::Fatal(err))) => Err(Forwarded::Indeterminate(format!(
                "node {} stopped replicating while writing: {err}",
                self.id
            ))),
            Err(_) => Err(Forwarded::Indeterminate(format!(
                "node {} did not commit the write within {} s; it may still be applied",
                self.id,
                CLUSTER_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Returns once this node's state machine holds everything committed
    /// before the call: a linearizable read may then read locally.
    pub(crate) async fn read_barrier(&self) -> EngineResult<()> {
        let timed = tokio::time::timeout(CLUSTER_TIMEOUT, self.read_barrier_inner());
        timed.await.unwrap_or_else(|_| {
            Err(replication(format!(
                "no majority confirmed the leader within {} s",
                CLUSTER_TIMEOUT.as_secs()
            )))
        })
    }

    async fn read_barrier_inner(&self) -> EngineResult<()> {
        let read_index = match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => read_log_id,
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                let Some(leader) = to.leader_node else {
                    return Err(no_leader());
                };
                let answer: Result<Option<LogId<NodeId>>, String> = self
                    .client
                    .call(
                        &leader.addr,
                        routes::FORWARD_READ_INDEX,
                        &(),
                        CLUSTER_TIMEOUT,
                    )
                    .await
                    .map_err(|e| replication(format!("asking the leader for a read index: {e}")))?;
                answer.map_err(replication)?
            }
            Err(err) => return Err(replication(err.to_string())),
        };
        let Some(read_index) = read_index else {
            return Ok(());
        };
        self.raft
            .wait(Some(CLUSTER_TIMEOUT))
            .applied_index_at_least(Some(read_index.index), "read index")
            .await
            .map_err(|e| replication(format!("catching up to the read index: {e}")))?;
        Ok(())
    }

    /// Serves a follower's read-index request: only the leader answers.
    pub(crate) async fn read_index(&self) -> Result<Option<LogId<NodeId>>, String> {
        self.raft
            .get_read_log_id()
            .await
            .map(|(read, _)| read)
            .map_err(|e| format!("node {}: {e}", self.id))
    }

    /// `GET /v1/cluster`, from openraft's metrics and the log store's
    /// committed id (openraft 0.9's metrics carry no commit index).
    pub(crate) fn cluster_info(&self) -> ClusterInfo {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<_> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| ClusterMember {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let last = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != self.id)
            .filter_map(|(id, matched)| {
                matched.map(|matched| (*id, last.saturating_sub(matched.index)))
            })
            .collect();
        ClusterInfo {
            node_id: self.id,
            role: match m.state {
                ServerState::Leader => ClusterRole::Leader,
                ServerState::Candidate => ClusterRole::Candidate,
                ServerState::Learner => ClusterRole::Learner,
                ServerState::Follower | ServerState::Shutdown => ClusterRole::Follower,
            },
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: self.log.committed().map_or(0, |id| id.index),
            applied_index: m.last_applied.map_or(0, |id| id.index),
            members,
            lag,
        }
    }

    /// Ready for traffic: Raft runs, a leader is known, and this node has
    /// applied (nearly) everything in its log.
    pub(crate) fn readiness(&self) -> Result<(), NotReady> {
        let m = self.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return Err(NotReady::Stopped);
        }
        if m.current_leader.is_none() {
            return Err(NotReady::NoLeader);
        }
        // openraft 0.9 never steps a leader down on its own: one cut off
        // from its peers still calls itself leader. It must not look ready,
        // or a Service would keep sending clients to a node that can only
        // answer 503 after the cluster timeout.
        if m.state == ServerState::Leader
            && m.millis_since_quorum_ack
                .is_some_and(|ms| ms > QUORUM_LEASE_MS)
        {
            return Err(NotReady::NoQuorum);
        }
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map_or(0, |id| id.index);
        if last.saturating_sub(applied) > READY_LAG {
            return Err(NotReady::CatchingUp);
        }
        Ok(())
    }
}

/// Why a replicated node is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// Raft stopped on a storage error: only a restart helps.
    Stopped,
    NoLeader,
    /// A leader no majority has acknowledged for longer than an election
    /// timeout: it is probably partitioned away from its peers.
    NoQuorum,
    CatchingUp,
}

/// How long a leader may go without a majority's acknowledgement and still
/// be ready: the longest election timeout, after which the others may
/// already have elected someone else.
const QUORUM_LEASE_MS: u64 = super::ELECTION_TIMEOUT_MAX_MS;

/// Most log entries a ready node may still have to apply.
const READY_LAG: u64 = 100;

fn no_leader() -> EngineError {
    EngineError::Replication {
        detail: "no leader is known (an election may be under way); retry".into(),
    }
}

fn replication(detail: String) -> EngineError {
    EngineError::Replication { detail }
}

fn indeterminate(detail: String) -> EngineError {
    EngineError::Indeterminate { detail }
}

/// Why the leader did not answer a forwarded write with its result.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Forwarded {
    /// Refused before proposing it (not the leader any more): nothing was
    /// applied.
    NotLeader(String),
    /// Proposed but not confirmed in time: it may still be applied.
    Indeterminate(String),
}

/// Ends the "started empty" state as soon as the node has caught up with a
/// leader, not only when a vote request happens to arrive while a leader
/// is known: if the first leader of a new cluster died before any vote
/// request reached its followers, both would otherwise still be
/// "rejoining" as candidates (no leader known) and refuse each other's
/// votes forever.
async fn watch_catch_up(node: std::sync::Weak<ReplicaNode>) {
    let Some(mut metrics) = node.upgrade().map(|n| n.raft.metrics()) else {
        return;
    };
    loop {
        {
            let Some(node) = node.upgrade() else { return };
            if node.caught_up() {
                node.done_rejoining();
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// What openraft 0.9's metrics do not say about this node's role changes.
#[derive(Default)]
pub(super) struct Transitions {
    /// Times this node became a candidate.
    elections: std::sync::atomic::AtomicU64,
    /// When this node last became leader (seen a little after openraft
    /// recorded its vote, never before), `None` while it is not leader.
    leader_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Transitions {
    pub(super) fn leader_since(&self) -> Option<std::time::Instant> {
        *self
            .leader_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Follows this node's role changes until Raft stops.
async fn watch_transitions(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
    transitions: Arc<Transitions>,
) {
    let mut was = metrics.borrow().state;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow().state;
        if now == ServerState::Candidate && was != ServerState::Candidate {
            transitions
                .elections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if (now == ServerState::Leader) != (was == ServerState::Leader) {
            *transitions
                .leader_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                (now == ServerState::Leader).then(std::time::Instant::now);
        }
        was = now;
    }
}

/// Forms groups from queued writes (everything queued when the previous
/// group was sent, within the limits) and proposes each as one entry,
/// several in flight at once.
async fn group_loop(node: std::sync::Weak<ReplicaNode>, mut rx: mpsc::Receiver<Proposal>) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_GROUPS));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes: usize = first.ops.iter().map(WriteOp::payload_bytes).sum();
        let mut ops: usize = first.ops.len();
        let mut group = vec![first];
        while ops < MAX_GROUP_OPS && bytes < MAX_GROUP_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            bytes += next.ops.iter().map(WriteOp::payload_bytes).sum::<usize>();
            ops += next.ops.len();
            group.push(next);
        }
        let Some(node) = node.upgrade() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            // Callers that gave up are dropped before proposing, as the
            // single-node writer does: nothing is applied behind their back.
            group.retain(|p| !p.answers.is_closed());
            if group.is_empty() {
                return;
            }
            let encoded = journal::encode(group.iter().flat_map(|p| p.ops.iter()))
                .expect("write() admits only ops the journal encoding holds");
            let result = node
                .propose(LogPayload { group: encoded })
                .await
                .and_then(|r| {
                    decode_replies(&r.replies).map_err(|e| EngineError::Storage {
                        op: "replicated write",
                        detail: format!("{e:#}"),
                    })
                });
            answer(group, result);
        });
    }
}

fn answer(group: Vec<Proposal>, result: EngineResult<Vec<Reply>>) {
    match result {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            for p in group {
                let mine: Vec<_> = replies.by_ref().take(p.ops.len()).map(Ok).collect();
                let missing = p.ops.len() - mine.len();
                let mut mine = mine;
                // A reply count that does not match the group is a bug;
                // never answer success for a write without its reply.
                mine.extend((0..missing).map(|_| {
                    Err(EngineError::Storage {
                        op: "replicated write",
                        detail: "the applied entry answered fewer replies than writes".into(),
                    })
                }));
                let _ = p.answers.send(mine);
            }
        }
        Err(err) => {
            for p in group {
                let _ = p.answers.send(vec![Err(err.clone()); p.ops.len()]);
            }
        }
    }
}

//! Handing leadership over before a planned restart
//! (`POST /v1/cluster/step-down`).
//!
//! Restarting a leader without warning costs its clients an election: the
//! followers notice only when its heartbeats stop, wait out their leader
//! lease plus an election timeout (1.5–2 s here), and writes in flight on
//! it fail. openraft 0.9 has no leadership transfer, so this builds one
//! from what it has, in the way Raft's own "TimeoutNow" extension works:
//!
//! 1. a leader elected less than a lease (1 s) ago waits it out: until
//!    then it would refuse any candidate's vote request itself;
//! 2. the leader closes a gate in front of its proposals (new writes wait,
//!    they are not refused) and lets those under way commit, so its log
//!    stops growing;
//! 3. with five voters, it stops its heartbeats for a lease: the other
//!    followers refuse any candidate while their lease from it runs, and
//!    the successor needs one of their votes (with three, its own and the
//!    leader's are a majority);
//! 4. it waits until a voter holds its whole log (the successor) and asks
//!    it, over the peer port, to start an election now;
//! 5. the successor's vote request carries a higher term and a log as long
//!    as the leader's, so the leader grants it and steps down, and the
//!    successor wins;
//! 6. once another leader is known, the gate opens and waiting writes go
//!    on to it. Should this node win the election instead, it tries again
//!    (3 elections at most).
//!
//! Nothing here can lose an acknowledged write: it only decides who runs
//! for election first, and Raft's vote rules still decide who wins.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drasi_store_protocol::StepDownResponse;
use openraft::{BasicNode, RaftMetrics, ServerState};

use super::network::routes;
use super::node::ReplicaNode;
use super::{ELECTION_TIMEOUT_MAX_MS, HEARTBEAT_INTERVAL_MS, NodeId};
use crate::engine::EngineError;

/// How long the leader waits for a voter to hold its whole log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the successor's election may take (a 5-node store needs the
/// others' leases to run out first).
const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one peer's answer to "campaign now" may take.
const CAMPAIGN_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a shutting-down leader spends handing over (the pod's grace
/// period is 60 s; the rest is for draining connections).
const SHUTDOWN_HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Elections a hand-over may start before it gives up.
const ATTEMPTS: usize = 3;
/// On top of the lease: this node records its own election a little late,
/// and openraft compares times with `<=`.
const LEASE_MARGIN: Duration = Duration::from_millis(50);

/// Clears the node's "handing over" state however the hand-over ends, so
/// writes held back by it always go on.
struct HandingOver<'a>(&'a ReplicaNode);

impl Drop for HandingOver<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.handing_over.store(false, Ordering::Release);
    }
}

impl ReplicaNode {
    /// Hands leadership to the most caught-up other voter. A node that is
    /// not the leader changes nothing and answers who is.
    pub(crate) async fn step_down(&self) -> Result<StepDownResponse, EngineError> {
        let started = Instant::now();
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Ok(StepDownResponse {
                stepped_down: false,
                leader_id: m.current_leader,
                term: m.current_term,
                took_ms: 0,
            });
        }
        // Outside the hand-over proper, so writes go on meanwhile.
        self.wait_out_own_lease().await;
        let first_term = self.raft.metrics().borrow().current_term;
        if self.handing_over.swap(true, Ordering::AcqRel) {
            // Another request started it; both wait for the same outcome.
            return match self.next_leader(first_term).await? {
                (m, false) => Ok(stepped_down(&m, started)),
                (_, true) => Err(still_leader(self.id, "it won the election itself")),
            };
        }
        let _holding = HandingOver(self);
        // Proposals already past the gate finish first (each within the
        // cluster timeout); new ones wait until the hand-over is over.
        let _gate = self.gate.write().await;
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let term = {
                let m = self.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    // Lost leadership on its own meanwhile: whoever wins,
                    // it is not this node.
                    return Ok(stepped_down(
                        &self.next_leader(first_term).await?.0,
                        started,
                    ));
                }
                if m.membership_config.membership().voter_ids().count() > 3 {
                    self.let_followers_leases_run_out().await;
                }
                m.current_term
            };
            let successor = self.ask_to_campaign(term).await?;
            match self.next_leader(term).await? {
                (m, false) => {
                    tracing::info!(node_id = self.id, successor, leader = ?m.current_leader, term = m.current_term, "leadership handed over");
                    return Ok(stepped_down(&m, started));
                }
                // A voter whose lease had not run out refused the
                // successor, and this node won the next election. Its new
                // term starts a new lease; wait it out and try again.
                (_, true) => {
                    failures.push(format!(
                        "node {successor} lost the election in term {}",
                        term + 1
                    ));
                    self.wait_out_own_lease().await;
                }
            }
        }
        Err(still_leader(self.id, &failures.join("; ")))
    }

    /// On shutdown (SIGTERM: a pod deleted or evicted, a node drained): a
    /// leader hands leadership over before it stops, so its clients see a
    /// hand-over instead of an election. Bounded, and best effort: when no
    /// other node can take over, the cluster elects one after it is gone.
    pub(crate) async fn hand_over_before_stopping(&self) {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return;
        }
        match tokio::time::timeout(SHUTDOWN_HAND_OVER_TIMEOUT, self.step_down()).await {
            Ok(Ok(answer)) => tracing::info!(
                node_id = self.id,
                leader = ?answer.leader_id,
                took_ms = answer.took_ms,
                "handed leadership over before shutting down"
            ),
            Ok(Err(err)) => tracing::warn!(
                node_id = self.id,
                error = %err,
                "could not hand leadership over before shutting down"
            ),
            Err(_) => tracing::warn!(
                node_id = self.id,
                timeout_ms = SHUTDOWN_HAND_OVER_TIMEOUT.as_millis() as u64,
                "no hand-over within the shutdown budget; shutting down as leader"
            ),
        }
    }

    /// A voter refuses any candidate while its leader's lease runs (1 s
    /// after it last heard from a leader, or, for the leader itself, after
    /// it was elected). The successor needs this node's vote, so a leader
    /// elected less than a lease ago waits until its own lease has run out.
    async fn wait_out_own_lease(&self) {
        let lease = Duration::from_millis(ELECTION_TIMEOUT_MAX_MS) + LEASE_MARGIN;
        // Not recorded yet: it became leader a moment ago.
        let since = self.transitions.leader_since().unwrap_or_else(Instant::now);
        tokio::time::sleep_until((since + lease).into()).await;
    }

    /// With five voters the successor needs a vote besides its own and
    /// this node's, and the other followers refuse any candidate while
    /// their lease from this leader runs. Stopping the heartbeats (nothing
    /// else reaches them: no proposal passes the gate) lets the leases run
    /// out in a second, before any follower's own election timer (lease
    /// plus 0.5–1 s) fires; the guard turns heartbeats back on.
    async fn let_followers_leases_run_out(&self) {
        self.raft.runtime_config().heartbeat(false);
        let lease = Duration::from_millis(ELECTION_TIMEOUT_MAX_MS) + LEASE_MARGIN;
        // A heartbeat sent just before may still be on its way.
        tokio::time::sleep(lease + Duration::from_millis(HEARTBEAT_INTERVAL_MS)).await;
    }

    /// Asks the caught-up voters, most caught-up first, to run for election
    /// in a term after `term`; answers the one that agreed.
    async fn ask_to_campaign(&self, term: u64) -> Result<NodeId, EngineError> {
        let mut refusals = Vec::new();
        for (id, addr) in self.caught_up_voters(CATCH_UP_TIMEOUT).await? {
            let asked: Result<Result<(), String>, _> = self
                .client
                .call(&addr, routes::CAMPAIGN, &(), CAMPAIGN_CALL_TIMEOUT)
                .await;
            match asked {
                Ok(Ok(())) => {
                    tracing::info!(
                        node_id = self.id,
                        successor = id,
                        term,
                        "handing leadership over"
                    );
                    return Ok(id);
                }
                Ok(Err(why)) => refusals.push(format!("node {id}: {why}")),
                Err(e) => refusals.push(format!("node {id}: {e}")),
            }
        }
        Err(still_leader(
            self.id,
            &format!(
                "no caught-up voter would run for election ({})",
                refusals.join("; ")
            ),
        ))
    }

    /// The other voters that hold this leader's whole log, with their peer
    /// addresses, waiting up to `timeout` for at least one.
    async fn caught_up_voters(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(NodeId, String)>, EngineError> {
        let deadline = Instant::now() + timeout;
        let mut metrics = self.raft.metrics();
        loop {
            let found = {
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader {
                    return Err(EngineError::Replication {
                        detail: format!(
                            "node {} lost leadership while handing it over; the cluster elects \
                             a new leader on its own",
                            self.id
                        ),
                    });
                }
                let membership = m.membership_config.membership();
                let last = m.last_log_index;
                let matched = m.replication.clone().unwrap_or_default();
                membership
                    .voter_ids()
                    .filter(|id| *id != self.id)
                    .filter(|id| matched.get(id).copied().flatten().map(|l| l.index) == last)
                    .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
                    .collect::<Vec<_>>()
            };
            if !found.is_empty() {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Replication {
                    detail: format!(
                        "node {} is still the leader: no other voter caught up with its log \
                         within {} s (is one down or partitioned away?)",
                        self.id,
                        timeout.as_secs()
                    ),
                });
            }
            // Replication progress is a metrics change; poll as well, in
            // case a change lands between the check and the wait.
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(50)), metrics.changed()).await;
        }
    }

    /// The first leader of a term after `term`, and whether it is this
    /// node.
    async fn next_leader(
        &self,
        term: u64,
    ) -> Result<(RaftMetrics<NodeId, BasicNode>, bool), EngineError> {
        let waited = self
            .raft
            .wait(Some(TAKE_OVER_TIMEOUT))
            .metrics(
                |m| m.current_term > term && m.current_leader.is_some(),
                "a leader in a later term",
            )
            .await;
        match waited {
            Ok(m) => {
                let me = m.current_leader == Some(self.id);
                Ok((m, me))
            }
            Err(e) => Err(EngineError::Replication {
                detail: format!(
                    "no leader was elected within {} s of node {} stepping down ({e}); the \
                     cluster elects one on its own",
                    TAKE_OVER_TIMEOUT.as_secs(),
                    self.id
                ),
            }),
        }
    }

    /// Lets a proposal through, after any hand-over under way (bounded:
    /// a write waits at most the cluster timeout, then fails unapplied).
    pub(crate) async fn pass_gate(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, String> {
        tokio::time::timeout(super::node::CLUSTER_TIMEOUT, self.gate.read())
            .await
            .map_err(|_| {
                format!(
                    "node {} is handing leadership over; nothing was applied, retry",
                    self.id
                )
            })
    }

    /// Serves a leader's "campaign now" (the successor's side): start an
    /// election at once instead of waiting out the leader's lease.
    pub(crate) async fn campaign(&self) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.id)
        {
            return Err(format!("node {} is not a voter", self.id));
        }
        if self.rejoining.load(Ordering::Acquire) && !self.caught_up() {
            return Err(format!(
                "node {} started with an empty log and has not caught up yet",
                self.id
            ));
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| format!("node {}: {e}", self.id))
    }
}

fn stepped_down(m: &RaftMetrics<NodeId, BasicNode>, started: Instant) -> StepDownResponse {
    StepDownResponse {
        stepped_down: true,
        leader_id: m.current_leader,
        term: m.current_term,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

fn still_leader(id: NodeId, why: &str) -> EngineError {
    EngineError::Replication {
        detail: format!("node {id} is still the leader: {why}"),
    }
}

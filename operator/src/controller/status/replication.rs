//! Replication status of a replicated store, from what each replica
//! answered on `GET /v1/cluster` (the probe itself, the I/O, is in
//! `controller/cluster_probe.rs`). Pure: probe results in, the
//! `status.replication` block and the `ReplicationHealthy` condition out.
//!
//! Three steps:
//! - [`summarize`]: the probe results -> a [`ReplicationStatus`] (the
//!   leader a majority agrees on, the term, the commit index, each
//!   replica's role, applied index and lag);
//! - [`merge`]: keeps the previous block unless something meaningful
//!   changed (leader, term, a replica's role, reachability or whether it
//!   lags more than [`LAG_THRESHOLD`]), so a busy store whose indexes move
//!   on every probe does not cost a status write per probe;
//! - [`health`]: the condition's reason and message, from the merged
//!   block, so the message changes only when the block does.

use std::collections::BTreeMap;

use drasi_store_protocol::{ClusterInfo, ClusterRole};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::reasons::ReplicationHealthyReason;
use crate::crd::{ReplicaRole, ReplicaStatus, ReplicationStatus};

/// A replica more than this many log entries behind the leader is reported
/// `ReplicaLagging`. Deliberately far above the server's own readiness lag
/// (100 entries, which already takes a lagging replica out of the Service)
/// so a burst of writes does not flip the condition.
pub const LAG_THRESHOLD: i64 = 1000;

/// What one replica answered.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberProbe {
    /// The pod, `<name>-<ordinal>`.
    pub name: String,
    /// The pod ordinal, which is also its Raft node id.
    pub ordinal: i32,
    /// Its `/v1/cluster` answer, or why there is none.
    pub answer: Result<ClusterInfo, String>,
}

/// The replicated store's observed replication, for the status.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicationObservation {
    /// One replica: no `status.replication`, no `ReplicationHealthy`.
    NotReplicated,
    /// Replicated, but not probed in this pass (no StatefulSet yet, an
    /// invalid spec, a paused store): the previous block and condition
    /// are kept.
    NotProbed,
    /// The answer of every replica, by ordinal.
    Probed(Vec<MemberProbe>),
}

/// Votes needed in a group of `replicas`.
pub fn quorum(replicas: usize) -> usize {
    replicas / 2 + 1
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn role(role: ClusterRole) -> ReplicaRole {
    match role {
        ClusterRole::Leader => ReplicaRole::Leader,
        ClusterRole::Follower => ReplicaRole::Follower,
        ClusterRole::Candidate => ReplicaRole::Candidate,
        ClusterRole::Learner => ReplicaRole::Learner,
    }
}

/// The node id a majority of all replicas (not only of those that
/// answered) name as their leader, if any.
fn agreed_leader(probes: &[MemberProbe]) -> Option<u64> {
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for info in probes.iter().filter_map(|p| p.answer.as_ref().ok()) {
        if let Some(leader) = info.leader_id {
            *votes.entry(leader).or_default() += 1;
        }
    }
    let needed = quorum(probes.len());
    votes
        .into_iter()
        .find(|(_, count)| *count >= needed)
        .map(|(leader, _)| leader)
}

/// The replication block for `probes` (one per replica, by ordinal),
/// without `observedAt` (see [`merge`]).
pub fn summarize(probes: &[MemberProbe]) -> ReplicationStatus {
    let answers = || probes.iter().filter_map(|p| p.answer.as_ref().ok());
    let leader_id = agreed_leader(probes);
    // The leader's own answer, when it gave one and agrees that it leads.
    let leader_info = leader_id.and_then(|id| {
        answers().find(|info| info.node_id == id && info.role == ClusterRole::Leader)
    });
    let term = leader_info
        .map(|info| info.term)
        .or_else(|| answers().map(|info| info.term).max());
    let commit_index = leader_info
        .map(|info| info.commit_index)
        .or_else(|| answers().map(|info| info.commit_index).max());
    let members = probes
        .iter()
        .map(|probe| {
            let node_id = probe.answer.as_ref().map_or_else(
                // The node id is the ordinal by construction (the pod-index
                // label); used to look up an unreachable replica's lag.
                |_| u64::try_from(probe.ordinal).unwrap_or(u64::MAX),
                |info| info.node_id,
            );
            let from_leader = leader_info.and_then(|leader| {
                if leader.node_id == node_id {
                    Some(0)
                } else {
                    leader.lag.get(&node_id).copied()
                }
            });
            let info = probe.answer.as_ref().ok();
            let from_indexes = info
                .zip(commit_index)
                .map(|(info, commit)| commit.saturating_sub(info.applied_index));
            ReplicaStatus {
                name: probe.name.clone(),
                node_id: info.map(|i| to_i64(i.node_id)),
                role: info.map(|i| role(i.role)),
                applied_index: info.map(|i| to_i64(i.applied_index)),
                lag: from_leader.or(from_indexes).map(to_i64),
                reachable: info.is_some(),
                message: probe.answer.as_ref().err().cloned(),
            }
        })
        .collect();
    let leader = leader_id.map(|id| {
        probes
            .iter()
            .find(|p| u64::try_from(p.ordinal).ok() == Some(id))
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    });
    ReplicationStatus {
        leader,
        term: term.map(to_i64),
        commit_index: commit_index.map(to_i64),
        members,
        observed_at: None,
    }
}

/// Whether a replica's lag is over [`LAG_THRESHOLD`].
pub fn lagging(member: &ReplicaStatus) -> bool {
    member.lag.is_some_and(|lag| lag > LAG_THRESHOLD)
}

/// What a change must touch to be written: not the indexes or lags
/// themselves, which move with every write, nor the wording of an error.
fn meaningful(status: &ReplicationStatus) -> impl PartialEq {
    (
        &status.leader,
        status.term,
        status
            .members
            .iter()
            .map(|m| (&m.name, m.node_id, m.role, m.reachable, lagging(m)))
            .collect::<Vec<_>>(),
    )
}

/// `observed` stamped with `now`, or `previous` as it is when nothing
/// meaningful changed (so an unchanged store costs no status write).
pub fn merge(
    previous: Option<&ReplicationStatus>,
    observed: ReplicationStatus,
    now: &Time,
) -> ReplicationStatus {
    match previous {
        Some(previous) if meaningful(previous) == meaningful(&observed) => previous.clone(),
        _ => ReplicationStatus {
            observed_at: Some(now.clone()),
            ..observed
        },
    }
}

fn unreachable_list(status: &ReplicationStatus) -> Vec<String> {
    status
        .members
        .iter()
        .filter(|m| !m.reachable)
        .map(|m| match &m.message {
            Some(message) => format!("{} ({message})", m.name),
            None => m.name.clone(),
        })
        .collect()
}

/// The `ReplicationHealthy` reason and message for a replication block.
/// Worst first: no leader, a replica that does not answer, one that lags.
pub fn health(status: &ReplicationStatus) -> (ReplicationHealthyReason, String) {
    let replicas = status.members.len();
    let answered = status.members.iter().filter(|m| m.reachable).count();
    let unreachable = unreachable_list(status);
    let Some(leader) = &status.leader else {
        if answered < quorum(replicas) {
            return (
                ReplicationHealthyReason::ReplicaUnreachable,
                format!(
                    "only {answered} of {replicas} replicas answered GET /v1/cluster, too few to \
                     tell the leader; not answering: {}",
                    unreachable.join(", ")
                ),
            );
        }
        return (
            ReplicationHealthyReason::NoLeader,
            format!(
                "no leader is known to a majority of the {replicas} replicas ({answered} \
                 answered); writes fail until one is elected"
            ),
        );
    };
    let term = status
        .term
        .map_or_else(String::new, |t| format!(" (term {t})"));
    if !unreachable.is_empty() {
        return (
            ReplicationHealthyReason::ReplicaUnreachable,
            format!(
                "leader {leader}{term}; not answering GET /v1/cluster: {}",
                unreachable.join(", ")
            ),
        );
    }
    let behind: Vec<String> = status
        .members
        .iter()
        .filter(|m| lagging(m))
        .map(|m| format!("{} ({} entries)", m.name, m.lag.unwrap_or_default()))
        .collect();
    if !behind.is_empty() {
        return (
            ReplicationHealthyReason::ReplicaLagging,
            format!(
                "leader {leader}{term}; more than {LAG_THRESHOLD} log entries behind: {}",
                behind.join(", ")
            ),
        );
    }
    (
        ReplicationHealthyReason::LeaderElected,
        format!(
            "leader {leader}{term}; all {replicas} replicas answer, none more than \
             {LAG_THRESHOLD} log entries behind"
        ),
    )
}

#[cfg(test)]
mod tests {
    use drasi_store_protocol::ClusterMember;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
    }

    /// The answer of node `id` that knows `leader`.
    fn info(
        id: u64,
        role: ClusterRole,
        leader: Option<u64>,
        term: u64,
        applied: u64,
    ) -> ClusterInfo {
        ClusterInfo {
            node_id: id,
            role,
            leader_id: leader,
            term,
            commit_index: applied,
            applied_index: applied,
            members: (0..3)
                .map(|i| ClusterMember {
                    id: i,
                    addr: format!("s-{i}.s-peers.ns.svc:7071"),
                    voter: true,
                })
                .collect(),
            lag: BTreeMap::new(),
        }
    }

    fn answered(ordinal: i32, info: ClusterInfo) -> MemberProbe {
        MemberProbe {
            name: format!("s-{ordinal}"),
            ordinal,
            answer: Ok(info),
        }
    }

    fn silent(ordinal: i32) -> MemberProbe {
        MemberProbe {
            name: format!("s-{ordinal}"),
            ordinal,
            answer: Err("no answer within 2 s".into()),
        }
    }

    fn leader(id: u64, term: u64, commit: u64, lag: &[(u64, u64)]) -> ClusterInfo {
        ClusterInfo {
            commit_index: commit,
            lag: lag.iter().copied().collect(),
            ..info(id, ClusterRole::Leader, Some(id), term, commit)
        }
    }

    fn follower(id: u64, leader: u64, term: u64, applied: u64) -> ClusterInfo {
        info(id, ClusterRole::Follower, Some(leader), term, applied)
    }

    fn healthy() -> Vec<MemberProbe> {
        vec![
            answered(0, leader(0, 7, 100, &[(1, 0), (2, 3)])),
            answered(1, follower(1, 0, 7, 100)),
            answered(2, follower(2, 0, 7, 97)),
        ]
    }

    #[test]
    fn a_healthy_group_reports_its_leader_and_every_lag() {
        let status = summarize(&healthy());
        assert_eq!(status.leader.as_deref(), Some("s-0"));
        assert_eq!(status.term, Some(7));
        assert_eq!(status.commit_index, Some(100));
        assert_eq!(status.observed_at, None);
        let lags: Vec<_> = status.members.iter().map(|m| m.lag).collect();
        assert_eq!(lags, [Some(0), Some(0), Some(3)]);
        let m = &status.members[2];
        assert_eq!(
            (
                m.name.as_str(),
                m.node_id,
                m.role,
                m.applied_index,
                m.reachable
            ),
            ("s-2", Some(2), Some(ReplicaRole::Follower), Some(97), true)
        );
        assert_eq!(m.message, None);
        let (reason, message) = health(&status);
        assert_eq!(reason, ReplicationHealthyReason::LeaderElected);
        assert_eq!(
            message,
            "leader s-0 (term 7); all 3 replicas answer, none more than 1000 log entries behind"
        );
    }

    #[test]
    fn a_single_node_answers_as_the_leader_of_one() {
        let status = summarize(&[answered(0, leader(0, 0, 0, &[]))]);
        assert_eq!(status.leader.as_deref(), Some("s-0"));
        assert_eq!(status.members[0].lag, Some(0));
        assert_eq!(health(&status).0, ReplicationHealthyReason::LeaderElected);
    }

    #[test]
    fn no_leader_when_nobody_knows_one() {
        let probes = vec![
            answered(0, info(0, ClusterRole::Candidate, None, 9, 50)),
            answered(1, info(1, ClusterRole::Follower, None, 8, 50)),
            answered(2, info(2, ClusterRole::Candidate, None, 9, 48)),
        ];
        let status = summarize(&probes);
        assert_eq!(status.leader, None);
        // The highest term and commit index any replica reported.
        assert_eq!((status.term, status.commit_index), (Some(9), Some(50)));
        assert_eq!(status.members[2].lag, Some(2));
        assert_eq!(status.members[0].role, Some(ReplicaRole::Candidate));
        let (reason, message) = health(&status);
        assert_eq!(reason, ReplicationHealthyReason::NoLeader);
        assert!(message.contains("3 answered"), "{message}");
    }

    #[test]
    fn split_leaders_resolve_to_the_one_a_majority_follows() {
        // s-0 was cut off and still believes it leads in an old term; s-1
        // and s-2 elected s-1.
        let probes = vec![
            answered(0, leader(0, 7, 100, &[(1, 0), (2, 0)])),
            answered(1, leader(1, 8, 130, &[(0, 30), (2, 1)])),
            answered(2, follower(2, 1, 8, 129)),
        ];
        let status = summarize(&probes);
        assert_eq!(status.leader.as_deref(), Some("s-1"));
        assert_eq!((status.term, status.commit_index), (Some(8), Some(130)));
        let lags: Vec<_> = status.members.iter().map(|m| m.lag).collect();
        assert_eq!(lags, [Some(30), Some(0), Some(1)]);
        // The stale leader still says so.
        assert_eq!(status.members[0].role, Some(ReplicaRole::Leader));
        assert_eq!(health(&status).0, ReplicationHealthyReason::LeaderElected);
    }

    #[test]
    fn split_votes_without_a_majority_are_no_leader() {
        let probes = vec![
            answered(0, leader(0, 7, 100, &[])),
            answered(1, leader(1, 8, 100, &[])),
            answered(2, info(2, ClusterRole::Candidate, None, 9, 100)),
        ];
        let status = summarize(&probes);
        assert_eq!(status.leader, None);
        assert_eq!(status.term, Some(9));
        assert_eq!(health(&status).0, ReplicationHealthyReason::NoLeader);

        // Five replicas: two for s-0 and two for s-1 is no majority either.
        let probes = vec![
            answered(0, leader(0, 7, 100, &[])),
            answered(1, follower(1, 0, 7, 100)),
            answered(2, leader(2, 8, 100, &[])),
            answered(3, follower(3, 2, 8, 100)),
            silent(4),
        ];
        let status = summarize(&probes);
        assert_eq!(status.leader, None);
        assert_eq!(health(&status).0, ReplicationHealthyReason::NoLeader);
    }

    #[test]
    fn an_unreachable_follower_keeps_the_leader_and_its_lag_from_the_leader() {
        let probes = vec![
            answered(0, leader(0, 7, 100, &[(1, 0), (2, 40)])),
            answered(1, follower(1, 0, 7, 100)),
            silent(2),
        ];
        let status = summarize(&probes);
        assert_eq!(status.leader.as_deref(), Some("s-0"));
        let m = &status.members[2];
        assert!(!m.reachable);
        assert_eq!((m.node_id, m.role, m.applied_index), (None, None, None));
        // The leader still knows how far behind it is.
        assert_eq!(m.lag, Some(40));
        assert_eq!(m.message.as_deref(), Some("no answer within 2 s"));
        let (reason, message) = health(&status);
        assert_eq!(reason, ReplicationHealthyReason::ReplicaUnreachable);
        assert_eq!(
            message,
            "leader s-0 (term 7); not answering GET /v1/cluster: s-2 (no answer within 2 s)"
        );
    }

    #[test]
    fn an_unreachable_leader_is_still_agreed_by_its_followers() {
        let probes = vec![
            silent(0),
            answered(1, follower(1, 0, 7, 100)),
            answered(2, follower(2, 0, 7, 90)),
        ];
        let status = summarize(&probes);
        assert_eq!(status.leader.as_deref(), Some("s-0"));
        assert_eq!((status.term, status.commit_index), (Some(7), Some(100)));
        // Without the leader's view: commit index minus applied index.
        let lags: Vec<_> = status.members.iter().map(|m| m.lag).collect();
        assert_eq!(lags, [None, Some(0), Some(10)]);
        assert_eq!(
            health(&status).0,
            ReplicationHealthyReason::ReplicaUnreachable
        );
    }

    #[test]
    fn too_few_answers_to_tell_the_leader_are_unreachable_not_no_leader() {
        let probes = vec![answered(0, leader(0, 7, 100, &[])), silent(1), silent(2)];
        let status = summarize(&probes);
        assert_eq!(status.leader, None);
        let (reason, message) = health(&status);
        assert_eq!(reason, ReplicationHealthyReason::ReplicaUnreachable);
        assert!(
            message.starts_with("only 1 of 3 replicas answered"),
            "{message}"
        );
        assert!(message.contains("s-1 (no answer within 2 s)"), "{message}");

        let nobody = summarize(&[silent(0), silent(1), silent(2)]);
        assert_eq!((nobody.leader.as_ref(), nobody.term), (None, None));
        assert!(nobody.members.iter().all(|m| m.lag.is_none()));
        assert_eq!(
            health(&nobody).0,
            ReplicationHealthyReason::ReplicaUnreachable
        );
    }

    #[test]
    fn a_lagging_follower_is_reported_only_past_the_threshold() {
        let at_threshold = LAG_THRESHOLD as u64;
        let probes = |lag: u64| {
            vec![
                answered(0, leader(0, 7, 5000, &[(1, 0), (2, lag)])),
                answered(1, follower(1, 0, 7, 5000)),
                answered(2, follower(2, 0, 7, 5000 - lag)),
            ]
        };
        let ok = summarize(&probes(at_threshold));
        assert_eq!(health(&ok).0, ReplicationHealthyReason::LeaderElected);
        let behind = summarize(&probes(at_threshold + 1));
        let (reason, message) = health(&behind);
        assert_eq!(reason, ReplicationHealthyReason::ReplicaLagging);
        assert_eq!(
            message,
            "leader s-0 (term 7); more than 1000 log entries behind: s-2 (1001 entries)"
        );
    }

    #[test]
    fn unreachable_outranks_lagging() {
        let probes = vec![
            answered(0, leader(0, 7, 5000, &[(1, 4000), (2, 0)])),
            answered(1, follower(1, 0, 7, 1000)),
            silent(2),
        ];
        assert_eq!(
            health(&summarize(&probes)).0,
            ReplicationHealthyReason::ReplicaUnreachable
        );
    }

    #[test]
    fn merge_keeps_the_previous_block_until_something_meaningful_changes() {
        let first = merge(None, summarize(&healthy()), &at(0));
        assert_eq!(first.observed_at, Some(at(0)));

        // New writes moved every index and lag: nothing to write.
        let busier = vec![
            answered(0, leader(0, 7, 180, &[(1, 2), (2, 9)])),
            answered(1, follower(1, 0, 7, 178)),
            answered(2, follower(2, 0, 7, 171)),
        ];
        assert_eq!(merge(Some(&first), summarize(&busier), &at(30)), first);
        // A different error message for a replica already unreachable is
        // not a change either.
        let down = |message: &str| {
            let mut probes = healthy();
            probes[2].answer = Err(message.to_owned());
            summarize(&probes)
        };
        let unreachable = merge(Some(&first), down("no answer within 2 s"), &at(60));
        assert_eq!(unreachable.observed_at, Some(at(60)));
        assert_eq!(
            merge(Some(&unreachable), down("connection refused"), &at(90)),
            unreachable
        );

        // A new term, a new leader, crossing the lag threshold: written.
        let mut new_term = healthy();
        new_term[0].answer = Ok(leader(0, 8, 100, &[(1, 0), (2, 3)]));
        let changed = merge(Some(&first), summarize(&new_term), &at(120));
        assert_eq!(
            (changed.term, changed.observed_at),
            (Some(8), Some(at(120)))
        );
        let mut lagging = healthy();
        lagging[0].answer = Ok(leader(0, 7, 5000, &[(1, 0), (2, 2000)]));
        let changed = merge(Some(&first), summarize(&lagging), &at(150));
        assert_eq!(changed.members[2].lag, Some(2000));
        assert_eq!(changed.observed_at, Some(at(150)));
    }
}

//! Which replica of a replicated store to restart next when its pod
//! template changed. Pure: the StatefulSet, its pods and the replicas'
//! `/v1/cluster` answers in, one step out.
//!
//! A replicated store's StatefulSet uses the `OnDelete` update strategy,
//! so the StatefulSet controller never restarts its pods by itself: the
//! operator deletes them one at a time, in an order the StatefulSet
//! controller cannot know about:
//!
//! - only while every replica runs, is ready, answers and keeps up, and a
//!   leader is elected (restarting one replica of three leaves a
//!   majority; restarting one while another is down would not), except
//!   that an outdated replica that is not ready is restarted at once: it
//!   serves nothing, and a template whose pods never become ready could
//!   otherwise never be replaced by a fixed one;
//! - followers first (highest ordinal first, as the StatefulSet
//!   controller would), so the store changes leader once per rollout, not
//!   once per replica;
//! - the leader last, and only after it handed leadership to a caught-up
//!   follower (`POST /v1/cluster/step-down`), so its clients see a
//!   hand-over instead of an election.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

use crate::builders::POD_INDEX_LABEL;
use crate::controller::status::replication::{health, summarize};
use crate::controller::status::{MemberProbe, ReplicationHealthyReason};

/// The label the StatefulSet controller puts on each pod: the revision of
/// the template it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// One pod of the store, as far as a rollout cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    /// Its ordinal (the `apps.kubernetes.io/pod-index` label, or the name's
    /// suffix), which is also its Raft node id.
    pub ordinal: i32,
    pub uid: Option<String>,
    /// The template revision it runs.
    pub revision: Option<String>,
    /// Its `Ready` condition is true.
    pub ready: bool,
    /// Being deleted already.
    pub terminating: bool,
}

impl PodState {
    pub fn of(pod: &Pod) -> Option<PodState> {
        let name = pod.metadata.name.clone()?;
        let labels = pod.metadata.labels.as_ref();
        let ordinal = labels
            .and_then(|l| l.get(POD_INDEX_LABEL))
            .map(String::as_str)
            .or_else(|| name.rsplit_once('-').map(|(_, i)| i))
            .and_then(|i| i.parse().ok())?;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Some(PodState {
            ordinal,
            uid: pod.metadata.uid.clone(),
            revision: labels.and_then(|l| l.get(REVISION_LABEL)).cloned(),
            ready,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            name,
        })
    }
}

/// What the rollout does in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStep {
    /// Every pod runs the current template (or there is no template
    /// revision yet): nothing to do.
    UpToDate,
    /// Pods are outdated, but restarting one now could cost the store its
    /// majority or its leader without a hand-over: wait, and say why.
    Wait(String),
    /// Delete this follower's pod; the StatefulSet controller recreates it
    /// from the new template.
    RestartFollower { pod: String, uid: Option<String> },
    /// Delete this outdated pod that is not ready: it serves nothing.
    RestartNotReady { pod: String, uid: Option<String> },
    /// Ask this leader to hand leadership over, then delete its pod.
    HandOverAndRestart {
        pod: String,
        uid: Option<String>,
        ordinal: i32,
    },
}

/// Whether the StatefulSet controller reports every replica on the
/// current template: then there is nothing to roll, and the pods need not
/// be listed (a store that is not rolling costs no extra read per pass).
pub fn rolled_out(sts: &StatefulSet) -> bool {
    sts.status.as_ref().is_some_and(|status| {
        status.update_revision.is_some()
            && status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0)
            && status.updated_replicas.unwrap_or(0) >= sts.spec.replicas.unwrap_or(1)
    })
}

/// The next step of a rollout of `sts`, given its pods and what each
/// replica answered in this pass.
pub fn next_step(sts: &StatefulSet, pods: &[PodState], probes: &[MemberProbe]) -> RolloutStep {
    let Some(status) = sts.status.as_ref() else {
        return RolloutStep::UpToDate;
    };
    let Some(update) = status.update_revision.as_deref() else {
        return RolloutStep::UpToDate;
    };
    let replicas = sts.spec.replicas.unwrap_or(1);
    let generation = sts.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        // The revision above may be the previous template's.
        return RolloutStep::Wait(
            "the StatefulSet controller has not seen the new template yet".into(),
        );
    }
    let mut outdated: Vec<&PodState> = pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(update))
        .collect();
    if outdated.is_empty() {
        return RolloutStep::UpToDate;
    }
    let running = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    if running < replicas {
        return RolloutStep::Wait(format!(
            "{running} of {replicas} replica pods exist; the next restart waits for all of them"
        ));
    }
    if let Some(pod) = pods.iter().find(|p| p.terminating) {
        return RolloutStep::Wait(format!("{} is still shutting down", pod.name));
    }
    // An outdated replica that is not ready serves nothing, so restarting
    // it costs nothing; waiting for it instead would keep a fix of a
    // template whose pods never become ready from ever rolling out.
    if let Some(stuck) = outdated.iter().find(|p| !p.ready) {
        return RolloutStep::RestartNotReady {
            pod: stuck.name.clone(),
            uid: stuck.uid.clone(),
        };
    }
    if let Some(pod) = pods.iter().find(|p| !p.ready) {
        return RolloutStep::Wait(format!(
            "{} is not ready; the next restart waits until every replica has caught up",
            pod.name
        ));
    }
    let replication = summarize(probes);
    let (reason, message) = health(&replication);
    if reason != ReplicationHealthyReason::LeaderElected {
        return RolloutStep::Wait(format!("replication is not healthy: {message}"));
    }
    let leader = replication.leader.as_deref();
    // Followers first, highest ordinal first.
    outdated.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    if let Some(follower) = outdated.iter().find(|p| Some(p.name.as_str()) != leader) {
        return RolloutStep::RestartFollower {
            pod: follower.name.clone(),
            uid: follower.uid.clone(),
        };
    }
    let last = outdated[0];
    RolloutStep::HandOverAndRestart {
        pod: last.name.clone(),
        uid: last.uid.clone(),
        ordinal: last.ordinal,
    }
}

#[cfg(test)]
mod tests {
    use drasi_store_protocol::{ClusterInfo, ClusterRole};
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn sts(update: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: StatefulSetSpec {
                replicas: Some(3),
                ..StatefulSetSpec::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: Some(2),
                replicas: 3,
                update_revision: Some(update.into()),
                ..StatefulSetStatus::default()
            }),
        }
    }

    fn pod(ordinal: i32, revision: &str) -> PodState {
        PodState {
            name: format!("orders-{ordinal}"),
            ordinal,
            uid: Some(format!("uid-{ordinal}")),
            revision: Some(revision.into()),
            ready: true,
            terminating: false,
        }
    }

    /// Every replica answers, `leader` leads, nobody lags.
    fn healthy(leader: u64) -> Vec<MemberProbe> {
        (0..3)
            .map(|i| MemberProbe {
                name: format!("orders-{i}"),
                ordinal: i,
                answer: Ok(ClusterInfo {
                    node_id: i as u64,
                    role: if i as u64 == leader {
                        ClusterRole::Leader
                    } else {
                        ClusterRole::Follower
                    },
                    leader_id: Some(leader),
                    term: 4,
                    commit_index: 100,
                    applied_index: 100,
                    members: Vec::new(),
                    lag: Default::default(),
                }),
            })
            .collect()
    }

    #[test]
    fn nothing_to_do_when_every_pod_runs_the_update_revision() {
        let pods = [pod(0, "new"), pod(1, "new"), pod(2, "new")];
        assert_eq!(
            next_step(&sts("new"), &pods, &healthy(0)),
            RolloutStep::UpToDate
        );
        // Nothing to do needs no healthy replication either.
        assert_eq!(next_step(&sts("new"), &pods, &[]), RolloutStep::UpToDate);
    }

    #[test]
    fn followers_restart_first_highest_ordinal_first_then_the_leader_hands_over() {
        // Leader 2: the followers 1 and 0 go first, although the
        // StatefulSet controller would have started with 2.
        let mut pods = vec![pod(0, "old"), pod(1, "old"), pod(2, "old")];
        let mut order = Vec::new();
        loop {
            match next_step(&sts("new"), &pods, &healthy(2)) {
                RolloutStep::RestartFollower { pod, uid } => {
                    assert_eq!(uid.as_deref(), Some(format!("uid-{}", &pod[7..]).as_str()));
                    order.push(format!("restart {pod}"));
                    let p = pods.iter_mut().find(|p| p.name == pod).unwrap();
                    p.revision = Some("new".into());
                }
                RolloutStep::HandOverAndRestart { pod, ordinal, .. } => {
                    assert_eq!(ordinal, 2);
                    order.push(format!("hand over {pod}"));
                    pods[2].revision = Some("new".into());
                }
                RolloutStep::UpToDate => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            order,
            ["restart orders-1", "restart orders-0", "hand over orders-2"]
        );
    }

    #[test]
    fn an_outdated_leader_alone_hands_over() {
        let pods = [pod(0, "old"), pod(1, "new"), pod(2, "new")];
        assert_eq!(
            next_step(&sts("new"), &pods, &healthy(0)),
            RolloutStep::HandOverAndRestart {
                pod: "orders-0".into(),
                uid: Some("uid-0".into()),
                ordinal: 0
            }
        );
    }

    #[test]
    fn waits_while_a_replica_is_missing_down_or_not_ready() {
        let step = |pods: &[PodState], probes: &[MemberProbe]| next_step(&sts("new"), pods, probes);
        let waits = |step: RolloutStep, needle: &str| match step {
            RolloutStep::Wait(why) => assert!(why.contains(needle), "{why:?} lacks {needle:?}"),
            other => panic!("expected to wait for {needle:?}, got {other:?}"),
        };
        // The pod just deleted has not been recreated yet.
        waits(
            step(&[pod(0, "old"), pod(1, "old")], &healthy(0)),
            "2 of 3 replica pods",
        );
        let mut terminating = pod(2, "old");
        terminating.terminating = true;
        waits(
            step(&[pod(0, "old"), pod(1, "old"), terminating], &healthy(0)),
            "orders-2 is still shutting down",
        );
        // The replacement runs but has not caught up: the next restart
        // would leave a single up-to-date replica.
        let mut catching_up = pod(2, "new");
        catching_up.ready = false;
        waits(
            step(&[pod(0, "old"), pod(1, "old"), catching_up], &healthy(0)),
            "orders-2 is not ready",
        );
        // A replica that does not answer, or no leader.
        let mut silent = healthy(0);
        silent[1].answer = Err("no answer within 2 s".into());
        waits(
            step(&[pod(0, "old"), pod(1, "old"), pod(2, "new")], &silent),
            "not healthy",
        );
        let mut leaderless = healthy(0);
        for p in &mut leaderless {
            if let Ok(info) = &mut p.answer {
                info.leader_id = None;
                info.role = ClusterRole::Candidate;
            }
        }
        waits(
            step(&[pod(0, "old"), pod(1, "old"), pod(2, "new")], &leaderless),
            "not healthy",
        );
    }

    #[test]
    fn an_outdated_replica_that_is_not_ready_is_restarted_at_once() {
        // Template 2 crashes: its first pod never became ready. Template 3
        // (the fix) must replace it although not every replica is ready.
        let mut broken = pod(2, "rev-2");
        broken.ready = false;
        let pods = [pod(0, "rev-1"), pod(1, "rev-1"), broken];
        assert_eq!(
            next_step(&sts("rev-3"), &pods, &healthy(0)),
            RolloutStep::RestartNotReady {
                pod: "orders-2".into(),
                uid: Some("uid-2".into())
            }
        );
        // Even with replication unhealthy: it is not serving anyway.
        assert!(matches!(
            next_step(&sts("rev-3"), &pods, &[]),
            RolloutStep::RestartNotReady { .. }
        ));
        // A replica of the current template that is not ready yet is
        // catching up: the others wait for it.
        let mut catching_up = pod(2, "rev-3");
        catching_up.ready = false;
        let pods = [pod(0, "rev-1"), pod(1, "rev-1"), catching_up];
        assert!(matches!(
            next_step(&sts("rev-3"), &pods, &healthy(0)),
            RolloutStep::Wait(_)
        ));
    }

    #[test]
    fn rolled_out_only_when_the_statefulset_reports_every_replica_updated() {
        let mut set = sts("new");
        assert!(!rolled_out(&set), "no updatedReplicas reported");
        set.status.as_mut().unwrap().updated_replicas = Some(2);
        assert!(!rolled_out(&set), "one replica still runs the old template");
        set.status.as_mut().unwrap().updated_replicas = Some(3);
        assert!(rolled_out(&set));
        set.metadata.generation = Some(3);
        assert!(!rolled_out(&set), "a template it has not seen yet");
    }

    #[test]
    fn waits_until_the_statefulset_controller_saw_the_new_template() {
        let mut set = sts("old");
        set.metadata.generation = Some(3);
        let pods = [pod(0, "old"), pod(1, "old"), pod(2, "old")];
        assert!(matches!(
            next_step(&set, &pods, &healthy(0)),
            RolloutStep::Wait(_)
        ));
    }

    #[test]
    fn pod_state_reads_ordinal_revision_readiness_and_termination() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "orders-2", "uid": "u2",
                "labels": {"controller-revision-hash": "orders-abc",
                           "apps.kubernetes.io/pod-index": "2"},
                "deletionTimestamp": "2026-12-01T00:00:00Z"
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(
            PodState::of(&pod),
            Some(PodState {
                name: "orders-2".into(),
                ordinal: 2,
                uid: Some("u2".into()),
                revision: Some("orders-abc".into()),
                ready: true,
                terminating: true,
            })
        );
        // Without the pod-index label (before Kubernetes 1.28) the name's
        // suffix is the ordinal; no Ready condition means not ready.
        let old: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orders-10"},
        }))
        .unwrap();
        let state = PodState::of(&old).unwrap();
        assert_eq!(
            (state.ordinal, state.ready, state.revision),
            (10, false, None)
        );
    }
}

//! Status computation: observed state -> phase and conditions, with no I/O.
//!
//! Kept pure so every transition is unit-tested and so the reconciler can
//! compare the result with the current status and skip the write when
//! nothing changed (which, together with the generation predicate, keeps a
//! status write from causing another reconcile).

mod conditions;
mod reasons;
pub mod replication;
mod workload;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{ConditionType, DrasiStateStoreStatus, Phase, RestoredFrom, StorageStatus};

pub use conditions::{Conditions, find_condition, has_reason, upsert};
pub use reasons::{
    ConditionReason, DegradedReason, Problem, Progress, ProgressingReason, ReadyReason, Reasoned,
    ReplicationHealthyReason, all_reasons,
};
pub use replication::{MemberProbe, ReplicationObservation};
pub use workload::Workload;

/// How long an up-to-date server pod may stay unready before the store is
/// reported Degraded (a crash loop, a failing probe, an unschedulable pod).
pub const NOT_READY_GRACE_SECONDS: i64 = 600;

/// Everything the reconciler observed in one pass.
#[derive(Debug, Clone)]
pub struct Observation {
    pub generation: Option<i64>,
    pub paused: bool,
    pub endpoint: String,
    pub connection_secret: String,
    pub image: String,
    pub storage: StorageStatus,
    pub workload: Workload,
    /// Why the store needs a human (the Degraded condition).
    pub problem: Option<Problem>,
    /// A long-running change in flight, e.g. a volume expansion.
    pub progress: Option<Progress>,
    /// Where the data was restored from (`spec.restore`), once resolved.
    pub restored_from: Option<RestoredFrom>,
    /// What the replicas of a replicated store answered on `/v1/cluster`.
    pub replication: ReplicationObservation,
}

const NO_PROBLEM: &str = "no problem detected";

/// The status for `observation`, keeping `lastTransitionTime` of conditions
/// whose status did not change.
pub fn compute_status(
    previous: Option<&DrasiStateStoreStatus>,
    observation: &Observation,
    now: &Time,
) -> DrasiStateStoreStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let generation = observation.generation;
    let conditions = Conditions::new(previous_conditions, generation, now);

    if observation.paused {
        // Nothing was read or applied: keep what was last observed, only say
        // that the operator is not acting.
        let mut status = previous.cloned().unwrap_or_default();
        upsert(
            &mut status.conditions,
            conditions.make(
                ProgressingReason::Paused,
                "spec.paused is true: the operator creates, changes and deletes nothing",
            ),
        );
        status.phase = Some(Phase::Paused);
        status.observed_generation = generation;
        return status;
    }

    let workload = observation.workload;
    let problem = observation
        .problem
        .clone()
        .or_else(|| stuck_not_ready(previous_conditions, workload, now));
    let ready = match workload {
        Workload::Ready { ready } => conditions.make(
            ReadyReason::ServerReady,
            format!(
                "{ready} server pod(s) ready; clients connect with Secret {}",
                observation.connection_secret
            ),
        ),
        Workload::Missing => conditions.make(
            ReadyReason::ServerNotReady,
            "the server StatefulSet does not exist yet",
        ),
        Workload::RollingOut { ready, desired } | Workload::NotReady { ready, desired } => {
            conditions.make(
                ReadyReason::ServerNotReady,
                format!("{ready} of {desired} server pod(s) ready"),
            )
        }
    };

    let progressing = match (&problem, &observation.progress, workload) {
        (Some(_), _, _) => conditions.make(
            ProgressingReason::Stalled,
            "blocked until the Degraded condition is resolved",
        ),
        (None, Some(progress), _) => conditions.make(progress.reason, progress.message.clone()),
        (None, None, Workload::Ready { .. }) => conditions.make(
            ProgressingReason::Reconciled,
            "all objects are applied and up to date",
        ),
        (None, None, Workload::RollingOut { .. }) => conditions.make(
            ProgressingReason::RollingOut,
            "the StatefulSet is rolling out the current spec",
        ),
        (None, None, Workload::Missing | Workload::NotReady { .. }) => conditions.make(
            ProgressingReason::Creating,
            "waiting for the server pod to become ready",
        ),
    };

    let degraded = match &problem {
        Some(problem) => conditions.make(problem.reason, problem.message.clone()),
        None => conditions.make(DegradedReason::AsExpected, NO_PROBLEM),
    };

    let phase = if problem.is_some() {
        Phase::Degraded
    } else if matches!(workload, Workload::Ready { .. }) && observation.progress.is_none() {
        Phase::Ready
    } else {
        Phase::Provisioning
    };
    let exists = workload != Workload::Missing;
    let mut conditions_out = vec![ready, progressing, degraded];
    let replication = match &observation.replication {
        ReplicationObservation::NotReplicated => None,
        ReplicationObservation::NotProbed => {
            // Keep what was last observed, condition included.
            if let Some(previous) =
                find_condition(previous, ConditionType::ReplicationHealthy).cloned()
            {
                conditions_out.push(previous);
            }
            previous.and_then(|p| p.replication.clone())
        }
        ReplicationObservation::Probed(probes) => {
            let merged = replication::merge(
                previous.and_then(|p| p.replication.as_ref()),
                replication::summarize(probes),
                now,
            );
            let (reason, message) = replication::health(&merged);
            conditions_out.push(conditions.make(reason, message));
            Some(merged)
        }
    };
    DrasiStateStoreStatus {
        phase: Some(phase),
        conditions: conditions_out,
        observed_generation: generation,
        ready_replicas: workload.ready_replicas(),
        endpoint: exists.then(|| observation.endpoint.clone()),
        connection_secret: exists.then(|| observation.connection_secret.clone()),
        image: exists.then(|| observation.image.clone()),
        storage: Some(observation.storage.clone()),
        restored_from: observation.restored_from.clone(),
        replication,
    }
}

/// The status written before a store's first apply: phase `Pending`.
///
/// It is overwritten in the same pass once the objects are applied, so it
/// stays visible only while that first pass runs or keeps failing (API
/// errors, a webhook rejecting the StatefulSet): without it such a store
/// would show no phase at all.
pub fn pending_status(generation: Option<i64>, now: &Time) -> DrasiStateStoreStatus {
    let conditions = Conditions::new(&[], generation, now);
    DrasiStateStoreStatus {
        phase: Some(Phase::Pending),
        conditions: vec![
            conditions.make(
                ReadyReason::ServerNotReady,
                "the server StatefulSet does not exist yet",
            ),
            conditions.make(
                ProgressingReason::Creating,
                "applying the store's objects; if this lasts, see the operator's logs",
            ),
            conditions.make(DegradedReason::AsExpected, NO_PROBLEM),
        ],
        observed_generation: generation,
        ..Default::default()
    }
}

/// The status while deletion cleanup runs: phase `Terminating`.
///
/// The last observations (endpoint, storage, ...) are kept; the pod keeps
/// running until garbage collection removes it after the finalizer is gone,
/// but clients must not rely on the store any more, so `Ready` turns False.
/// `cleanup` says what the finalizer does; `failure` is set while cleanup
/// keeps failing and is retried.
pub fn terminating_status(
    previous: Option<&DrasiStateStoreStatus>,
    generation: Option<i64>,
    cleanup: &str,
    failure: Option<&str>,
    now: &Time,
) -> DrasiStateStoreStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let conditions = Conditions::new(previous_conditions, generation, now);
    let degraded = match failure {
        Some(error) => conditions.make(
            DegradedReason::CleanupFailed,
            format!("cleanup failed and is retried: {error}"),
        ),
        None => conditions.make(DegradedReason::AsExpected, NO_PROBLEM),
    };
    let mut status = previous.cloned().unwrap_or_default();
    for condition in [
        conditions.make(ReadyReason::Terminating, "the store is being deleted"),
        conditions.make(ProgressingReason::Terminating, cleanup),
        degraded,
    ] {
        upsert(&mut status.conditions, condition);
    }
    status.phase = Some(Phase::Terminating);
    status.observed_generation = generation;
    status
}

/// A problem when the StatefulSet is up to date but its pod has not been
/// ready for [`NOT_READY_GRACE_SECONDS`] (measured from the Ready
/// condition's last transition, so it survives operator restarts).
fn stuck_not_ready(previous: &[Condition], workload: Workload, now: &Time) -> Option<Problem> {
    let Workload::NotReady { ready, desired } = workload else {
        return None;
    };
    let since = previous
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_ref() && c.status == "False")?
        .last_transition_time
        .0;
    let waited = now.0.as_second() - since.as_second();
    (waited >= NOT_READY_GRACE_SECONDS).then(|| {
        Problem::new(
            DegradedReason::ServerNotReadyTooLong,
            format!(
                "{ready} of {desired} server pod(s) ready for {} minutes; check `kubectl describe \
                 pod` and the pod's logs (crash loop, failing probe, unschedulable, volume not \
                 attachable)",
                waited / 60
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
    }

    fn observation(workload: Workload) -> Observation {
        Observation {
            generation: Some(3),
            paused: false,
            endpoint: "http://s.ns.svc:7070".into(),
            connection_secret: "s-connection".into(),
            image: "img:1".into(),
            storage: StorageStatus {
                requested: Some(Quantity("1Gi".into())),
                capacity: Some(Quantity("1Gi".into())),
            },
            workload,
            problem: None,
            progress: None,
            restored_from: None,
            replication: ReplicationObservation::NotReplicated,
        }
    }

    fn cond<'a>(status: &'a DrasiStateStoreStatus, type_: &str) -> &'a Condition {
        let type_: ConditionType = type_.parse().expect("a condition type");
        find_condition(Some(status), type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn new_store_without_workload_is_provisioning() {
        let status = compute_status(None, &observation(Workload::Missing), &at(0));
        assert_eq!(status.phase, Some(Phase::Provisioning));
        assert_eq!(cond(&status, "Ready").status, "False");
        assert_eq!(cond(&status, "Progressing").reason, "Creating");
        assert_eq!(cond(&status, "Degraded").status, "False");
        assert_eq!(status.endpoint, None);
        assert_eq!(status.observed_generation, Some(3));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn ready_workload_is_ready_with_endpoint_and_secret() {
        let status = compute_status(None, &observation(Workload::Ready { ready: 1 }), &at(0));
        assert_eq!(status.phase, Some(Phase::Ready));
        assert_eq!(cond(&status, "Ready").status, "True");
        assert_eq!(cond(&status, "Progressing").status, "False");
        assert_eq!(status.ready_replicas, Some(1));
        assert_eq!(status.endpoint.as_deref(), Some("http://s.ns.svc:7070"));
        assert_eq!(status.connection_secret.as_deref(), Some("s-connection"));
    }

    #[test]
    fn last_transition_time_is_kept_while_status_is_unchanged() {
        let first = compute_status(None, &observation(Workload::Ready { ready: 1 }), &at(0));
        let again = compute_status(
            Some(&first),
            &observation(Workload::Ready { ready: 1 }),
            &at(60),
        );
        assert_eq!(
            first, again,
            "an unchanged observation gives an identical status"
        );

        let not_ready = compute_status(
            Some(&again),
            &observation(Workload::NotReady {
                ready: 0,
                desired: 1,
            }),
            &at(120),
        );
        assert_eq!(cond(&not_ready, "Ready").last_transition_time, at(120));
        // Degraded stayed False: its transition time is the original one.
        assert_eq!(cond(&not_ready, "Degraded").last_transition_time, at(0));
        assert_eq!(not_ready.phase, Some(Phase::Provisioning));
    }

    #[test]
    fn a_problem_degrades_and_stalls_but_keeps_reporting_readiness() {
        let mut obs = observation(Workload::Ready { ready: 1 });
        obs.problem = Some(Problem::new(
            DegradedReason::TlsSecretMissing,
            "Secret tls not found",
        ));
        let status = compute_status(None, &obs, &at(0));
        assert_eq!(status.phase, Some(Phase::Degraded));
        let degraded = cond(&status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "TlsSecretMissing")
        );
        assert_eq!(degraded.message, "Secret tls not found");
        assert_eq!(cond(&status, "Progressing").reason, "Stalled");
        assert_eq!(cond(&status, "Ready").status, "True");
    }

    #[test]
    fn progress_keeps_a_ready_store_provisioning() {
        let mut obs = observation(Workload::Ready { ready: 1 });
        obs.progress = Some(Progress::new(
            ProgressingReason::VolumeExpanding,
            "1Gi -> 2Gi",
        ));
        let status = compute_status(None, &obs, &at(0));
        assert_eq!(status.phase, Some(Phase::Provisioning));
        let progressing = cond(&status, "Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "VolumeExpanding")
        );
    }

    #[test]
    fn paused_keeps_observations_and_only_marks_progressing() {
        let ready = compute_status(None, &observation(Workload::Ready { ready: 1 }), &at(0));
        let mut obs = observation(Workload::Missing);
        obs.paused = true;
        obs.generation = Some(4);
        let paused = compute_status(Some(&ready), &obs, &at(30));
        assert_eq!(paused.phase, Some(Phase::Paused));
        assert_eq!(paused.observed_generation, Some(4));
        assert_eq!(paused.endpoint, ready.endpoint);
        assert_eq!(cond(&paused, "Ready"), cond(&ready, "Ready"));
        assert_eq!(cond(&paused, "Progressing").reason, "Paused");
    }

    #[test]
    fn pending_status_has_a_phase_and_all_conditions() {
        let status = pending_status(Some(1), &at(0));
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(cond(&status, "Ready").status, "False");
        assert_eq!(
            (
                cond(&status, "Progressing").status.as_str(),
                cond(&status, "Progressing").reason.as_str()
            ),
            ("True", "Creating")
        );
        assert_eq!(cond(&status, "Degraded").status, "False");
        // Nothing observed yet: no endpoint or Secret to advertise.
        assert_eq!(status.endpoint, None);
        assert_eq!(status.connection_secret, None);
        // The first real status after it keeps the transition times of
        // conditions that did not flip.
        let provisioning = compute_status(
            Some(&status),
            &observation(Workload::RollingOut {
                ready: 0,
                desired: 1,
            }),
            &at(5),
        );
        assert_eq!(provisioning.phase, Some(Phase::Provisioning));
        assert_eq!(cond(&provisioning, "Ready").last_transition_time, at(0));
    }

    #[test]
    fn terminating_keeps_observations_and_reports_cleanup_failures() {
        let ready = compute_status(None, &observation(Workload::Ready { ready: 1 }), &at(0));
        let terminating = terminating_status(
            Some(&ready),
            Some(4),
            "deleting PVC data-s-0",
            None,
            &at(10),
        );
        assert_eq!(terminating.phase, Some(Phase::Terminating));
        assert_eq!(terminating.observed_generation, Some(4));
        assert_eq!(terminating.endpoint, ready.endpoint);
        assert_eq!(terminating.storage, ready.storage);
        let r = cond(&terminating, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "Terminating")
        );
        assert_eq!(r.last_transition_time, at(10));
        let p = cond(&terminating, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            ("True", "Terminating", "deleting PVC data-s-0")
        );
        // Degraded stayed False: same transition time as before.
        assert_eq!(cond(&terminating, "Degraded").last_transition_time, at(0));
        assert_eq!(terminating.conditions.len(), 3);

        let failing = terminating_status(
            Some(&terminating),
            Some(4),
            "deleting PVC data-s-0",
            Some("listing PVCs: 500"),
            &at(20),
        );
        assert_eq!(failing.phase, Some(Phase::Terminating));
        let d = cond(&failing, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "CleanupFailed")
        );
        assert!(d.message.contains("listing PVCs: 500"), "{}", d.message);
        // The same failure again computes the identical status (no rewrite).
        let again = terminating_status(
            Some(&failing),
            Some(4),
            "deleting PVC data-s-0",
            Some("listing PVCs: 500"),
            &at(30),
        );
        assert_eq!(again, failing);

        // A store deleted before its first status still gets a full one.
        let fresh = terminating_status(None, Some(2), "nothing to clean up", None, &at(0));
        assert_eq!(fresh.phase, Some(Phase::Terminating));
        assert_eq!(fresh.conditions.len(), 3);
    }

    #[test]
    fn a_pod_unready_for_too_long_degrades_the_store() {
        let not_ready = Workload::NotReady {
            ready: 0,
            desired: 1,
        };
        let first = compute_status(None, &observation(not_ready), &at(0));
        assert_eq!(first.phase, Some(Phase::Provisioning));
        let soon = compute_status(
            Some(&first),
            &observation(not_ready),
            &at(NOT_READY_GRACE_SECONDS - 1),
        );
        assert_eq!(soon.phase, Some(Phase::Provisioning));
        let late = compute_status(
            Some(&soon),
            &observation(not_ready),
            &at(NOT_READY_GRACE_SECONDS),
        );
        assert_eq!(late.phase, Some(Phase::Degraded));
        assert_eq!(cond(&late, "Degraded").reason, "ServerNotReadyTooLong");
        assert!(cond(&late, "Degraded").message.contains("10 minutes"));
        // A rollout in progress is not "stuck".
        let rolling = Workload::RollingOut {
            ready: 0,
            desired: 1,
        };
        let rolling_late = compute_status(
            Some(&soon),
            &observation(rolling),
            &at(NOT_READY_GRACE_SECONDS * 2),
        );
        assert_eq!(rolling_late.phase, Some(Phase::Provisioning));
        // Ready again: no longer degraded.
        let recovered = compute_status(
            Some(&late),
            &observation(Workload::Ready { ready: 1 }),
            &at(NOT_READY_GRACE_SECONDS + 60),
        );
        assert_eq!(recovered.phase, Some(Phase::Ready));
        assert_eq!(cond(&recovered, "Degraded").status, "False");
    }

    fn probes(leader_term: u64, follower_2: Result<u64, &str>) -> ReplicationObservation {
        use drasi_store_protocol::{ClusterInfo, ClusterRole};
        let info = |id: u64, role, applied| ClusterInfo {
            node_id: id,
            role,
            leader_id: Some(0),
            term: leader_term,
            commit_index: 100,
            applied_index: applied,
            members: Vec::new(),
            lag: Default::default(),
        };
        let member = |ordinal: i32, answer| MemberProbe {
            name: format!("s-{ordinal}"),
            ordinal,
            answer,
        };
        ReplicationObservation::Probed(vec![
            member(0, Ok(info(0, ClusterRole::Leader, 100))),
            member(1, Ok(info(1, ClusterRole::Follower, 100))),
            member(
                2,
                follower_2
                    .map(|applied| info(2, ClusterRole::Follower, applied))
                    .map_err(str::to_owned),
            ),
        ])
    }

    #[test]
    fn a_replicated_store_reports_replication_without_touching_readiness() {
        let mut obs = observation(Workload::Ready { ready: 3 });
        obs.replication = probes(7, Ok(99));
        let healthy = compute_status(None, &obs, &at(0));
        assert_eq!(healthy.phase, Some(Phase::Ready));
        let replication = healthy.replication.as_ref().expect("replication block");
        assert_eq!(replication.leader.as_deref(), Some("s-0"));
        assert_eq!(replication.observed_at, Some(at(0)));
        let r = cond(&healthy, "ReplicationHealthy");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", "LeaderElected")
        );
        assert_eq!(healthy.conditions.len(), 4);

        // Indexes moved, nothing meaningful changed: the identical status,
        // so no write.
        obs.replication = probes(7, Ok(100));
        assert_eq!(compute_status(Some(&healthy), &obs, &at(30)), healthy);

        // A replica stops answering: the condition turns False, Ready and
        // the phase stay.
        obs.replication = probes(7, Err("no answer within 2 s"));
        let down = compute_status(Some(&healthy), &obs, &at(60));
        assert_eq!(down.phase, Some(Phase::Ready));
        assert_eq!(cond(&down, "Ready").status, "True");
        assert_eq!(cond(&down, "Degraded").status, "False");
        let r = cond(&down, "ReplicationHealthy");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "ReplicaUnreachable")
        );
        assert_eq!(r.last_transition_time, at(60));
        assert_eq!(down.replication.as_ref().unwrap().observed_at, Some(at(60)));

        // Not probed in a pass (e.g. an invalid spec): both are kept.
        obs.replication = ReplicationObservation::NotProbed;
        let kept = compute_status(Some(&down), &obs, &at(90));
        assert_eq!(kept.replication, down.replication);
        assert_eq!(
            cond(&kept, "ReplicationHealthy"),
            cond(&down, "ReplicationHealthy")
        );

        // A single replica has neither.
        obs.replication = ReplicationObservation::NotReplicated;
        let single = compute_status(Some(&down), &obs, &at(120));
        assert_eq!(single.replication, None);
        assert_eq!(single.conditions.len(), 3);
    }
}

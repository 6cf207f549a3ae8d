//! Status computation: observed state -> phase and conditions, with no I/O.
//!
//! Kept pure so every transition is unit-tested and so the reconciler can
//! compare the result with the current status and skip the write when
//! nothing changed (which, together with the generation predicate, keeps a
//! status write from causing another reconcile).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{DrasiStateStoreStatus, Phase, StorageStatus, condition_types};

/// Condition reasons. They are part of the user interface: docs/reconciler.md
/// explains each, and users search for them.
pub mod reasons {
    pub const SERVER_READY: &str = "ServerReady";
    pub const SERVER_NOT_READY: &str = "ServerNotReady";
    pub const CREATING: &str = "Creating";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const VOLUME_EXPANDING: &str = "VolumeExpanding";
    pub const RECONCILED: &str = "Reconciled";
    pub const STALLED: &str = "Stalled";
    pub const PAUSED: &str = "Paused";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const AUTH_SECRET_MISSING: &str = "AuthSecretMissing";
    pub const AUTH_SECRET_INVALID: &str = "AuthSecretInvalid";
    pub const TLS_SECRET_MISSING: &str = "TlsSecretMissing";
    pub const TLS_SECRET_INVALID: &str = "TlsSecretInvalid";
    pub const VOLUME_EXPANSION_NOT_SUPPORTED: &str = "VolumeExpansionNotSupported";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SERVER_NOT_READY_TOO_LONG: &str = "ServerNotReadyTooLong";
    pub const TERMINATING: &str = "Terminating";
    pub const CLEANUP_FAILED: &str = "CleanupFailed";
}

/// How long an up-to-date server pod may stay unready before the store is
/// reported Degraded (a crash loop, a failing probe, an unschedulable pod).
pub const NOT_READY_GRACE_SECONDS: i64 = 600;

/// A reason with a human-readable message, for Degraded and Progressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reasoned {
    pub reason: &'static str,
    pub message: String,
}

impl Reasoned {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What the server workload looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// No StatefulSet (not created yet, or blocked before creation).
    Missing,
    /// The StatefulSet controller has not caught up with the latest spec, or
    /// is replacing pods.
    RollingOut { ready: i32, desired: i32 },
    /// Up to date, but fewer ready pods than desired.
    NotReady { ready: i32, desired: i32 },
    /// Up to date and every pod ready.
    Ready { ready: i32 },
}

impl Workload {
    /// Reads the workload state from a StatefulSet as the API returned it.
    pub fn from_statefulset(sts: Option<&StatefulSet>) -> Self {
        let Some(sts) = sts else {
            return Self::Missing;
        };
        let desired = sts.spec.replicas.unwrap_or(1);
        let Some(status) = sts.status.as_ref() else {
            return Self::RollingOut { ready: 0, desired };
        };
        let ready = status.ready_replicas.unwrap_or(0);
        let generation = sts.metadata.generation.unwrap_or(0);
        let seen = status.observed_generation.unwrap_or(0) >= generation;
        let revisions_differ = matches!(
            (&status.current_revision, &status.update_revision),
            (Some(current), Some(update)) if current != update
        );
        if !seen || revisions_differ {
            Self::RollingOut { ready, desired }
        } else if ready >= desired {
            Self::Ready { ready }
        } else {
            Self::NotReady { ready, desired }
        }
    }

    fn ready_replicas(self) -> Option<i32> {
        match self {
            Self::Missing => None,
            Self::RollingOut { ready, .. }
            | Self::NotReady { ready, .. }
            | Self::Ready { ready } => Some(ready),
        }
    }
}

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
    pub problem: Option<Reasoned>,
    /// A long-running change in flight, e.g. a volume expansion.
    pub progress: Option<Reasoned>,
}

/// The status for `observation`, keeping `lastTransitionTime` of conditions
/// whose status did not change.
pub fn compute_status(
    previous: Option<&DrasiStateStoreStatus>,
    observation: &Observation,
    now: &Time,
) -> DrasiStateStoreStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let generation = observation.generation;
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        make_condition(
            previous_conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        )
    };

    if observation.paused {
        // Nothing was read or applied: keep what was last observed, only say
        // that the operator is not acting.
        let mut status = previous.cloned().unwrap_or_default();
        let progressing = condition(
            condition_types::PROGRESSING,
            false,
            reasons::PAUSED,
            "spec.paused is true: the operator creates, changes and deletes nothing".into(),
        );
        upsert(&mut status.conditions, progressing);
        status.phase = Some(Phase::Paused);
        status.observed_generation = generation;
        return status;
    }

    let workload = observation.workload;
    let ready = matches!(workload, Workload::Ready { .. });
    let problem = observation
        .problem
        .clone()
        .or_else(|| stuck_not_ready(previous_conditions, workload, now));
    let problem = &problem;
    let ready_condition = match workload {
        Workload::Ready { ready } => condition(
            condition_types::READY,
            true,
            reasons::SERVER_READY,
            format!(
                "{ready} server pod(s) ready; clients connect with Secret {}",
                observation.connection_secret
            ),
        ),
        Workload::Missing => condition(
            condition_types::READY,
            false,
            reasons::SERVER_NOT_READY,
            "the server StatefulSet does not exist yet".into(),
        ),
        Workload::RollingOut { ready, desired } | Workload::NotReady { ready, desired } => {
            condition(
                condition_types::READY,
                false,
                reasons::SERVER_NOT_READY,
                format!("{ready} of {desired} server pod(s) ready"),
            )
        }
    };

    let progressing_condition = match (problem, &observation.progress, workload) {
        (Some(_), _, _) => condition(
            condition_types::PROGRESSING,
            false,
            reasons::STALLED,
            "blocked until the Degraded condition is resolved".into(),
        ),
        (None, Some(progress), _) => condition(
            condition_types::PROGRESSING,
            true,
            progress.reason,
            progress.message.clone(),
        ),
        (None, None, Workload::Ready { .. }) => condition(
            condition_types::PROGRESSING,
            false,
            reasons::RECONCILED,
            "all objects are applied and up to date".into(),
        ),
        (None, None, Workload::RollingOut { .. }) => condition(
            condition_types::PROGRESSING,
            true,
            reasons::ROLLING_OUT,
            "the StatefulSet is rolling out the current spec".into(),
        ),
        (None, None, Workload::Missing | Workload::NotReady { .. }) => condition(
            condition_types::PROGRESSING,
            true,
            reasons::CREATING,
            "waiting for the server pod to become ready".into(),
        ),
    };

    let degraded_condition = match problem {
        Some(problem) => condition(
            condition_types::DEGRADED,
            true,
            problem.reason,
            problem.message.clone(),
        ),
        None => condition(
            condition_types::DEGRADED,
            false,
            reasons::AS_EXPECTED,
            "no problem detected".into(),
        ),
    };

    let phase = if problem.is_some() {
        Phase::Degraded
    } else if ready && observation.progress.is_none() {
        Phase::Ready
    } else {
        Phase::Provisioning
    };
    let exists = workload != Workload::Missing;
    DrasiStateStoreStatus {
        phase: Some(phase),
        conditions: vec![ready_condition, progressing_condition, degraded_condition],
        observed_generation: generation,
        ready_replicas: workload.ready_replicas(),
        endpoint: exists.then(|| observation.endpoint.clone()),
        connection_secret: exists.then(|| observation.connection_secret.clone()),
        image: exists.then(|| observation.image.clone()),
        storage: Some(observation.storage.clone()),
    }
}

/// The status written before a store's first apply: phase `Pending`.
///
/// It is overwritten in the same pass once the objects are applied, so it
/// stays visible only while that first pass runs or keeps failing (API
/// errors, a webhook rejecting the StatefulSet): without it such a store
/// would show no phase at all.
pub fn pending_status(generation: Option<i64>, now: &Time) -> DrasiStateStoreStatus {
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        make_condition(&[], type_, status, reason, message.into(), generation, now)
    };
    DrasiStateStoreStatus {
        phase: Some(Phase::Pending),
        conditions: vec![
            condition(
                condition_types::READY,
                false,
                reasons::SERVER_NOT_READY,
                "the server StatefulSet does not exist yet",
            ),
            condition(
                condition_types::PROGRESSING,
                true,
                reasons::CREATING,
                "applying the store's objects; if this lasts, see the operator's logs",
            ),
            condition(
                condition_types::DEGRADED,
                false,
                reasons::AS_EXPECTED,
                "no problem detected",
            ),
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
    let mut status = previous.cloned().unwrap_or_default();
    let previous_conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        make_condition(
            &previous_conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        )
    };
    let ready = condition(
        condition_types::READY,
        false,
        reasons::TERMINATING,
        "the store is being deleted".into(),
    );
    let progressing = condition(
        condition_types::PROGRESSING,
        true,
        reasons::TERMINATING,
        cleanup.to_string(),
    );
    let degraded = match failure {
        Some(error) => condition(
            condition_types::DEGRADED,
            true,
            reasons::CLEANUP_FAILED,
            format!("cleanup failed and is retried: {error}"),
        ),
        None => condition(
            condition_types::DEGRADED,
            false,
            reasons::AS_EXPECTED,
            "no problem detected".into(),
        ),
    };
    for condition in [ready, progressing, degraded] {
        upsert(&mut status.conditions, condition);
    }
    status.phase = Some(Phase::Terminating);
    status.observed_generation = generation;
    status
}

/// A problem when the StatefulSet is up to date but its pod has not been
/// ready for [`NOT_READY_GRACE_SECONDS`] (measured from the Ready
/// condition's last transition, so it survives operator restarts).
fn stuck_not_ready(previous: &[Condition], workload: Workload, now: &Time) -> Option<Reasoned> {
    let Workload::NotReady { ready, desired } = workload else {
        return None;
    };
    let since = previous
        .iter()
        .find(|c| c.type_ == condition_types::READY && c.status == "False")?
        .last_transition_time
        .0;
    let waited = now.0.as_second() - since.as_second();
    (waited >= NOT_READY_GRACE_SECONDS).then(|| {
        Reasoned::new(
            reasons::SERVER_NOT_READY_TOO_LONG,
            format!(
                "{ready} of {desired} server pod(s) ready for {} minutes; check `kubectl describe \
                 pod` and the pod's logs (crash loop, failing probe, unschedulable, volume not \
                 attachable)",
                waited / 60
            ),
        )
    })
}

/// The status condition of `type_` in `status`, if present.
pub fn find_condition<'a>(
    status: Option<&'a DrasiStateStoreStatus>,
    type_: &str,
) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

fn make_condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    // By convention lastTransitionTime moves only when the status flips;
    // reason and message may change underneath without a transition.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn upsert(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
        }
    }

    fn cond<'a>(status: &'a DrasiStateStoreStatus, type_: &str) -> &'a Condition {
        find_condition(Some(status), type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn new_store_without_workload_is_provisioning() {
        let status = compute_status(None, &observation(Workload::Missing), &at(0));
        assert_eq!(status.phase, Some(Phase::Provisioning));
        assert_eq!(cond(&status, "Ready").status, "False");
        assert_eq!(cond(&status, "Progressing").reason, reasons::CREATING);
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
        obs.problem = Some(Reasoned::new(
            reasons::TLS_SECRET_MISSING,
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
        assert_eq!(cond(&status, "Progressing").reason, reasons::STALLED);
        assert_eq!(cond(&status, "Ready").status, "True");
    }

    #[test]
    fn progress_keeps_a_ready_store_provisioning() {
        let mut obs = observation(Workload::Ready { ready: 1 });
        obs.progress = Some(Reasoned::new(reasons::VOLUME_EXPANDING, "1Gi -> 2Gi"));
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
        assert_eq!(cond(&paused, "Progressing").reason, reasons::PAUSED);
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
            ("True", reasons::CREATING)
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
            ("False", reasons::TERMINATING)
        );
        assert_eq!(r.last_transition_time, at(10));
        let p = cond(&terminating, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            ("True", reasons::TERMINATING, "deleting PVC data-s-0")
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
            ("True", reasons::CLEANUP_FAILED)
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

    /// The reasons table in docs/reconciler.md is what users (and the
    /// README's troubleshooting section) rely on: it must list every reason
    /// this module defines, and nothing that does not exist.
    #[test]
    fn reasons_table_in_reconciler_md_is_complete_and_accurate() {
        let source = include_str!("status.rs");
        let module = source
            .split_once("pub mod reasons {")
            .and_then(|(_, rest)| rest.split_once("\n}"))
            .expect("reasons module")
            .0;
        let defined: std::collections::BTreeSet<&str> = module
            .lines()
            .filter(|l| l.trim_start().starts_with("pub const"))
            .map(|l| l.split('"').nth(1).expect("string constant"))
            .collect();
        assert!(defined.contains(reasons::SERVER_NOT_READY_TOO_LONG));
        assert!(defined.contains(reasons::CLEANUP_FAILED));

        let docs = include_str!("../../../docs/reconciler.md");
        let table = docs
            .split_once("### Conditions and reasons")
            .and_then(|(_, rest)| rest.split("\n## ").next())
            .expect("reasons section in docs/reconciler.md");
        let rows: Vec<(&str, &str)> = table
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`'), cells[3].trim_matches('`'))
            })
            .collect();
        let documented: std::collections::BTreeSet<&str> =
            rows.iter().map(|(_, reason)| *reason).collect();
        let undocumented: Vec<_> = defined.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "reasons missing from docs/reconciler.md: {undocumented:?}"
        );
        let unknown: Vec<_> = documented.difference(&defined).collect();
        assert!(
            unknown.is_empty(),
            "documented but not defined: {unknown:?}"
        );
        for (condition, _) in rows {
            assert!(
                [
                    condition_types::READY,
                    condition_types::PROGRESSING,
                    condition_types::DEGRADED
                ]
                .contains(&condition),
                "unknown condition type {condition:?} in the reasons table"
            );
        }
    }

    fn sts(generation: i64, status: Option<StatefulSetStatus>) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: StatefulSetSpec {
                replicas: Some(1),
                ..Default::default()
            },
            status,
        }
    }

    #[test]
    fn workload_reads_statefulset_status() {
        assert_eq!(Workload::from_statefulset(None), Workload::Missing);
        assert_eq!(
            Workload::from_statefulset(Some(&sts(1, None))),
            Workload::RollingOut {
                ready: 0,
                desired: 1
            }
        );
        let ready = StatefulSetStatus {
            observed_generation: Some(2),
            ready_replicas: Some(1),
            replicas: 1,
            current_revision: Some("r1".into()),
            update_revision: Some("r1".into()),
            ..Default::default()
        };
        assert_eq!(
            Workload::from_statefulset(Some(&sts(2, Some(ready.clone())))),
            Workload::Ready { ready: 1 }
        );
        // The controller has not seen generation 3 yet.
        assert!(matches!(
            Workload::from_statefulset(Some(&sts(3, Some(ready.clone())))),
            Workload::RollingOut { .. }
        ));
        let rolling = StatefulSetStatus {
            update_revision: Some("r2".into()),
            ..ready.clone()
        };
        assert!(matches!(
            Workload::from_statefulset(Some(&sts(2, Some(rolling)))),
            Workload::RollingOut { .. }
        ));
        let not_ready = StatefulSetStatus {
            ready_replicas: None,
            ..ready
        };
        assert_eq!(
            Workload::from_statefulset(Some(&sts(2, Some(not_ready)))),
            Workload::NotReady {
                ready: 0,
                desired: 1
            }
        );
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
        assert_eq!(
            cond(&late, "Degraded").reason,
            reasons::SERVER_NOT_READY_TOO_LONG
        );
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
}

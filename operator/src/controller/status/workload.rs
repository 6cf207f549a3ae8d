//! The server workload's state, read from its StatefulSet.

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::builders::ON_DELETE;

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
        let on_delete = sts
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            == Some(ON_DELETE);
        // With `OnDelete` the StatefulSet controller never moves
        // `currentRevision` on; the count of updated pods tells instead.
        let revisions_differ = if on_delete {
            status.updated_replicas.unwrap_or(0) < desired
        } else {
            matches!(
                (&status.current_revision, &status.update_revision),
                (Some(current), Some(update)) if current != update
            )
        };
        if !seen || revisions_differ {
            Self::RollingOut { ready, desired }
        } else if ready >= desired {
            Self::Ready { ready }
        } else {
            Self::NotReady { ready, desired }
        }
    }

    pub fn ready_replicas(self) -> Option<i32> {
        match self {
            Self::Missing => None,
            Self::RollingOut { ready, .. }
            | Self::NotReady { ready, .. }
            | Self::Ready { ready } => Some(ready),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

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
}

//! Rolling a replicated store onto a new pod template, one replica at a
//! time, followers first, the leader last after a leadership hand-over.
//! `plan` decides (pure); this module reads the pods, asks the leader to
//! step down and deletes pods. docs/replication.md ("Rolling updates")
//! has the reasoning.

pub mod plan;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

use super::Context;
use super::api::{ApiError, describe};
use super::cluster_probe::ProbeTargets;
use super::events::EventReason;
use super::status::{MemberProbe, Progress, ProgressingReason};
use crate::labels;
use plan::{PodState, RolloutStep, next_step};

/// Takes the next step of a replicated store's rollout, if one is due,
/// and says what it is doing (for the `Progressing` condition); `None`
/// when every pod runs the current template.
pub async fn step(
    ctx: &Context,
    namespace: &str,
    name: &str,
    sts: &StatefulSet,
    probes: &[MemberProbe],
    targets: &ProbeTargets,
    regarding: &ObjectReference,
) -> Result<Option<Progress>, ApiError> {
    if plan::rolled_out(sts) {
        return Ok(None);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&labels::selector_string(name)))
        .await
        .map_err(|e| {
            ApiError::new(
                "listing the pods of",
                describe::<StatefulSet>(namespace, name),
                e,
            )
        })?;
    let states: Vec<PodState> = listed.items.iter().filter_map(PodState::of).collect();
    let updated = updated_count(sts);
    let replicas = sts.spec.replicas.unwrap_or(1);
    let progress = |what: String| {
        Some(Progress {
            reason: ProgressingReason::RollingOut,
            message: format!("{updated} of {replicas} replicas run the current template; {what}"),
        })
    };
    let pods = &pods;
    let restart = |pod: String, uid: Option<String>, note: String| async move {
        delete_pod(pods, namespace, &pod, uid).await?;
        ctx.events
            .normal(
                regarding,
                EventReason::ReplicaRestarted,
                "RollingUpdate",
                note,
            )
            .await;
        Ok::<_, ApiError>(())
    };
    match next_step(sts, &states, probes) {
        RolloutStep::UpToDate => Ok(None),
        RolloutStep::Wait(why) => Ok(progress(format!("waiting: {why}"))),
        RolloutStep::RestartFollower { pod, uid } => {
            let note = format!(
                "deleted follower {pod} so that it restarts from the current template ({updated} \
                 of {replicas} replicas updated; the leader goes last)"
            );
            restart(pod.clone(), uid, note).await?;
            Ok(progress(format!("restarting follower {pod}")))
        }
        RolloutStep::RestartNotReady { pod, uid } => {
            let note = format!(
                "deleted {pod}, which runs an outdated template and is not ready, so that it \
                 restarts from the current template"
            );
            restart(pod.clone(), uid, note).await?;
            Ok(progress(format!(
                "restarting {pod}, which is outdated and not ready"
            )))
        }
        RolloutStep::HandOverAndRestart { pod, uid, ordinal } => {
            match ctx.cluster_probe.step_down(targets, ordinal).await {
                Ok(answer) if answer.stepped_down => {
                    let successor = answer
                        .leader_id
                        .map_or_else(|| "another replica".to_owned(), |id| format!("{name}-{id}"));
                    delete_pod(pods, namespace, &pod, uid).await?;
                    ctx.events
                        .normal(
                            regarding,
                            EventReason::LeadershipHandedOver,
                            "RollingUpdate",
                            format!(
                                "leader {pod} handed leadership to {successor} in {} ms (term \
                                 {}); deleted {pod} so that it restarts from the current template",
                                answer.took_ms, answer.term
                            ),
                        )
                        .await;
                    Ok(progress(format!(
                        "{pod} handed leadership to {successor} and restarts"
                    )))
                }
                // Leadership moved since the probe: the next pass plans
                // again with fresh answers.
                Ok(_) => Ok(progress(format!(
                    "{pod} is no longer the leader, re-checking"
                ))),
                Err(why) => {
                    ctx.events
                        .warning(
                            regarding,
                            EventReason::LeadershipHandOverFailed,
                            "RollingUpdate",
                            format!(
                                "leader {pod} did not hand leadership over, so it is not \
                                 restarted yet: {why}"
                            ),
                        )
                        .await;
                    Ok(progress(format!(
                        "leader {pod} could not hand leadership over yet: {why}"
                    )))
                }
            }
        }
    }
}

fn updated_count(sts: &StatefulSet) -> i32 {
    sts.status
        .as_ref()
        .and_then(|s| s.updated_replicas)
        .unwrap_or(0)
}

/// Deletes the pod the plan chose, only if it is still that pod (its uid):
/// one already replaced or gone counts as done.
async fn delete_pod(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> Result<(), ApiError> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 409 => Ok(()),
        Err(e) => Err(ApiError::new(
            "deleting",
            describe::<Pod>(namespace, name),
            e,
        )),
    }
}

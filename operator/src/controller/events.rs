//! Kubernetes Events on important transitions (`kubectl describe dss`).
//!
//! Publishing is best effort: an event that cannot be written is logged and
//! never fails a reconcile, because events are for humans, not for state.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::api::FIELD_MANAGER;

/// Event reasons the operator emits; docs/reconciler.md lists them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum EventReason {
    Created,
    Ready,
    Degraded,
    Paused,
    Resumed,
    VolumeExpansionStarted,
    VolumeExpansionFinished,
    TokenRotationStarted,
    TokenRotationSwitched,
    TokenRotationFinished,
    Cleanup,
    CleanupSkipped,
    InvalidObject,
    RestoreWaiting,
    Restoring,
    ReplicaRestarted,
    LeadershipHandedOver,
    LeadershipHandOverFailed,
}

#[derive(Clone)]
pub struct EventPublisher {
    recorder: Recorder,
    instance: Option<String>,
}

impl EventPublisher {
    /// `instance` distinguishes operator replicas (the pod name).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: instance.clone(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            instance,
        }
    }

    /// The operator replica events are reported from, for other
    /// controllers' recorders.
    pub fn instance(&self) -> Option<String> {
        self.instance.clone()
    }

    pub async fn normal(
        &self,
        regarding: &ObjectReference,
        reason: EventReason,
        action: &str,
        note: String,
    ) {
        self.publish(regarding, EventType::Normal, reason, action, note)
            .await;
    }

    pub async fn warning(
        &self,
        regarding: &ObjectReference,
        reason: EventReason,
        action: &str,
        note: String,
    ) {
        self.publish(regarding, EventType::Warning, reason, action, note)
            .await;
    }

    async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: EventReason,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(
                object = regarding.name.as_deref().unwrap_or_default(),
                namespace = regarding.namespace.as_deref().unwrap_or_default(),
                %reason,
                %error,
                "could not publish event"
            );
        }
    }
}

//! Building and reading the status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::reasons::ConditionReason;
use crate::crd::{ConditionType, DrasiStateStoreStatus};

/// Makes conditions for one status computation: the type and status of each
/// follow from its reason, every one carries the same observed generation,
/// and `lastTransitionTime` is carried over from `previous` while the
/// condition's status does not flip.
pub struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: &'a Time,
}

impl<'a> Conditions<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>, now: &'a Time) -> Self {
        Self {
            previous,
            generation,
            now,
        }
    }

    pub fn make<R: ConditionReason>(&self, reason: R, message: impl Into<String>) -> Condition {
        let type_: &'static str = R::CONDITION.into();
        let status = if reason.status() { "True" } else { "False" };
        // By convention lastTransitionTime moves only when the status flips;
        // reason and message may change underneath without a transition.
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        let reason: &'static str = reason.into();
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}

/// Replaces the condition of the same type, or appends it.
pub fn upsert(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// The status condition of `type_` in `status`, if present.
pub fn find_condition(
    status: Option<&DrasiStateStoreStatus>,
    type_: ConditionType,
) -> Option<&Condition> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_.as_ref())
}

/// Whether `status` carries `reason` on its condition, with the status the
/// reason implies.
pub fn has_reason<R: ConditionReason>(status: Option<&DrasiStateStoreStatus>, reason: R) -> bool {
    let expected = if reason.status() { "True" } else { "False" };
    let reason: &'static str = reason.into();
    find_condition(status, R::CONDITION).is_some_and(|c| c.status == expected && c.reason == reason)
}

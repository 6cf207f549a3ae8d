//! Condition reasons: one enum per condition type, so a reason can only be
//! set on the condition it belongs to, with the status it implies.
//!
//! They are part of the user interface: docs/reconciler.md and the README's
//! troubleshooting table explain each (`tests/docs_reasons.rs` checks both
//! tables against these enums), and users search for them.

use strum::IntoEnumIterator;

use crate::crd::ConditionType;

/// A reason of one condition type.
pub trait ConditionReason: Copy + Into<&'static str> + IntoEnumIterator {
    /// The condition this reason belongs to.
    const CONDITION: ConditionType;
    /// The condition's status whenever it carries this reason.
    fn status(self) -> bool;
}

/// Reasons of the `Ready` condition.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum ReadyReason {
    ServerReady,
    ServerNotReady,
    Terminating,
}

impl ConditionReason for ReadyReason {
    const CONDITION: ConditionType = ConditionType::Ready;
    fn status(self) -> bool {
        self == Self::ServerReady
    }
}

/// Reasons of the `Progressing` condition.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum ProgressingReason {
    Creating,
    RollingOut,
    VolumeExpanding,
    Terminating,
    Reconciled,
    Stalled,
    Paused,
    RestoreBackupNotCompleted,
}

impl ConditionReason for ProgressingReason {
    const CONDITION: ConditionType = ConditionType::Progressing;
    fn status(self) -> bool {
        matches!(
            self,
            Self::Creating
                | Self::RollingOut
                | Self::VolumeExpanding
                | Self::Terminating
                | Self::RestoreBackupNotCompleted
        )
    }
}

/// Reasons of the `Degraded` condition: every one but `AsExpected` is a
/// problem that needs a human.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum DegradedReason {
    AsExpected,
    AuthSecretMissing,
    AuthSecretInvalid,
    TlsSecretMissing,
    TlsSecretInvalid,
    VolumeExpansionNotSupported,
    ServerNotReadyTooLong,
    InvalidSpec,
    CleanupFailed,
    ObjectNotOwned,
    SecretNotOptedIn,
    ImageNotAllowed,
    RestoreBackupNotFound,
    RestoreBackupFailed,
    RestoreSourceInvalid,
    RestoreCredentialsSecretMissing,
    ReplicasChangeNotSupported,
}

impl ConditionReason for DegradedReason {
    const CONDITION: ConditionType = ConditionType::Degraded;
    fn status(self) -> bool {
        self != Self::AsExpected
    }
}

/// Reasons of the `ReplicationHealthy` condition, which only replicated
/// stores carry (from each replica's `GET /v1/cluster`). Informational: it
/// changes neither `Ready` nor the phase.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum ReplicationHealthyReason {
    /// A majority agrees on a leader, every replica answers, none lags.
    LeaderElected,
    /// Enough replicas answered, but no leader is known to a majority.
    NoLeader,
    /// A replica did not answer (or too few did to tell the leader).
    ReplicaUnreachable,
    /// A replica is more than `LAG_THRESHOLD` entries behind the leader.
    ReplicaLagging,
}

impl ConditionReason for ReplicationHealthyReason {
    const CONDITION: ConditionType = ConditionType::ReplicationHealthy;
    fn status(self) -> bool {
        self == Self::LeaderElected
    }
}

/// Every (condition, status, reason) the operator can set, for the docs checks.
pub fn all_reasons() -> Vec<(ConditionType, bool, &'static str)> {
    fn of<R: ConditionReason>() -> impl Iterator<Item = (ConditionType, bool, &'static str)> {
        R::iter().map(|r| (R::CONDITION, r.status(), r.into()))
    }
    of::<ReadyReason>()
        .chain(of::<ProgressingReason>())
        .chain(of::<DegradedReason>())
        .chain(of::<ReplicationHealthyReason>())
        .collect()
}

/// A reason with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reasoned<R> {
    pub reason: R,
    pub message: String,
}

impl<R> Reasoned<R> {
    pub fn new(reason: R, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Why the store needs a human: `Degraded=True`.
pub type Problem = Reasoned<DegradedReason>;

/// A long-running change in flight, e.g. a volume expansion: `Progressing=True`.
pub type Progress = Reasoned<ProgressingReason>;

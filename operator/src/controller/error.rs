//! Reconcile errors: API failures, wrapped by the step that met them. They
//! name the object and the action, never secret values. A problem the user
//! must fix (a missing Secret, an invalid spec) is not an error: it is
//! reported in the status and retried on a timer.

use super::api::ApiError;
use super::apply::ApplyError;
use super::dereference::DereferenceError;
use super::update_status::StatusError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dereference(#[from] DereferenceError),

    #[error(transparent)]
    Apply(#[from] ApplyError),

    #[error(transparent)]
    Status(#[from] StatusError),

    /// Deletion cleanup, or releasing the finalizer of a malformed object.
    #[error(transparent)]
    Api(#[from] ApiError),

    /// Adding or removing the finalizer, or the wrapped reconcile, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The object lacks a field the API server always sets (name, namespace).
    #[error("DrasiStateStore without {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Low-cardinality label for `reconcile_errors_total{reason}`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::Dereference(DereferenceError { source, .. })
            | Self::Apply(ApplyError { source, .. })
            | Self::Status(StatusError { source, .. })
            | Self::Api(source) => source.metric_reason(),
            // Apply and cleanup failures are unwrapped by `From`, so what is
            // left is adding or removing the finalizer itself.
            Self::Finalizer(_) => "Finalizer",
            Self::MissingMetadata(_) => "MissingMetadata",
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(error: kube::runtime::finalizer::Error<Error>) -> Self {
        match error {
            // Unwrap our own errors so logs and metrics see the real cause.
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
            other => Self::Finalizer(Box::new(other)),
        }
    }
}

//! Reconcile errors. They name the object and the action, never secret values.

use crate::builders::BuildError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed; retried with backoff.
    #[error("{action} {target}: {source}")]
    Kube {
        action: &'static str,
        target: String,
        #[source]
        source: kube::Error,
    },

    /// The builders rejected the spec (validation normally catches this first).
    #[error("building the desired objects of {store}: {source}")]
    Build {
        store: String,
        #[source]
        source: BuildError,
    },

    /// Adding or removing the finalizer, or the wrapped reconcile, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The object lacks a field the API server always sets (name, namespace).
    #[error("DrasiStateStore without {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    pub fn kube(action: &'static str, target: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action,
            target: target.into(),
            source,
        }
    }

    /// Low-cardinality label for `reconcile_errors_total{reason}`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => kube_reason(source),
            Self::Build { .. } => "Build",
            // Apply and cleanup failures are unwrapped by `From`, so what is
            // left is adding or removing the finalizer itself.
            Self::Finalizer(_) => "Finalizer",
            Self::MissingMetadata(_) => "MissingMetadata",
        }
    }
}

fn kube_reason(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.is_not_found() => "NotFound",
        kube::Error::Api(status) if status.code == 409 => "Conflict",
        kube::Error::Api(status) if status.code == 403 => "Forbidden",
        kube::Error::Api(status) if status.code == 422 => "Invalid",
        kube::Error::Api(_) => "ApiError",
        _ => "Transport",
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

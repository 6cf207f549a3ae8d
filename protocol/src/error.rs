//! Error codes. Every non-2xx answer (except `HEAD`) carries an
//! [`ErrorBody`] as JSON; clients branch on `code`, humans read `message`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `GET /v1/kv` for an absent key (not an error for the trait: `Ok(None)`).
    KeyNotFound,
    RouteNotFound,
    MethodNotAllowed,
    Unauthorized,
    /// Missing, duplicate or unknown query parameter, bad percent-encoding.
    InvalidQuery,
    /// A store_id or key that is not valid UTF-8 after decoding.
    InvalidUtf8,
    /// A batch frame that is truncated, has trailing bytes, or a bad body.
    MalformedBody,
    /// A body whose `Content-Type` the route does not take (so far only
    /// `POST /v1/admin/import`, which takes a snapshot).
    UnsupportedMediaType,
    KeyTooLarge,
    ValueTooLarge,
    BatchTooLarge,
    BodyTooLarge,
    /// The answer would exceed the server's `--max-response-bytes`
    /// (a `get_many` of many large values): ask for fewer keys at a time.
    ResponseTooLarge,
    /// The body did not arrive within the server's read timeout.
    RequestTimeout,
    /// Shutting down or the database is not ready: nothing was applied, so
    /// the request may be retried.
    Unavailable,
    /// A replicated store could not confirm a write in time (no majority
    /// reachable, or the leader changed mid-write): it may or may not be
    /// applied, so only an idempotent request may be sent again.
    Indeterminate,
    StorageError,
    Internal,
    /// A WAL call for a source that has no log (never registered, or deleted).
    WalNotRegistered,
    /// An append to a full log whose policy is `rejectIncoming`.
    WalCapacityExhausted,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::KeyNotFound | ErrorCode::RouteNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthorized => 401,
            ErrorCode::InvalidQuery | ErrorCode::InvalidUtf8 | ErrorCode::MalformedBody => 400,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::KeyTooLarge
            | ErrorCode::ValueTooLarge
            | ErrorCode::BatchTooLarge
            | ErrorCode::BodyTooLarge
            | ErrorCode::ResponseTooLarge => 413,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Unavailable | ErrorCode::Indeterminate => 503,
            ErrorCode::StorageError | ErrorCode::Internal => 500,
            ErrorCode::WalNotRegistered => 404,
            ErrorCode::WalCapacityExhausted => 409,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::ResponseTooLarge => "response_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Indeterminate => "indeterminate",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::Internal => "internal",
            ErrorCode::WalNotRegistered => "wal_not_registered",
            ErrorCode::WalCapacityExhausted => "wal_capacity_exhausted",
        }
    }

    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::KeyNotFound,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidUtf8,
        ErrorCode::MalformedBody,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::BodyTooLarge,
        ErrorCode::ResponseTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::Unavailable,
        ErrorCode::Indeterminate,
        ErrorCode::StorageError,
        ErrorCode::Internal,
        ErrorCode::WalNotRegistered,
        ErrorCode::WalCapacityExhausted,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// An error with its causes, `a: b: c`, each cause once. HTTP clients'
/// `Display` stops at the outermost layer ("error sending request"); the
/// cause a reader needs ("connection refused", "invalid peer certificate")
/// is further down the chain. Every component that reports a failed call
/// to another one (the client, the server's peer calls, the operator's
/// probe) words it the same way.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut current: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        current = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_lists_each_cause_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let err = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "connection refused",
                Some(Box::new(Layer("refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&err),
            "error sending request: connection refused"
        );
    }

    #[test]
    fn serde_name_matches_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
            assert!((400..600).contains(&code.http_status()));
        }
    }
}

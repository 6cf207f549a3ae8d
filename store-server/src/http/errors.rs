//! Error answers: every failure becomes a status from [`ErrorCode`] plus a
//! JSON [`ErrorBody`]. Messages name stores, keys' sizes and limits, never
//! values or tokens.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drasi_store_protocol::query::QueryError;
use drasi_store_protocol::routes::{JSON, KEY_NOT_FOUND_HEADER};
use drasi_store_protocol::{BatchError, ErrorBody, ErrorCode};

use crate::engine::EngineError;
use crate::engine::wal::WalRefusal;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn key_not_found() -> Self {
        Self::new(ErrorCode::KeyNotFound, "no such key in this store")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing or invalid bearer token in the Authorization header",
        )
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let code = match e {
            QueryError::InvalidUtf8(_) => ErrorCode::InvalidUtf8,
            _ => ErrorCode::InvalidQuery,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let code = match e {
            BatchError::Truncated | BatchError::TrailingBytes(_) => ErrorCode::MalformedBody,
            BatchError::TooManyEntries { .. } => ErrorCode::BatchTooLarge,
            BatchError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            BatchError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            BatchError::InvalidUtf8 { .. } => ErrorCode::InvalidUtf8,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let code = match e {
            EngineError::Storage { .. } => ErrorCode::StorageError,
            EngineError::Unavailable
            | EngineError::Recovering
            | EngineError::Busy { .. }
            | EngineError::Replication { .. } => ErrorCode::Unavailable,
            EngineError::Indeterminate { .. } => ErrorCode::Indeterminate,
            EngineError::NotReplicated { .. } => ErrorCode::MethodNotAllowed,
            EngineError::AnswerTooLarge { .. } | EngineError::WalEventTooLarge { .. } => {
                ErrorCode::ResponseTooLarge
            }
            EngineError::Wal(WalRefusal::NotRegistered(_)) => ErrorCode::WalNotRegistered,
            EngineError::Wal(WalRefusal::CapacityExhausted(_)) => ErrorCode::WalCapacityExhausted,
        };
        ApiError::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&ErrorBody {
            code: self.code,
            message: self.message,
        })
        .unwrap_or_default();
        let mut response = (status, [(header::CONTENT_TYPE, JSON)], body).into_response();
        match self.code {
            ErrorCode::KeyNotFound => {
                response
                    .headers_mut()
                    .insert(KEY_NOT_FOUND_HEADER, HeaderValue::from_static("true"));
            }
            ErrorCode::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"drasi-store\""),
                );
            }
            ErrorCode::Unavailable | ErrorCode::Indeterminate => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_status() {
        for code in ErrorCode::ALL {
            let r = ApiError::new(code, "m").into_response();
            assert_eq!(r.status().as_u16(), code.http_status());
            assert_eq!(r.headers()[header::CONTENT_TYPE], JSON);
        }
    }

    #[test]
    fn batch_errors_map_to_codes() {
        let e: ApiError = BatchError::TooManyEntries { count: 2, max: 1 }.into();
        assert_eq!(e.code, ErrorCode::BatchTooLarge);
        let e: ApiError = BatchError::Truncated.into();
        assert_eq!(e.code, ErrorCode::MalformedBody);
        let e: ApiError = QueryError::InvalidUtf8("key".into()).into();
        assert_eq!(e.code, ErrorCode::InvalidUtf8);
    }
}

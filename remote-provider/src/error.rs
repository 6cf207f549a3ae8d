//! What can go wrong on one call, and how it becomes a [`StateStoreError`].
//!
//! Every message names the operation, the store and the server so that a log
//! line alone says where to look. Messages never contain the token, values or
//! keys: keys may embed business identifiers, and errors end up in logs and
//! traces that are far less protected than the store itself. Store ids are
//! plugin ids, chosen by the app's author, so they stay.

use std::fmt::{self, Write as _};

use drasi_lib::StateStoreError;
use drasi_lib::wal::WalError;
use drasi_store_protocol::error::error_chain;
use drasi_store_protocol::{ErrorBody, ErrorCode};
use reqwest::StatusCode;

/// The trait operation a request performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Set,
    Delete,
    ContainsKey,
    GetMany,
    SetMany,
    DeleteMany,
    ClearStore,
    ListKeys,
    StoreExists,
    KeyCount,
    Sync,
    /// `GET /v1/info`, for [`drasi_lib::StateStoreProvider::is_durable`].
    ServerInfo,
    WalRegister,
    WalAppend,
    WalReadFrom,
    WalPruneUpTo,
    WalInfo,
    WalDelete,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::ContainsKey => "contains_key",
            Op::GetMany => "get_many",
            Op::SetMany => "set_many",
            Op::DeleteMany => "delete_many",
            Op::ClearStore => "clear_store",
            Op::ListKeys => "list_keys",
            Op::StoreExists => "store_exists",
            Op::KeyCount => "key_count",
            Op::Sync => "sync",
            Op::ServerInfo => "server_info",
            Op::WalRegister => "register",
            Op::WalAppend => "append",
            Op::WalReadFrom => "read_from",
            Op::WalPruneUpTo => "prune_up_to",
            Op::WalInfo => "wal_info",
            Op::WalDelete => "delete_wal",
        }
    }

    /// Whether replaying the request after an unknown outcome gives the same
    /// answer. Deletes are not: the replay would report "did not exist" (or a
    /// smaller count) for keys the first attempt already removed; nor is a
    /// WAL prune, whose replay would report 0 events pruned. A WAL append is:
    /// it carries an append id, and the server answers a repeated id with
    /// the first attempt's sequence number instead of appending again.
    pub(crate) fn is_idempotent(self) -> bool {
        !matches!(
            self,
            Op::Delete | Op::DeleteMany | Op::ClearStore | Op::WalPruneUpTo
        )
    }

    fn is_wal(self) -> bool {
        matches!(
            self,
            Op::WalRegister
                | Op::WalAppend
                | Op::WalReadFrom
                | Op::WalPruneUpTo
                | Op::WalInfo
                | Op::WalDelete
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection could be made: the server never saw the request.
    Connect(reqwest::Error),
    /// The request may have reached the server (timeout, reset, truncated
    /// answer).
    Transport(reqwest::Error),
    /// The server answered with an error status.
    Status {
        status: StatusCode,
        body: Option<ErrorBody>,
    },
    /// The server answered 2xx with a body this client cannot decode.
    Decode(String),
    /// Local problems before anything was sent (e.g. an unreadable token file).
    Local(String),
}

impl Failure {
    /// reqwest appends `for url (...)` to its messages, and the query string
    /// carries the store id and the key: strip it before the error is kept.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        let err = err.without_url();
        if err.is_connect() {
            Failure::Connect(err)
        } else {
            Failure::Transport(err)
        }
    }

    pub(crate) fn code(&self) -> Option<ErrorCode> {
        match self {
            Failure::Status {
                body: Some(body), ..
            } => Some(body.code),
            _ => None,
        }
    }
}

/// Where a failed call was going, for the message.
pub(crate) struct CallContext<'a> {
    pub(crate) op: Op,
    pub(crate) store: Option<&'a str>,
    pub(crate) server: &'a str,
    pub(crate) attempts: u32,
}

impl CallContext<'_> {
    fn prefix(&self) -> String {
        let (service, partition) = if self.op.is_wal() {
            ("remote write-ahead log", "source")
        } else {
            ("remote state store", "store")
        };
        let mut out = format!("{service}: {} ", self.op);
        if let Some(store) = self.store {
            let _ = write!(out, "on {partition} {} ", bounded_debug(store, 80));
        }
        let _ = write!(out, "at {} failed", self.server);
        if self.attempts > 1 {
            let _ = write!(out, " after {} attempts", self.attempts);
        }
        out
    }

    pub(crate) fn into_error(self, failure: Failure) -> StateStoreError {
        self.error_for(&failure)
    }

    /// Like [`Self::into_error`] for a failure shared by several calls (a
    /// batch request that failed as a whole).
    pub(crate) fn error_for(&self, failure: &Failure) -> StateStoreError {
        let prefix = self.prefix();
        match failure {
            Failure::Connect(err) => StateStoreError::StorageError(format!(
                "{prefix}: cannot connect: {}",
                error_chain(err)
            )),
            Failure::Transport(err) if err.is_timeout() => StateStoreError::StorageError(format!(
                "{prefix}: timed out waiting for the server: {}",
                error_chain(err)
            )),
            Failure::Transport(err) => StateStoreError::StorageError(format!(
                "{prefix}: request failed: {}",
                error_chain(err)
            )),
            Failure::Decode(detail) => {
                StateStoreError::SerializationError(format!("{prefix}: bad answer: {detail}"))
            }
            Failure::Local(detail) => StateStoreError::Other(format!("{prefix}: {detail}")),
            Failure::Status { status, body } => status_error(&prefix, *status, body.as_ref()),
        }
    }
}

impl CallContext<'_> {
    /// The [`WalError`] for a failed WAL call: the two refusals the trait
    /// names become their variants, the rest carries the same message as a
    /// state store error.
    pub(crate) fn into_wal_error(self, failure: Failure) -> WalError {
        let source = self.store.unwrap_or_default().to_string();
        match failure.code() {
            Some(ErrorCode::WalNotRegistered) => return WalError::SourceNotRegistered(source),
            Some(ErrorCode::WalCapacityExhausted) => return WalError::CapacityExhausted(source),
            _ => {}
        }
        match self.into_error(failure) {
            StateStoreError::SerializationError(m) => WalError::SerializationError(m),
            StateStoreError::StorageError(m)
            | StateStoreError::Other(m)
            | StateStoreError::KeyNotFound(m) => WalError::StorageError(m),
        }
    }
}

fn status_error(prefix: &str, status: StatusCode, body: Option<&ErrorBody>) -> StateStoreError {
    let detail = match body {
        Some(body) => format!(
            "HTTP {} {}: {}",
            status.as_u16(),
            body.code,
            bounded(&body.message, 300)
        ),
        None => format!("HTTP {status}"),
    };
    let code = body.map(|b| b.code);
    match (status.as_u16(), code) {
        (413, _) => StateStoreError::Other(format!(
            "{prefix}: rejected as too large by the server's limits ({detail})"
        )),
        (401, _) => StateStoreError::Other(format!(
            "{prefix}: the server rejected the bearer token ({detail}); check \
             DRASI_STATE_STORE_TOKEN / DRASI_STATE_STORE_TOKEN_FILE"
        )),
        (404, None | Some(ErrorCode::RouteNotFound)) => StateStoreError::Other(format!(
            "{prefix}: the URL does not serve the drasi-store-server API ({detail})"
        )),
        (400..=499, _) => StateStoreError::Other(format!("{prefix}: request rejected ({detail})")),
        _ => StateStoreError::StorageError(format!("{prefix}: server error ({detail})")),
    }
}

/// Store ids can be up to the server's key limit (KiBs); keep messages short.
fn bounded_debug(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(max_chars).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}

fn bounded(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut head: String = s.chars().take(max_chars).collect();
        head.push('…');
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(op: Op) -> CallContext<'static> {
        CallContext {
            op,
            store: Some("plugin-1"),
            server: "http://store:7070",
            attempts: 1,
        }
    }

    fn status(code: ErrorCode) -> Failure {
        Failure::Status {
            status: StatusCode::from_u16(code.http_status()).unwrap(),
            body: Some(ErrorBody {
                code,
                message: "nope".into(),
            }),
        }
    }

    #[test]
    fn only_deletes_are_not_idempotent() {
        let not = [Op::Delete, Op::DeleteMany, Op::ClearStore];
        for op in [
            Op::Get,
            Op::Set,
            Op::Delete,
            Op::ContainsKey,
            Op::GetMany,
            Op::SetMany,
            Op::DeleteMany,
            Op::ClearStore,
            Op::ListKeys,
            Op::StoreExists,
            Op::KeyCount,
            Op::Sync,
        ] {
            assert_eq!(op.is_idempotent(), !not.contains(&op), "{op}");
        }
    }

    #[test]
    fn messages_name_operation_store_and_server() {
        let err = ctx(Op::Set).into_error(status(ErrorCode::ValueTooLarge));
        let text = err.to_string();
        assert!(matches!(err, StateStoreError::Other(_)), "{text}");
        for needle in [
            "set",
            "\"plugin-1\"",
            "http://store:7070",
            "value_too_large",
            "too large",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
    }

    #[test]
    fn maps_status_classes_to_variants() {
        assert!(matches!(
            ctx(Op::Get).into_error(status(ErrorCode::StorageError)),
            StateStoreError::StorageError(_)
        ));
        assert!(matches!(
            ctx(Op::Get).into_error(status(ErrorCode::Unavailable)),
            StateStoreError::StorageError(_)
        ));
        assert!(matches!(
            ctx(Op::Get).into_error(status(ErrorCode::Unauthorized)),
            StateStoreError::Other(m) if m.contains("token")
        ));
        assert!(matches!(
            ctx(Op::Get).into_error(status(ErrorCode::RouteNotFound)),
            StateStoreError::Other(m) if m.contains("does not serve")
        ));
        assert!(matches!(
            ctx(Op::Get).into_error(Failure::Decode("short".into())),
            StateStoreError::SerializationError(_)
        ));
    }

    #[test]
    fn sync_has_no_store_and_retries_are_counted() {
        let c = CallContext {
            op: Op::Sync,
            store: None,
            server: "https://s",
            attempts: 4,
        };
        let text = c.into_error(status(ErrorCode::Internal)).to_string();
        assert!(
            text.contains("sync at https://s failed after 4 attempts"),
            "{text}"
        );
    }

    #[test]
    fn long_store_ids_are_truncated() {
        let store = "x".repeat(5000);
        let c = CallContext {
            op: Op::Get,
            store: Some(&store),
            server: "http://s",
            attempts: 1,
        };
        let text = c.into_error(Failure::Decode("d".into())).to_string();
        assert!(text.len() < 400, "{text}");
        assert!(text.contains("5000 bytes"));
    }
}

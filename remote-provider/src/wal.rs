//! [`RemoteWalProvider`]: DrasiLib's `WalProvider` backed by a
//! `drasi-store-server`, so transient sources (http, grpc, application)
//! keep their write-ahead log in the store instead of on a pod volume.
//!
//! It behaves like DrasiLib's file-backed `drasi-wal-redb` provider: the
//! same source id rule, config validation, sequence numbers, capacity
//! policies, pruning and errors. As there, registration is per provider
//! instance: a source must be registered on this instance before other
//! calls, and registering it again with a different config fails until
//! `delete_wal`. The log itself (events, counter, config) lives on the
//! server and survives restarts of the app and of the server.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use drasi_core::models::SourceChange;
use drasi_lib::wal::{CapacityPolicy, WalError, WalProvider, WriteAheadLogConfig};
use drasi_store_protocol::CountResponse;
use drasi_store_protocol::endpoints::{self, Endpoint};
use drasi_store_protocol::wal::{
    APPEND_ID_PARAM, AppendId, AppendResponse, EventsFrame, FROM_PARAM, UP_TO_PARAM,
    WalCapacityPolicy, WalConfig, WalInfo, encode_wal_query, validate_source_id,
};
use tokio::sync::RwLock;

use crate::answer;
use crate::builder::{RemoteStateStoreProviderBuilder, from_lookup};
use crate::error::{CallContext, Failure, Op};
use crate::transport::Transport;
use crate::wal_codec::{self, CodecError};

/// A [`WalProvider`] backed by a `drasi-store-server`.
///
/// Built from the same settings as
/// [`RemoteStateStoreProvider`](crate::RemoteStateStoreProvider) — the same
/// environment variables and connection Secret — and with the same
/// transport: pooled connections on an I/O runtime the provider owns (so
/// calls work from short-lived runtimes), bearer token re-read on rotation,
/// optional TLS, and retries with backoff.
///
/// Appends are retried safely: each append carries a random 128-bit id and
/// the server answers a repeated id with the sequence number it assigned
/// the first time, so a retry after a lost answer never appends twice.
/// `prune_up_to` is not retried after an unknown outcome (its replay would
/// report a different count).
///
/// Cheap to clone: clones share the connection pool and the registrations.
#[derive(Clone)]
pub struct RemoteWalProvider {
    transport: Arc<Transport>,
    /// Sources registered through this provider, with their config. One
    /// entry per source the app registers (as in the file-backed provider),
    /// removed by `delete_wal`.
    registered: Arc<RwLock<HashMap<String, WriteAheadLogConfig>>>,
}

/// Configures a [`RemoteWalProvider`]; the options are those of
/// [`RemoteStateStoreProviderBuilder`].
pub struct RemoteWalProviderBuilder {
    inner: RemoteStateStoreProviderBuilder,
}

impl fmt::Debug for RemoteWalProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteWalProviderBuilder")
            .field(&self.inner)
            .finish()
    }
}

impl RemoteWalProviderBuilder {
    /// A fixed bearer token.
    pub fn token(self, token: impl Into<String>) -> Self {
        Self {
            inner: self.inner.token(token),
        }
    }

    /// A file holding the bearer token, re-read when it changes.
    pub fn token_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            inner: self.inner.token_file(path),
        }
    }

    /// PEM certificate(s) of the CA that signed the server's certificate.
    pub fn ca_cert_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        Self {
            inner: self.inner.ca_cert_pem(pem),
        }
    }

    /// Like [`Self::ca_cert_pem`], read from a file at `build()`.
    pub fn ca_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            inner: self.inner.ca_file(path),
        }
    }

    /// Limit for one attempt of one request (default 30 s).
    pub fn timeout(self, timeout: Duration) -> Self {
        Self {
            inner: self.inner.timeout(timeout),
        }
    }

    /// Limit for establishing a connection (default 5 s).
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        Self {
            inner: self.inner.connect_timeout(timeout),
        }
    }

    /// Retries after the first attempt (default 3) for failures that are
    /// safe to repeat (see [`RemoteWalProvider`]).
    pub fn max_retries(self, retries: u32) -> Self {
        Self {
            inner: self.inner.max_retries(retries),
        }
    }

    /// With several URLs: how long retryable failures keep being retried
    /// across them (default 5 s; see
    /// [`RemoteStateStoreProviderBuilder::failover_timeout`]).
    pub fn failover_timeout(self, budget: Duration) -> Self {
        Self {
            inner: self.inner.failover_timeout(budget),
        }
    }

    /// Whether appends made on a multi-thread tokio runtime are sent on
    /// that runtime (default: yes; see
    /// [`RemoteStateStoreProviderBuilder::requests_on_caller_runtime`]).
    pub fn requests_on_caller_runtime(self, enabled: bool) -> Self {
        Self {
            inner: self.inner.requests_on_caller_runtime(enabled),
        }
    }

    /// Validates the configuration and starts the provider's I/O runtime;
    /// connects lazily. Configuration errors are
    /// [`WalError::InvalidConfig`].
    pub fn build(self) -> Result<RemoteWalProvider, WalError> {
        let transport = self
            .inner
            .build_transport()
            .map_err(|e| WalError::InvalidConfig(config_message(e)))?;
        Ok(RemoteWalProvider {
            transport: Arc::new(transport),
            registered: Arc::default(),
        })
    }
}

fn config_message(e: drasi_lib::StateStoreError) -> String {
    let text = e.to_string();
    text.replace(
        "remote state store configuration",
        "remote WAL configuration",
    )
}

impl RemoteWalProvider {
    /// Starts configuring a provider for the server at `url`, or, for a
    /// replicated store, at several comma-separated URLs (see
    /// [`RemoteStateStoreProvider::builder`](crate::RemoteStateStoreProvider::builder)).
    pub fn builder(url: impl Into<String>) -> RemoteWalProviderBuilder {
        RemoteWalProviderBuilder {
            inner: crate::RemoteStateStoreProvider::builder(url),
        }
    }

    /// Configures the provider from the same environment variables as
    /// [`RemoteStateStoreProvider::from_env`](crate::RemoteStateStoreProvider::from_env)
    /// (`DRASI_STATE_STORE_URL`, `DRASI_STATE_STORE_TOKEN` or `_TOKEN_FILE`,
    /// `DRASI_STATE_STORE_CA_CERT` or `_CA_FILE`), so one connection Secret
    /// serves both providers.
    pub fn from_env() -> Result<Self, WalError> {
        let inner = from_lookup(|name| std::env::var_os(name))
            .map_err(|e| WalError::InvalidConfig(config_message(e)))?;
        RemoteWalProviderBuilder { inner }.build()
    }

    /// The server this provider talks to (without credentials); with
    /// several URLs, all of them, comma-separated.
    pub fn server_url(&self) -> &str {
        self.transport.server()
    }

    async fn ensure_registered(&self, source_id: &str) -> Result<(), WalError> {
        if self.registered.read().await.contains_key(source_id) {
            Ok(())
        } else {
            Err(WalError::SourceNotRegistered(source_id.to_string()))
        }
    }

    /// One WAL call. The transport puts `query` in the URI, or in the
    /// target header when a long source id makes it too long there.
    async fn call<T, D, Fut>(
        &self,
        op: Op,
        source_id: &str,
        endpoint: &'static Endpoint,
        query: String,
        body: Option<Bytes>,
        decode: D,
    ) -> Result<T, WalError>
    where
        T: Send + 'static,
        D: Fn(reqwest::Response) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, Failure>> + Send + 'static,
    {
        self.transport
            .call_with_query(op, endpoint, Some(query), body, decode)
            .await
            .map_err(|(failure, attempts)| {
                CallContext {
                    op,
                    store: Some(source_id),
                    server: self.transport.server(),
                    attempts,
                }
                .into_wal_error(failure)
            })
    }

    async fn info(&self, source_id: &str) -> Result<WalInfo, WalError> {
        self.ensure_registered(source_id).await?;
        let query = encode_wal_query(source_id, &[]);
        self.call(
            Op::WalInfo,
            source_id,
            &endpoints::WAL_INFO,
            query,
            None,
            answer::json::<WalInfo>,
        )
        .await
    }
}

impl fmt::Debug for RemoteWalProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWalProvider")
            .field("server", &self.transport.server())
            .field("token", &self.transport.token_description())
            .field("max_retries", &self.transport.max_retries())
            .finish_non_exhaustive()
    }
}

fn same_config(a: &WriteAheadLogConfig, b: &WriteAheadLogConfig) -> bool {
    a.max_events == b.max_events && a.capacity_policy == b.capacity_policy
}

fn wire_config(config: &WriteAheadLogConfig) -> WalConfig {
    WalConfig {
        max_events: config.max_events,
        capacity_policy: match config.capacity_policy {
            CapacityPolicy::RejectIncoming => WalCapacityPolicy::RejectIncoming,
            CapacityPolicy::OverwriteOldest => WalCapacityPolicy::OverwriteOldest,
        },
    }
}

fn codec_error(source_id: &str, seq: Option<u64>, e: CodecError) -> WalError {
    match e {
        CodecError::FutureEvent => WalError::InvalidEvent(e.to_string()),
        _ => WalError::SerializationError(match seq {
            Some(seq) => format!("source '{source_id}', sequence {seq}: {e}"),
            None => format!("source '{source_id}': {e}"),
        }),
    }
}

/// A fresh, non-zero append id (zero means "none" on the server).
fn new_append_id() -> AppendId {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return AppendId(id);
        }
    }
}

#[async_trait]
impl WalProvider for RemoteWalProvider {
    async fn register(&self, source_id: &str, config: WriteAheadLogConfig) -> Result<(), WalError> {
        config.validate()?;
        validate_source_id(source_id)
            .map_err(|reason| WalError::InvalidSourceId(source_id.to_string(), reason))?;
        // Held across the server call, as the file-backed provider holds its
        // lock across opening the file: two concurrent registrations of one
        // source cannot both pass the check.
        let mut registered = self.registered.write().await;
        if let Some(existing) = registered.get(source_id) {
            return if same_config(existing, &config) {
                Ok(())
            } else {
                Err(WalError::SourceAlreadyRegistered(source_id.to_string()))
            };
        }
        let body = serde_json::to_vec(&wire_config(&config))
            .map_err(|e| WalError::SerializationError(format!("encoding WAL config: {e}")))?;
        let query = encode_wal_query(source_id, &[]);
        self.call(
            Op::WalRegister,
            source_id,
            &endpoints::WAL_REGISTER,
            query,
            Some(Bytes::from(body)),
            answer::unit,
        )
        .await?;
        registered.insert(source_id.to_string(), config);
        Ok(())
    }

    async fn append(&self, source_id: &str, event: &SourceChange) -> Result<u64, WalError> {
        if matches!(event, SourceChange::Future { .. }) {
            return Err(codec_error(source_id, None, CodecError::FutureEvent));
        }
        self.ensure_registered(source_id).await?;
        let bytes = wal_codec::encode(event).map_err(|e| codec_error(source_id, None, e))?;
        let query = encode_wal_query(source_id, &[(APPEND_ID_PARAM, new_append_id().to_hex())]);
        let answer: AppendResponse = self
            .call(
                Op::WalAppend,
                source_id,
                &endpoints::WAL_APPEND,
                query,
                Some(Bytes::from(bytes)),
                answer::json::<AppendResponse>,
            )
            .await?;
        Ok(answer.sequence)
    }

    /// Reads the server's answer page by page (each at most its
    /// `--max-response-bytes`), so no single answer is unbounded. Pages
    /// are separate snapshots: when events before the next page's start
    /// were pruned or evicted in between, the read fails with
    /// `PositionUnavailable` for that page's start rather than skipping
    /// them.
    async fn read_from(
        &self,
        source_id: &str,
        sequence: u64,
    ) -> Result<Vec<(u64, SourceChange)>, WalError> {
        self.ensure_registered(source_id).await?;
        let mut out = Vec::new();
        let mut from = sequence;
        loop {
            let query = encode_wal_query(source_id, &[(FROM_PARAM, from.to_string())]);
            let frame = self
                .call(
                    Op::WalReadFrom,
                    source_id,
                    &endpoints::WAL_READ_FROM,
                    query,
                    None,
                    answer::bytes,
                )
                .await?;
            let page = EventsFrame::decode(&frame).map_err(|e| {
                WalError::SerializationError(format!(
                    "remote write-ahead log: read_from on source '{source_id}' at {}: {e}",
                    self.transport.server()
                ))
            })?;
            if let Some(oldest) = page.oldest
                && from < oldest
            {
                return Err(WalError::PositionUnavailable {
                    source_id: source_id.to_string(),
                    requested: from,
                    oldest_available: Some(oldest),
                });
            }
            out.reserve(page.events.len());
            for (seq, bytes) in page.events {
                let change =
                    wal_codec::decode(bytes).map_err(|e| codec_error(source_id, Some(seq), e))?;
                out.push((seq, change));
            }
            // `decode` checked that `next` is past this page's last event,
            // so the loop always advances.
            match page.next {
                Some(next) => from = next,
                None => return Ok(out),
            }
        }
    }

    async fn prune_up_to(&self, source_id: &str, sequence: u64) -> Result<u64, WalError> {
        self.ensure_registered(source_id).await?;
        let query = encode_wal_query(source_id, &[(UP_TO_PARAM, sequence.to_string())]);
        let answer: CountResponse = self
            .call(
                Op::WalPruneUpTo,
                source_id,
                &endpoints::WAL_PRUNE_UP_TO,
                query,
                None,
                answer::json::<CountResponse>,
            )
            .await?;
        Ok(answer.count)
    }

    async fn head_sequence(&self, source_id: &str) -> Result<u64, WalError> {
        Ok(self.info(source_id).await?.head_sequence)
    }

    async fn oldest_sequence(&self, source_id: &str) -> Result<Option<u64>, WalError> {
        Ok(self.info(source_id).await?.oldest_sequence)
    }

    async fn event_count(&self, source_id: &str) -> Result<u64, WalError> {
        Ok(self.info(source_id).await?.event_count)
    }

    async fn delete_wal(&self, source_id: &str) -> Result<(), WalError> {
        validate_source_id(source_id)
            .map_err(|reason| WalError::InvalidSourceId(source_id.to_string(), reason))?;
        let query = encode_wal_query(source_id, &[]);
        self.call(
            Op::WalDelete,
            source_id,
            &endpoints::WAL_DELETE,
            query,
            None,
            answer::unit,
        )
        .await?;
        // Forgotten only once the server has deleted the log: after a failed
        // delete the source stays usable, as the log is still there.
        self.registered.write().await.remove(source_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_bound_matches_drasi_lib() {
        assert_eq!(
            drasi_store_protocol::wal::MIN_MAX_EVENTS,
            drasi_lib::wal::MIN_MAX_EVENTS
        );
    }

    #[tokio::test]
    async fn local_checks_match_the_file_backed_provider() {
        let p = RemoteWalProvider::builder("http://127.0.0.1:1")
            .max_retries(0)
            .build()
            .unwrap();
        let small = WriteAheadLogConfig {
            max_events: 3,
            capacity_policy: CapacityPolicy::RejectIncoming,
        };
        assert!(matches!(
            p.register("ok", small).await,
            Err(WalError::InvalidConfig(_))
        ));
        assert!(matches!(
            p.register("a/b", WriteAheadLogConfig::default()).await,
            Err(WalError::InvalidSourceId(..))
        ));
        assert!(matches!(
            p.head_sequence("never").await,
            Err(WalError::SourceNotRegistered(_))
        ));
        assert!(matches!(
            p.delete_wal("..").await,
            Err(WalError::InvalidSourceId(..))
        ));
        // A connection failure is a storage error naming the source.
        let err = p
            .register("src", WriteAheadLogConfig::default())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, WalError::StorageError(_)), "{text}");
        assert!(
            text.contains("\"src\"") && text.contains("write-ahead log"),
            "{text}"
        );
    }
}

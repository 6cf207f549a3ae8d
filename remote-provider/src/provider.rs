//! The `drasi_lib::StateStoreProvider` implementation: one HTTP request per
//! trait call, shaped by `drasi_store_protocol`, except that concurrent
//! single-key calls may share a batch request (see [`crate::batcher`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use drasi_lib::{StateStoreError, StateStoreProvider, state_store::StateStoreResult};
use drasi_store_protocol::{
    CountResponse, KeyList, MixedKind, MixedResult, StoreInfo, encode_entries, encode_keys,
    endpoints,
};

use crate::answer;
use crate::batcher::Call;
use crate::builder::RemoteStateStoreProviderBuilder;
use crate::error::Op;
use crate::transport::Transport;

/// A [`StateStoreProvider`] backed by a `drasi-store-server`.
///
/// Cheap to clone: clones share one connection pool and one I/O runtime,
/// which shuts down when the last clone is dropped.
#[derive(Clone)]
pub struct RemoteStateStoreProvider {
    transport: Arc<Transport>,
}

impl RemoteStateStoreProvider {
    /// Starts configuring a provider for the server at `url`
    /// (e.g. `http://my-store.default.svc:7070`). For a replicated store,
    /// `url` may list every node's URL, comma-separated: calls go to the
    /// node that last answered and move to the next one when a node cannot
    /// be reached or has no leader (see
    /// [`RemoteStateStoreProviderBuilder::failover_timeout`]).
    pub fn builder(url: impl Into<String>) -> RemoteStateStoreProviderBuilder {
        RemoteStateStoreProviderBuilder::new(url.into())
    }

    pub(crate) fn from_transport(transport: Transport) -> Self {
        Self {
            transport: Arc::new(transport),
        }
    }

    /// The server this provider talks to (without credentials); with
    /// several URLs, all of them, comma-separated.
    pub fn server_url(&self) -> &str {
        self.transport.server()
    }

    async fn single(
        &self,
        kind: MixedKind,
        store_id: &str,
        key: &str,
        value: Bytes,
    ) -> StateStoreResult<MixedResult> {
        self.transport
            .single_key(Call {
                kind,
                store: store_id.to_owned(),
                key: key.to_owned(),
                value,
            })
            .await
    }

    async fn store_info(&self, op: Op, store_id: &str) -> StateStoreResult<StoreInfo> {
        let t = &self.transport;
        t.call(
            op,
            &endpoints::STORE_INFO,
            Some(store_id),
            None,
            None,
            answer::json::<StoreInfo>,
        )
        .await
    }
}

impl fmt::Debug for RemoteStateStoreProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStateStoreProvider")
            .field("server", &self.transport.server())
            .field("token", &self.transport.token_description())
            .field("max_retries", &self.transport.max_retries())
            .finish_non_exhaustive()
    }
}

/// A result kind the operation never produces: a server bug.
fn unexpected(op: Op, store_id: &str, result: &MixedResult) -> StateStoreError {
    let kind = match result {
        MixedResult::Done => "done",
        MixedResult::Value(_) => "a value",
        MixedResult::Absent => "absent",
        MixedResult::Present => "present",
        MixedResult::Error(_) => "an error",
    };
    StateStoreError::SerializationError(format!(
        "remote state store: {op} on store {store_id:?}: the server answered {kind}, which {op} never returns"
    ))
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[async_trait]
impl StateStoreProvider for RemoteStateStoreProvider {
    async fn get(&self, store_id: &str, key: &str) -> StateStoreResult<Option<Vec<u8>>> {
        match self
            .single(MixedKind::Get, store_id, key, Bytes::new())
            .await?
        {
            MixedResult::Value(v) => Ok(Some(v)),
            MixedResult::Absent => Ok(None),
            other => Err(unexpected(Op::Get, store_id, &other)),
        }
    }

    async fn set(&self, store_id: &str, key: &str, value: Vec<u8>) -> StateStoreResult<()> {
        match self
            .single(MixedKind::Set, store_id, key, Bytes::from(value))
            .await?
        {
            MixedResult::Done => Ok(()),
            other => Err(unexpected(Op::Set, store_id, &other)),
        }
    }

    async fn delete(&self, store_id: &str, key: &str) -> StateStoreResult<bool> {
        match self
            .single(MixedKind::Delete, store_id, key, Bytes::new())
            .await?
        {
            MixedResult::Present => Ok(true),
            MixedResult::Absent => Ok(false),
            other => Err(unexpected(Op::Delete, store_id, &other)),
        }
    }

    async fn contains_key(&self, store_id: &str, key: &str) -> StateStoreResult<bool> {
        match self
            .single(MixedKind::ContainsKey, store_id, key, Bytes::new())
            .await?
        {
            MixedResult::Present => Ok(true),
            MixedResult::Absent => Ok(false),
            other => Err(unexpected(Op::ContainsKey, store_id, &other)),
        }
    }

    async fn get_many(
        &self,
        store_id: &str,
        keys: &[&str],
    ) -> StateStoreResult<HashMap<String, Vec<u8>>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let t = &self.transport;
        let body = Bytes::from(encode_keys(keys));
        t.call(
            Op::GetMany,
            &endpoints::GET_MANY,
            Some(store_id),
            None,
            Some(body),
            answer::entries,
        )
        .await
    }

    async fn set_many(&self, store_id: &str, entries: &[(&str, &[u8])]) -> StateStoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let t = &self.transport;
        let body = Bytes::from(encode_entries(entries.iter().copied()));
        t.call(
            Op::SetMany,
            &endpoints::SET_MANY,
            Some(store_id),
            None,
            Some(body),
            answer::unit,
        )
        .await
    }

    async fn delete_many(&self, store_id: &str, keys: &[&str]) -> StateStoreResult<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        let t = &self.transport;
        let body = Bytes::from(encode_keys(keys));
        let answer: CountResponse = t
            .call(
                Op::DeleteMany,
                &endpoints::DELETE_MANY,
                Some(store_id),
                None,
                Some(body),
                answer::json::<CountResponse>,
            )
            .await?;
        Ok(to_usize(answer.count))
    }

    async fn clear_store(&self, store_id: &str) -> StateStoreResult<usize> {
        let t = &self.transport;
        let answer: CountResponse = t
            .call(
                Op::ClearStore,
                &endpoints::CLEAR_STORE,
                Some(store_id),
                None,
                None,
                answer::json::<CountResponse>,
            )
            .await?;
        Ok(to_usize(answer.count))
    }

    async fn list_keys(&self, store_id: &str) -> StateStoreResult<Vec<String>> {
        let t = &self.transport;
        let answer: KeyList = t
            .call(
                Op::ListKeys,
                &endpoints::LIST_KEYS,
                Some(store_id),
                None,
                None,
                answer::json::<KeyList>,
            )
            .await?;
        Ok(answer.keys)
    }

    async fn store_exists(&self, store_id: &str) -> StateStoreResult<bool> {
        Ok(self.store_info(Op::StoreExists, store_id).await?.exists)
    }

    async fn key_count(&self, store_id: &str) -> StateStoreResult<usize> {
        Ok(to_usize(
            self.store_info(Op::KeyCount, store_id).await?.key_count,
        ))
    }

    async fn sync(&self) -> StateStoreResult<()> {
        let t = &self.transport;
        t.call(Op::Sync, &endpoints::SYNC, None, None, None, answer::unit)
            .await
    }

    /// True only when the server says it runs `--durability immediate`
    /// (every acknowledged write is fsynced). Learnt from the server: from
    /// the durability header of any answer, or from `GET /v1/info`, which
    /// [`RemoteStateStoreProviderBuilder::build`] starts asking in the
    /// background. When nothing is known yet, this asks the server and
    /// waits up to about the request timeout; when the server cannot be
    /// reached it answers `false` (durability cannot be proven) and asks
    /// again on the next call.
    fn is_durable(&self) -> bool {
        self.transport.durability() == Some(drasi_store_protocol::Durability::Immediate)
    }
}

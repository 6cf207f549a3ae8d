//! What a workload drives: a `StateStoreProvider`, or Redis through the
//! client a Rust application would pick (the `redis` crate with one
//! multiplexed connection, which pipelines concurrent commands).

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use drasi_lib::StateStoreProvider;
use redis::aio::MultiplexedConnection;

/// The calls the workloads make.
#[async_trait]
pub trait BenchTarget: Send + Sync {
    async fn set(&self, store: &str, key: &str, value: Vec<u8>) -> anyhow::Result<()>;
    async fn get(&self, store: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    async fn set_many(&self, store: &str, entries: &[(&str, &[u8])]) -> anyhow::Result<()>;
}

/// Any `StateStoreProvider` (memory, embedded redb, remote).
pub struct ProviderTarget(pub Arc<dyn StateStoreProvider>);

#[async_trait]
impl BenchTarget for ProviderTarget {
    async fn set(&self, store: &str, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        Ok(self.0.set(store, key, value).await?)
    }

    async fn get(&self, store: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.get(store, key).await?)
    }

    async fn set_many(&self, store: &str, entries: &[(&str, &[u8])]) -> anyhow::Result<()> {
        Ok(self.0.set_many(store, entries).await?)
    }
}

/// Redis through one multiplexed connection shared by every task: each
/// call clones the handle (a channel sender), and concurrent commands go
/// out pipelined on the one socket.
pub struct RedisCrateTarget {
    conn: MultiplexedConnection,
}

impl RedisCrateTarget {
    pub async fn connect(port: u16) -> anyhow::Result<Self> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .context("redis client URL")?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to redis on port {port}"))?;
        Ok(Self { conn })
    }

    /// One Redis key per (store, key), as a store would map its partitions.
    fn key(store: &str, key: &str) -> String {
        let mut k = String::with_capacity(store.len() + 1 + key.len());
        k.push_str(store);
        k.push('\0');
        k.push_str(key);
        k
    }
}

#[async_trait]
impl BenchTarget for RedisCrateTarget {
    async fn set(&self, store: &str, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(Self::key(store, key))
            .arg(value)
            .query_async::<()>(&mut conn)
            .await
            .context("redis SET")
    }

    async fn get(&self, store: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(Self::key(store, key))
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
            .context("redis GET")
    }

    /// `MSET` is atomic, like `set_many`.
    async fn set_many(&self, store: &str, entries: &[(&str, &[u8])]) -> anyhow::Result<()> {
        let mut cmd = redis::cmd("MSET");
        for (key, value) in entries {
            cmd.arg(Self::key(store, key)).arg(*value);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<()>(&mut conn).await.context("redis MSET")
    }
}

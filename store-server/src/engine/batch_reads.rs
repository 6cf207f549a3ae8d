//! The reads of one batch request, answered from one read transaction.
//!
//! A batch's calls were all in flight together on the client, so one
//! snapshot for all of them is a valid order (see `http::batch`). Opening a
//! read transaction, the two tables and the store's row once per batch,
//! rather than once per `get`, is most of what a batched read costs redb.

use std::collections::HashMap;

use redb::ReadOnlyTable;

use super::database::Reader;
use super::schema::{KV, STORES};
use super::{Engine, EngineError, EngineResult, StorageContext as _};

/// Opened by the first read, so a batch of writes opens nothing.
pub struct BatchReads<'e, 'a> {
    engine: &'e Engine,
    open: Option<Open<'a>>,
}

struct Open<'a> {
    kv: ReadOnlyTable<(u64, &'static str), &'static [u8]>,
    stores: ReadOnlyTable<&'static str, (u64, u64)>,
    /// Each store's partition as of this snapshot (`None`: no such store).
    partitions: HashMap<&'a str, Option<u64>>,
    // Dropped after the tables, which belong to it.
    _txn: Reader,
}

const OP: &str = "batch read";

impl<'e, 'a> BatchReads<'e, 'a> {
    pub(super) fn new(engine: &'e Engine) -> Self {
        Self { engine, open: None }
    }

    fn open(&mut self) -> EngineResult<&mut Open<'a>> {
        if self.open.is_none() {
            let txn = self.engine.read_txn(OP)?;
            self.open = Some(Open {
                kv: txn.open_table(KV).ctx(OP)?,
                stores: txn.open_table(STORES).ctx(OP)?,
                partitions: HashMap::new(),
                _txn: txn,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Looks `key` up in `store` and applies `read` to the value in place.
    fn lookup<T>(
        &mut self,
        store: &'a str,
        key: &str,
        read: impl FnOnce(&[u8]) -> T,
    ) -> EngineResult<Option<T>> {
        let open = self.open()?;
        let pid = match open.partitions.get(store) {
            Some(known) => *known,
            None => {
                let pid = open.stores.get(store).ctx(OP)?.map(|row| row.value().0);
                open.partitions.insert(store, pid);
                pid
            }
        };
        let Some(pid) = pid else { return Ok(None) };
        Ok(open.kv.get((pid, key)).ctx(OP)?.map(|v| read(v.value())))
    }

    /// Like [`Engine::get_admitted`], from this batch's snapshot.
    pub fn get_admitted<E: From<EngineError>>(
        &mut self,
        store: &'a str,
        key: &str,
        admit: impl FnOnce(usize) -> Result<(), E>,
    ) -> Result<Option<Vec<u8>>, E> {
        self.lookup(store, key, |v| admit(v.len()).map(|()| v.to_vec()))?
            .transpose()
    }

    /// Like [`Engine::contains_key`], from this batch's snapshot.
    pub fn contains_key(&mut self, store: &'a str, key: &str) -> EngineResult<bool> {
        Ok(self.lookup(store, key, |_| ())?.is_some())
    }
}

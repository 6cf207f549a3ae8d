//! Applying write ops to the tables of one write transaction.
//!
//! Atomicity: every op is checked before it mutates anything, so an op that
//! is rejected leaves no trace while the rest of its group commits. A
//! storage error aborts the whole transaction and fails every op in it.

use redb::{ReadableTable, Table, WriteTransaction};

use super::import::ImportPlan;
use super::schema::{
    GARBAGE, KV, META, META_NEXT_PARTITION, META_STORE_COUNT, META_TOTAL_KEYS, STORES,
};
use super::wal::WalTables;
use super::writer::{Reply, WriteOp};
use super::{EngineResult, StorageContext as _};

/// The open tables of one write transaction plus the `meta` counters,
/// written back once per group.
pub(crate) struct Tables<'txn> {
    stores: Table<'txn, &'static str, (u64, u64)>,
    kv: Table<'txn, (u64, &'static str), &'static [u8]>,
    meta: Table<'txn, &'static str, u64>,
    garbage: Table<'txn, u64, ()>,
    next_pid: u64,
    total_keys: u64,
    store_count: u64,
    txn: &'txn WriteTransaction,
    /// Opened by the first WAL op of the group.
    wal: Option<WalTables<'txn>>,
    /// The counters as read at the start of the group: a group that only
    /// overwrites existing keys leaves them alone and writes no `meta` row.
    loaded: (u64, u64, u64),
}

impl<'txn> Tables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> EngineResult<Self> {
        const OPEN: &str = "open table";
        let meta = txn.open_table(META).ctx(OPEN)?;
        let read = |name: &str| -> EngineResult<u64> {
            Ok(meta.get(name).ctx("read meta")?.map_or(0, |g| g.value()))
        };
        let next_pid = read(META_NEXT_PARTITION)?.max(1);
        let total_keys = read(META_TOTAL_KEYS)?;
        let store_count = read(META_STORE_COUNT)?;
        Ok(Tables {
            stores: txn.open_table(STORES).ctx(OPEN)?,
            kv: txn.open_table(KV).ctx(OPEN)?,
            garbage: txn.open_table(GARBAGE).ctx(OPEN)?,
            meta,
            next_pid,
            total_keys,
            store_count,
            txn,
            wal: None,
            loaded: (next_pid, total_keys, store_count),
        })
    }

    /// Writes back the counters the group changed.
    pub(crate) fn save_counters(&mut self) -> EngineResult<()> {
        const OP: &str = "write meta";
        let (next_pid, total_keys, store_count) = self.loaded;
        for (name, now, before) in [
            (META_NEXT_PARTITION, self.next_pid, next_pid),
            (META_TOTAL_KEYS, self.total_keys, total_keys),
            (META_STORE_COUNT, self.store_count, store_count),
        ] {
            if now != before {
                self.meta.insert(name, now).ctx(OP)?;
            }
        }
        Ok(())
    }

    /// Records a journal checkpoint in this (durable) transaction.
    pub(crate) fn save_checkpoint(&mut self, cp: super::journal::Checkpoint) -> EngineResult<()> {
        cp.save(&mut self.meta)
    }

    /// Records that this transaction applies journal record `seq`.
    pub(crate) fn save_journal_seq(&mut self, seq: u64) -> EngineResult<()> {
        super::journal::Checkpoint::save_applied(&mut self.meta, seq)
    }

    fn row(&self, store: &str) -> EngineResult<Option<(u64, u64)>> {
        Ok(self
            .stores
            .get(store)
            .ctx("read store row")?
            .map(|g| g.value()))
    }

    /// The store's row, or a fresh partition for a store with no keys.
    fn row_or_new(&mut self, store: &str) -> EngineResult<(u64, u64, bool)> {
        Ok(match self.row(store)? {
            Some((pid, count)) => (pid, count, false),
            None => {
                let pid = self.next_pid;
                self.next_pid += 1;
                (pid, 0, true)
            }
        })
    }

    /// Writes back a store's count after `added` keys were created and
    /// `removed` deleted; drops the row when the store is empty.
    fn update_row(
        &mut self,
        store: &str,
        pid: u64,
        old: u64,
        is_new: bool,
        added: u64,
        removed: u64,
    ) -> EngineResult<()> {
        let new = (old + added).saturating_sub(removed);
        self.total_keys = (self.total_keys + added).saturating_sub(removed);
        if new == 0 {
            if !is_new {
                self.stores.remove(store).ctx("remove store row")?;
                self.store_count = self.store_count.saturating_sub(1);
            }
        } else if new != old {
            self.stores
                .insert(store, (pid, new))
                .ctx("write store row")?;
            if is_new {
                self.store_count += 1;
            }
        }
        Ok(())
    }

    /// Applies one op. Ops arrive decoded and validated, so the only error
    /// is a storage error, which aborts the group.
    pub(crate) fn apply(&mut self, op: &WriteOp) -> EngineResult<Reply> {
        let reply = |count| {
            Ok(Reply {
                count,
                refusal: None,
            })
        };
        match op {
            WriteOp::Set { store, key, value } => {
                let (pid, count, is_new) = self.row_or_new(store)?;
                let existed = self
                    .kv
                    .insert((pid, key.as_str()), value.as_ref())
                    .ctx("set")?
                    .is_some();
                self.update_row(store, pid, count, is_new, u64::from(!existed), 0)?;
                reply(0)
            }
            WriteOp::Delete { store, key } => {
                let Some((pid, count)) = self.row(store)? else {
                    return reply(0);
                };
                let existed = self.kv.remove((pid, key.as_str())).ctx("delete")?.is_some();
                self.update_row(store, pid, count, false, 0, u64::from(existed))?;
                reply(u64::from(existed))
            }
            WriteOp::SetMany { store, entries } => {
                if entries.is_empty() {
                    return reply(0);
                }
                let (pid, count, is_new) = self.row_or_new(store)?;
                let mut added = 0;
                for (key, value) in entries.iter() {
                    let existed = self.kv.insert((pid, key), value).ctx("set_many")?.is_some();
                    added += u64::from(!existed);
                }
                self.update_row(store, pid, count, is_new, added, 0)?;
                reply(0)
            }
            WriteOp::DeleteMany { store, keys } => {
                let Some((pid, count)) = self.row(store)? else {
                    return reply(0);
                };
                let mut removed = 0;
                for key in keys.iter() {
                    let existed = self.kv.remove((pid, key)).ctx("delete_many")?.is_some();
                    removed += u64::from(existed);
                }
                self.update_row(store, pid, count, false, 0, removed)?;
                reply(removed)
            }
            WriteOp::Clear { store } => reply(self.clear(store)?),
            WriteOp::Sync => reply(0),
            WriteOp::Wal(op) => {
                let wal = match &mut self.wal {
                    Some(wal) => wal,
                    None => self.wal.insert(WalTables::open(self.txn)?),
                };
                let (count, refusal) = wal.apply(op)?;
                Ok(Reply { count, refusal })
            }
            WriteOp::Import(plan) => reply(self.import(plan)?),
        }
    }

    /// Detaches a store's partition for the GC; answers how many keys it
    /// held (0 for a store without keys).
    fn clear(&mut self, store: &str) -> EngineResult<u64> {
        let Some((pid, count)) = self
            .stores
            .remove(store)
            .ctx("clear_store")?
            .map(|g| g.value())
        else {
            return Ok(0);
        };
        self.garbage.insert(pid, ()).ctx("queue garbage")?;
        self.total_keys = self.total_keys.saturating_sub(count);
        self.store_count = self.store_count.saturating_sub(1);
        Ok(count)
    }

    /// Replaces every store the plan names with the snapshot's records;
    /// answers how many records were written. The plan was verified to its
    /// trailer before it reached the writer, so reading it again can only
    /// fail on I/O (or a spool changed behind the server's back), which
    /// aborts the group like any storage error.
    fn import(&mut self, plan: &ImportPlan) -> EngineResult<u64> {
        const OP: &str = "import";
        for store in &plan.stores {
            self.clear(store)?;
        }
        let mut records = plan.open().ctx(OP)?;
        let mut current: Option<(String, u64, u64)> = None;
        let mut total = 0;
        while let Some(r) = records.next_record().ctx(OP)? {
            if current.as_ref().is_none_or(|(s, _, _)| *s != r.store_id) {
                if let Some((store, pid, count)) = current.take() {
                    self.update_row(&store, pid, 0, true, count, 0)?;
                }
                // Records are sorted, so each store is one run. The plan
                // lists every store with records, so this clear finds
                // nothing; it keeps the counters right regardless.
                self.clear(&r.store_id)?;
                let pid = self.next_pid;
                self.next_pid += 1;
                current = Some((r.store_id, pid, 0));
            }
            let (_, pid, count) = current.as_mut().expect("set above");
            self.kv
                .insert((*pid, r.key.as_str()), r.value.as_slice())
                .ctx(OP)?;
            *count += 1;
            total += 1;
        }
        if let Some((store, pid, count)) = current.take() {
            self.update_row(&store, pid, 0, true, count, 0)?;
        }
        Ok(total)
    }
}

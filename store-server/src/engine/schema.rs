//! The redb tables. Layout and invariants are described in docs/server.md.
//!
//! A store's data lives under a numeric partition id rather than under its
//! name so that `clear_store` can detach a whole partition in O(1) (drop the
//! `stores` row, queue the id in `garbage`) and let the background GC delete
//! the entries in small chunks.

use redb::TableDefinition;

/// store_id -> (partition id, number of keys). A row exists only while the
/// store holds at least one key, so nothing accumulates per store_id ever
/// seen, and `key_count`/`store_exists` read exactly one row.
pub const STORES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("stores");

/// (partition id, key) -> value.
pub const KV: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("kv");

/// Counters, see the `META_*` names.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Partition ids detached by `clear_store` whose entries still await deletion.
pub const GARBAGE: TableDefinition<u64, ()> = TableDefinition::new("garbage");

/// Replicated stores only: `applied` and `membership`, JSON of the last
/// applied Raft log id and membership, written in the same transaction as
/// the entries they describe (see `replication::state_machine`).
pub const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");

/// Next partition id to hand out. Ids are never reused, so a cleared
/// partition still being collected can never receive new writes.
pub const META_NEXT_PARTITION: &str = "next_partition_id";
/// Keys across all live stores (the `keys` gauge, O(1)).
pub const META_TOTAL_KEYS: &str = "total_keys";
/// Live stores, i.e. rows in `stores` (the `stores` gauge, O(1)).
pub const META_STORE_COUNT: &str = "store_count";
/// The commit journal's last checkpoint: the sequence number of the last
/// record it covers and the key of the records after it (see
/// `engine::journal`). Written only by durable commits.
pub const META_JOURNAL_SEQ: &str = "journal_checkpoint_seq";
pub const META_JOURNAL_KEY: &str = "journal_checkpoint_key";
/// On-disk layout version, checked at open.
pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const SCHEMA_VERSION: u64 = 1;

/// The full key range of one partition in `KV`.
pub fn partition_range(pid: u64) -> std::ops::Range<(u64, &'static str)> {
    (pid, "")..(pid + 1, "")
}

//! Write-ahead logs of DrasiLib transient sources, in the same database as
//! the state store but in their own tables (see docs/wal.md).
//!
//! Semantics follow DrasiLib's file-backed `drasi-wal-redb` provider:
//! sequence numbers start at 1 and are never reused while the log exists,
//! a full log either rejects the append or evicts its oldest events,
//! `prune_up_to` removes `seq <= n`, and deleting a log forgets its counter.
//!
//! Nothing is kept in memory per source: the head, the count and the
//! config live in one `wal_logs` row, read and written inside the writer's
//! transaction, so memory does not grow with sources or events.

use bytes::Bytes;
use drasi_store_protocol::wal::{
    AppendId, EVENT_OVERHEAD_BYTES, EVENTS_FRAME_HEADER_BYTES, EventsFrame, WalCapacityPolicy,
    WalConfig, WalInfo,
};
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{EngineError, EngineResult};

/// source_id -> (head sequence, event count, max_events, policy).
/// `policy` is [`POLICY_REJECT`] or [`POLICY_OVERWRITE`].
pub const WAL_LOGS: TableDefinition<&str, (u64, u64, u64, u8)> = TableDefinition::new("wal_logs");

/// (source_id, sequence) -> append id (16 bytes, big-endian; all zero when
/// the client sent none) followed by the encoded event.
pub const WAL_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("wal_events");

/// (source_id, append id) -> sequence, for the retained events that were
/// appended with an id. An entry lives exactly as long as its event, so the
/// table is bounded by the events retained.
pub const WAL_APPEND_IDS: TableDefinition<(&str, u128), u64> =
    TableDefinition::new("wal_append_ids");

const POLICY_REJECT: u8 = 0;
const POLICY_OVERWRITE: u8 = 1;
const APPEND_ID_BYTES: usize = 16;

/// Why the writer refused a WAL op; it changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotRegistered,
    CapacityExhausted,
}

impl Refusal {
    pub(crate) fn for_source(self, source: String) -> WalRefusal {
        match self {
            Refusal::NotRegistered => WalRefusal::NotRegistered(source),
            Refusal::CapacityExhausted => WalRefusal::CapacityExhausted(source),
        }
    }
}

/// Why a WAL call was refused, naming the source; it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalRefusal {
    NotRegistered(String),
    CapacityExhausted(String),
}

impl std::fmt::Display for WalRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalRefusal::NotRegistered(s) => write!(f, "source '{s}' has no write-ahead log"),
            WalRefusal::CapacityExhausted(s) => write!(
                f,
                "write-ahead log of source '{s}' is full and its policy rejects new events"
            ),
        }
    }
}

/// A WAL write, validated by the HTTP layer.
#[derive(Debug, Clone)]
pub enum WalOp {
    /// Creates the log, or replaces the config of an existing one (keeping
    /// its events and counter, like reopening a file with a new config).
    Register { source: String, config: WalConfig },
    /// Reply count: the sequence number assigned (or, for a repeated
    /// append id, the one assigned the first time).
    Append {
        source: String,
        append_id: Option<AppendId>,
        event: Bytes,
    },
    /// Reply count: events removed.
    Prune { source: String, up_to: u64 },
    /// Removes the log with its events and counter; no error when absent.
    Delete { source: String },
}

impl WalOp {
    pub(crate) fn source(&self) -> &str {
        match self {
            WalOp::Register { source, .. }
            | WalOp::Append { source, .. }
            | WalOp::Prune { source, .. }
            | WalOp::Delete { source } => source,
        }
    }

    pub(crate) fn payload_bytes(&self) -> usize {
        match self {
            WalOp::Append { event, .. } => event.len(),
            _ => 0,
        }
    }
}

fn policy_byte(p: WalCapacityPolicy) -> u8 {
    match p {
        WalCapacityPolicy::RejectIncoming => POLICY_REJECT,
        WalCapacityPolicy::OverwriteOldest => POLICY_OVERWRITE,
    }
}

fn storage(op: &'static str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Storage {
        op,
        detail: e.to_string(),
    }
}

fn st(op: &'static str) -> impl Fn(redb::StorageError) -> EngineError {
    move |e| storage(op, e)
}

fn events_of(source: &str) -> std::ops::RangeInclusive<(&str, u64)> {
    (source, 0)..=(source, u64::MAX)
}

/// The WAL tables of one write transaction; opened only by groups that
/// contain a WAL op.
pub(crate) struct WalTables<'txn> {
    logs: Table<'txn, &'static str, (u64, u64, u64, u8)>,
    events: Table<'txn, (&'static str, u64), &'static [u8]>,
    append_ids: Table<'txn, (&'static str, u128), u64>,
}

/// Error: abort the group. A refusal: this op changed nothing.
type Applied = EngineResult<(u64, Option<Refusal>)>;

impl<'txn> WalTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, EngineError> {
        let open = |e: redb::TableError| storage("open wal table", e);
        Ok(WalTables {
            logs: txn.open_table(WAL_LOGS).map_err(open)?,
            events: txn.open_table(WAL_EVENTS).map_err(open)?,
            append_ids: txn.open_table(WAL_APPEND_IDS).map_err(open)?,
        })
    }

    pub(crate) fn apply(&mut self, op: &WalOp) -> Applied {
        match op {
            WalOp::Register { source, config } => {
                let (head, count) = self.log(source)?.map_or((0, 0), |(h, c, _, _)| (h, c));
                self.logs
                    .insert(
                        source.as_str(),
                        (
                            head,
                            count,
                            config.max_events,
                            policy_byte(config.capacity_policy),
                        ),
                    )
                    .map_err(st("wal register"))?;
                Ok((0, None))
            }
            WalOp::Append {
                source,
                append_id,
                event,
            } => self.append(source, *append_id, event),
            WalOp::Prune { source, up_to } => {
                let Some((head, count, max, policy)) = self.log(source)? else {
                    return Ok((0, Some(Refusal::NotRegistered)));
                };
                let removed =
                    self.remove_range((source.as_str(), 0)..=(source.as_str(), *up_to))?;
                if removed > 0 {
                    self.logs
                        .insert(source.as_str(), (head, count - removed, max, policy))
                        .map_err(st("wal prune"))?;
                }
                Ok((removed, None))
            }
            WalOp::Delete { source } => {
                if self
                    .logs
                    .remove(source.as_str())
                    .map_err(st("wal delete"))?
                    .is_some()
                {
                    self.remove_range(events_of(source))?;
                }
                Ok((0, None))
            }
        }
    }

    fn log(&self, source: &str) -> Result<Option<(u64, u64, u64, u8)>, EngineError> {
        Ok(self
            .logs
            .get(source)
            .map_err(st("read wal log"))?
            .map(|g| g.value()))
    }

    fn append(&mut self, source: &str, append_id: Option<AppendId>, event: &[u8]) -> Applied {
        let Some((head, mut count, max, policy)) = self.log(source)? else {
            return Ok((0, Some(Refusal::NotRegistered)));
        };
        if let Some(AppendId(id)) = append_id
            && let Some(seq) = self
                .append_ids
                .get((source, id))
                .map_err(st("read wal append id"))?
        {
            // A retry of an append that already committed.
            return Ok((seq.value(), None));
        }
        if count >= max {
            if policy != POLICY_OVERWRITE {
                return Ok((0, Some(Refusal::CapacityExhausted)));
            }
            // A loop, not one eviction: the log may hold more than
            // `max_events` after a re-register with a smaller limit.
            while count >= max {
                let Some(oldest) = self
                    .events
                    .range(events_of(source))
                    .map_err(st("wal evict"))?
                    .next()
                    .transpose()
                    .map_err(st("wal evict"))?
                    .map(|(k, _)| k.value().1)
                else {
                    break;
                };
                count -= self.remove_range((source, oldest)..=(source, oldest))?;
            }
        }
        let seq = head + 1;
        let id = append_id.map_or(0, |a| a.0);
        let mut value = Vec::with_capacity(APPEND_ID_BYTES + event.len());
        value.extend_from_slice(&id.to_be_bytes());
        value.extend_from_slice(event);
        self.events
            .insert((source, seq), value.as_slice())
            .map_err(st("wal append"))?;
        if id != 0 {
            self.append_ids
                .insert((source, id), seq)
                .map_err(st("wal append id"))?;
        }
        self.logs
            .insert(source, (seq, count + 1, max, policy))
            .map_err(st("wal append"))?;
        Ok((seq, None))
    }

    /// Removes the events in `range` with their append ids; returns how
    /// many there were.
    fn remove_range(
        &mut self,
        range: std::ops::RangeInclusive<(&str, u64)>,
    ) -> Result<u64, EngineError> {
        let source = range.start().0;
        let mut removed = 0;
        for item in self
            .events
            .extract_from_if(range, |_, _| true)
            .map_err(st("wal remove"))?
        {
            let (_, value) = item.map_err(st("wal remove"))?;
            removed += 1;
            let id = append_id_of(value.value());
            if id != 0 {
                self.append_ids
                    .remove((source, id))
                    .map_err(st("wal remove append id"))?;
            }
        }
        Ok(removed)
    }
}

fn not_registered(source: &str) -> EngineError {
    EngineError::Wal(WalRefusal::NotRegistered(source.to_string()))
}

fn append_id_of(stored: &[u8]) -> u128 {
    stored
        .get(..APPEND_ID_BYTES)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u128::from_be_bytes)
}

/// Creates the WAL tables so read transactions can open them.
pub(crate) fn init_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(WAL_LOGS)?;
    txn.open_table(WAL_EVENTS)?;
    txn.open_table(WAL_APPEND_IDS)?;
    Ok(())
}

fn read_log(
    txn: &ReadTransaction,
    op: &'static str,
    source: &str,
) -> EngineResult<Option<(u64, u64)>> {
    let logs = txn.open_table(WAL_LOGS).map_err(|e| storage(op, e))?;
    Ok(logs.get(source).map_err(|e| storage(op, e))?.map(|g| {
        let (head, count, _, _) = g.value();
        (head, count)
    }))
}

fn oldest(
    events: &redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    op: &'static str,
    source: &str,
) -> EngineResult<Option<u64>> {
    let first = events
        .range(events_of(source))
        .map_err(|e| storage(op, e))?
        .next()
        .transpose()
        .map_err(|e| storage(op, e))?;
    Ok(first.map(|(k, _)| k.value().1))
}

/// Head, oldest and count of one log, from one snapshot.
pub(crate) fn info(txn: &ReadTransaction, source: &str) -> EngineResult<WalInfo> {
    const OP: &str = "wal info";
    let (head, count) = read_log(txn, OP, source)?.ok_or_else(|| not_registered(source))?;
    let events = txn.open_table(WAL_EVENTS).map_err(|e| storage(OP, e))?;
    Ok(WalInfo {
        head_sequence: head,
        oldest_sequence: oldest(&events, OP, source)?,
        event_count: count,
    })
}

/// One page of `read_from`, as the events frame of the answer (see
/// [`EventsFrame`]): the events with `seq >= from`, in order, without their
/// append ids, up to `max_answer_bytes` of frame. Events are copied once,
/// straight from redb's pages into the frame, and only after `admit`
/// granted room for each; a page that stops early says where the next one
/// starts. No events when `from` is older than the oldest retained one
/// (that position was pruned).
pub(crate) fn read_page<E: From<EngineError>>(
    txn: &ReadTransaction,
    source: &str,
    from: u64,
    max_answer_bytes: usize,
    mut admit: impl FnMut(usize) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    const OP: &str = "wal read_from";
    read_log(txn, OP, source)?.ok_or_else(|| not_registered(source))?;
    let events = txn.open_table(WAL_EVENTS).map_err(|e| storage(OP, e))?;
    let oldest = oldest(&events, OP, source)?;
    let mut page = EventsFrame {
        oldest,
        next: None,
        events: Vec::new(),
    };
    if oldest.is_some_and(|o| from < o) {
        return Ok(page.encode());
    }
    admit(EVENTS_FRAME_HEADER_BYTES)?;
    let mut bytes = EVENTS_FRAME_HEADER_BYTES;
    let mut guards = Vec::new();
    for item in events
        .range((source, from)..=(source, u64::MAX))
        .map_err(|e| storage(OP, e))?
    {
        let (k, v) = item.map_err(|e| storage(OP, e))?;
        let seq = k.value().1;
        let event_len = v.value().len().saturating_sub(APPEND_ID_BYTES);
        let entry = EVENT_OVERHEAD_BYTES + event_len;
        if bytes + entry > max_answer_bytes {
            if guards.is_empty() {
                // Not even one event fits: no page size makes progress.
                return Err(EngineError::WalEventTooLarge {
                    source_id: source.to_string(),
                    sequence: seq,
                    bytes: event_len,
                    max: max_answer_bytes,
                }
                .into());
            }
            page.next = Some(seq);
            break;
        }
        admit(entry)?;
        bytes += entry;
        guards.push((seq, v));
    }
    page.events = guards
        .iter()
        .map(|(seq, v)| (*seq, &v.value()[APPEND_ID_BYTES.min(v.value().len())..]))
        .collect();
    Ok(page.encode())
}

/// The oldest retained sequence and the events with their sequences.
#[cfg(test)]
pub(crate) type Tail = (Option<u64>, Vec<(u64, Vec<u8>)>);

/// Every retained event with `seq >= from`, decoded from one unbounded
/// page: for tests, which know their logs are small.
#[cfg(test)]
pub(crate) fn read_all(txn: &ReadTransaction, source: &str, from: u64) -> EngineResult<Tail> {
    let frame = read_page(txn, source, from, usize::MAX, |_| Ok::<(), EngineError>(()))?;
    let page = EventsFrame::decode(&frame).expect("the engine writes valid frames");
    assert_eq!(page.next, None, "an unbounded page holds the whole tail");
    Ok((
        page.oldest,
        page.events
            .into_iter()
            .map(|(s, e)| (s, e.to_vec()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::DurabilityMode;
    use crate::engine::{Engine, EngineOptions};
    use crate::metrics::Metrics;

    fn open(dir: &tempfile::TempDir) -> Engine {
        Engine::open(
            &EngineOptions {
                path: dir.path().join("state.redb"),
                durability: DurabilityMode::Immediate,
                cache_bytes: 1 << 20,
                recovery_timeout: std::time::Duration::from_secs(30),
                journal: true,
            },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    fn register(source: &str, max_events: u64) -> WalOp {
        WalOp::Register {
            source: source.into(),
            config: WalConfig {
                max_events,
                capacity_policy: WalCapacityPolicy::OverwriteOldest,
            },
        }
    }

    fn append(source: &str, id: u128, event: &'static [u8]) -> WalOp {
        WalOp::Append {
            source: source.into(),
            append_id: (id != 0).then_some(AppendId(id)),
            event: Bytes::from_static(event),
        }
    }

    fn append_ids(engine: &Engine) -> u64 {
        use redb::ReadableTableMetadata as _;
        let txn = engine.db.begin_read("test").unwrap();
        txn.open_table(WAL_APPEND_IDS).unwrap().len().unwrap()
    }

    #[tokio::test]
    async fn a_repeated_append_id_returns_the_first_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(&dir);
        engine.wal_write(register("s", 16)).await.unwrap();
        assert_eq!(engine.wal_write(append("s", 7, b"a")).await.unwrap(), 1);
        // The retry of the same append: same answer, nothing new stored.
        assert_eq!(engine.wal_write(append("s", 7, b"a")).await.unwrap(), 1);
        assert_eq!(engine.wal_write(append("s", 8, b"b")).await.unwrap(), 2);
        // Ids are per source.
        engine.wal_write(register("t", 16)).await.unwrap();
        assert_eq!(engine.wal_write(append("t", 7, b"x")).await.unwrap(), 1);
        let info = engine.wal_info("s").unwrap();
        assert_eq!((info.head_sequence, info.event_count), (2, 2));
        let (_, events) = read_all(&engine.db.begin_read("test").unwrap(), "s", 1).unwrap();
        assert_eq!(events, vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
    }

    #[tokio::test]
    async fn append_ids_live_exactly_as_long_as_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(&dir);
        engine.wal_write(register("s", 16)).await.unwrap();
        for id in 1..=40u128 {
            engine.wal_write(append("s", id, b"e")).await.unwrap();
        }
        // Eviction at capacity dropped the ids of the evicted events.
        assert_eq!(append_ids(&engine), 16);
        assert_eq!(
            engine
                .wal_write(WalOp::Prune {
                    source: "s".into(),
                    up_to: 30
                })
                .await
                .unwrap(),
            6
        );
        assert_eq!(append_ids(&engine), 10);
        engine
            .wal_write(WalOp::Delete { source: "s".into() })
            .await
            .unwrap();
        assert_eq!(append_ids(&engine), 0);
        assert!(matches!(
            engine.wal_info("s"),
            Err(EngineError::Wal(WalRefusal::NotRegistered(_)))
        ));
    }

    /// Pages of `read_page` walked like the client walks them.
    fn pages(engine: &Engine, from: u64, max: usize) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        let mut from = from;
        loop {
            let txn = engine.db.begin_read("test").unwrap();
            let frame = read_page(&txn, "s", from, max, |_| Ok::<(), EngineError>(())).unwrap();
            assert!(frame.len() <= max, "a page of {} bytes", frame.len());
            let page = EventsFrame::decode(&frame).unwrap();
            out.push(page.events.iter().map(|(seq, _)| *seq).collect());
            match page.next {
                Some(next) => from = next,
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn read_from_answers_are_bounded_pages() {
        const EVENT: &[u8] = &[7; 100];
        let dir = tempfile::tempdir().unwrap();
        let engine = open(&dir);
        engine.wal_write(register("s", 16)).await.unwrap();
        for id in 1..=10u128 {
            engine.wal_write(append("s", id, EVENT)).await.unwrap();
        }
        // Room for exactly three events per page.
        let max = EVENTS_FRAME_HEADER_BYTES + 3 * (EVENT_OVERHEAD_BYTES + EVENT.len());
        assert_eq!(
            pages(&engine, 2, max),
            vec![vec![2, 3, 4], vec![5, 6, 7], vec![8, 9, 10]]
        );
        assert_eq!(
            pages(&engine, 1, max - 1).concat(),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(
            pages(&engine, 1, usize::MAX),
            vec![(1..=10).collect::<Vec<_>>()]
        );

        // A page too small for even one event: a clear error, not an empty
        // page the client would ask for again and again.
        let txn = engine.db.begin_read("test").unwrap();
        let tiny = EVENTS_FRAME_HEADER_BYTES + EVENT_OVERHEAD_BYTES + EVENT.len() - 1;
        let err = read_page(&txn, "s", 4, tiny, |_| Ok::<(), EngineError>(())).unwrap_err();
        assert!(
            matches!(&err, EngineError::WalEventTooLarge { source_id, sequence: 4, bytes: 100, .. } if source_id == "s"),
            "{err}"
        );

        // The memory budget is asked before each event is copied, and its
        // refusal ends the read.
        let mut granted = 0;
        let refused = read_page(&txn, "s", 1, usize::MAX, |len| {
            if granted + len > 300 {
                return Err(EngineError::Busy { capacity: 0 });
            }
            granted += len;
            Ok(())
        });
        assert!(matches!(refused, Err(EngineError::Busy { .. })));
        assert!(granted <= 300);
    }

    #[tokio::test]
    async fn concurrent_appends_share_commits_and_get_distinct_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(open(&dir));
        engine.wal_write(register("s", 10_000)).await.unwrap();
        let tasks: Vec<_> = (0..64u128)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.wal_write(append("s", i + 1, b"e")).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=64).collect::<Vec<u64>>());
    }
}

//! The log store against openraft's own storage suite, plus what the suite
//! does not cover: durability across reopen and refusing damaged files.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogState, RaftLogStorage, RaftLogStorageExt as _, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, blank_ent, log_id};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase as _, TableDefinition};
use tempfile::TempDir;

use super::{GroupResult, LOG_FILE_NAME, LogPayload, LogStore, NodeId, TypeConfig};

/// The suite exercises a log store together with a state machine. The
/// engine's state machine does not exist yet, so the suite runs against
/// this minimal one: it keeps the applied log id and membership (all the
/// suite inspects) and snapshots them as JSON in a temporary file.
struct SuiteStateMachine {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Shared with the snapshot builders handed out, so a snapshot they
    /// build becomes this state machine's current one, as openraft expects.
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    snapshots_built: u64,
}

/// A built or installed snapshot: its metadata and its bytes.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

type Applied = (Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>);

fn snapshot_file(bytes: &[u8]) -> std::io::Result<Box<tokio::fs::File>> {
    let mut file = tempfile::tempfile()?;
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Box::new(tokio::fs::File::from_std(file)))
}

impl RaftSnapshotBuilder<TypeConfig> for SuiteStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        self.snapshots_built += 1;
        let applied: Applied = (self.applied, self.membership.clone());
        let bytes =
            serde_json::to_vec(&applied).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("suite-{}", self.snapshots_built),
        };
        *self.current.lock().unwrap() = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: snapshot_file(&bytes)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?,
        })
    }
}

impl RaftStateMachine<TypeConfig> for SuiteStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<Applied, StorageError<NodeId>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<GroupResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            if let EntryPayload::Membership(m) = entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), m);
            }
            results.push(GroupResult::default());
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SuiteStateMachine {
            applied: self.applied,
            membership: self.membership.clone(),
            current: self.current.clone(),
            snapshots_built: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        snapshot_file(&[]).map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut file = snapshot.into_std().await;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let (applied, membership): Applied =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        self.applied = applied;
        self.membership = membership;
        *self.current.lock().unwrap() = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        match &*self.current.lock().unwrap() {
            Some((meta, bytes)) => Ok(Some(Snapshot {
                meta: meta.clone(),
                snapshot: snapshot_file(bytes)
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?,
            })),
            None => Ok(None),
        }
    }
}

/// Builds a fresh log store in its own temporary directory for each suite
/// case; the directory is the guard that lives as long as the case.
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, SuiteStateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, SuiteStateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write_logs(&e))?;
        let store = LogStore::open(&dir.path().join(LOG_FILE_NAME))
            .map_err(|e| StorageIOError::write_logs(AnyErrorOf(e.to_string())))?;
        let sm = SuiteStateMachine {
            applied: None,
            membership: StoredMembership::default(),
            current: Arc::default(),
            snapshots_built: 0,
        };
        Ok((dir, store, sm))
    }
}

/// `anyhow::Error` is not a `std::error::Error`; carry its message.
#[derive(Debug)]
struct AnyErrorOf(String);

impl std::fmt::Display for AnyErrorOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnyErrorOf {}

impl From<AnyErrorOf> for openraft::AnyError {
    fn from(e: AnyErrorOf) -> Self {
        openraft::AnyError::new(&e)
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}

fn normal(term: u64, index: u64, group: &[u8]) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(LogPayload {
            group: group.to_vec(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE_NAME);
    {
        let mut store: LogStore = LogStore::open(&path).unwrap();
        store.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        store
            .blocking_append([blank_ent::<TypeConfig>(1, 1, 1)])
            .await
            .unwrap();
        store
            .blocking_append((2..=6).map(|i| normal(2, i, &[i as u8; 3])))
            .await
            .unwrap();
        assert_eq!(store.committed(), None);
        store.save_committed(Some(log_id(2, 1, 5))).await.unwrap();
        assert_eq!(store.committed(), Some(log_id(2, 1, 5)));
        store.purge(log_id(2, 1, 2)).await.unwrap();
        store.truncate(log_id(2, 1, 6)).await.unwrap();
    }

    let mut store: LogStore = LogStore::open(&path).unwrap();
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(3, 2))
    );
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 1, 5)));
    assert_eq!(
        store.committed(),
        Some(log_id(2, 1, 5)),
        "loaded at open for /v1/cluster"
    );
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(2, 1, 2)),
            last_log_id: Some(log_id(2, 1, 5)),
        }
    );
    let entries = store.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [3, 4, 5],
        "purged entries and truncated ones must stay gone"
    );
    assert_eq!(
        entries[1].payload,
        EntryPayload::Normal(LogPayload { group: vec![4; 3] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_purged_log_still_reports_where_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE_NAME);
    {
        let mut store: LogStore = LogStore::open(&path).unwrap();
        store
            .blocking_append((1..=4).map(|i| normal(1, i, b"g")))
            .await
            .unwrap();
        store.purge(log_id(1, 1, 4)).await.unwrap();
    }
    let mut store: LogStore = LogStore::open(&path).unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(1, 1, 4)),
            last_log_id: Some(log_id(1, 1, 4)),
        }
    );
    assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
}

const RAW_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const RAW_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_under_the_wrong_index_is_an_error_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE_NAME);
    drop(LogStore::<TypeConfig>::open(&path).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(RAW_LOG).unwrap();
            let misplaced = serde_json::to_vec(&normal(1, 9, b"x")).unwrap();
            log.insert(3, misplaced.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let mut store: LogStore = LogStore::open(&path).unwrap();
    let err = store
        .try_get_log_entries(0..10)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("index 3 claims index 9"), "{err}");
    assert!(err.contains(LOG_FILE_NAME), "names the file: {err}");
    let err = store.get_log_state().await.unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn a_log_of_another_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE_NAME);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(RAW_META).unwrap();
            meta.insert("format", b"2".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = LogStore::<TypeConfig>::open(&path).unwrap_err().to_string();
    assert!(err.contains("has format 2"), "{err}");
    assert!(err.contains("reads format 1"), "{err}");

    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(RAW_META).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), b"2");
}

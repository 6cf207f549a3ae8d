//! The engine's state machine: openraft's storage suite, and what the suite
//! does not look at: the data an entry writes, its answers, the applied
//! log id across a reopen, and rebuilding a node from a snapshot.

use std::sync::Arc;

use bytes::Bytes;
use drasi_store_protocol::EntriesFrame;
use drasi_store_protocol::wal::{WalCapacityPolicy, WalConfig};
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{
    BasicNode, Entry, EntryPayload, Membership, RaftSnapshotBuilder, StorageError, StorageIOError,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::engine::schema::{KV, STORES};
use crate::engine::wal::WalOp;
use crate::engine::{WriteOp, journal};
use crate::replication::{LOG_FILE_NAME, LogPayload, LogStore};

const CACHE: usize = 4 * 1024 * 1024;

fn open_sm(dir: &Path) -> StateMachine {
    let db = DbSlot::open(&dir.join("state.redb"), CACHE).unwrap();
    StateMachine::new(Arc::new(db))
}

struct EngineBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for EngineBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write_logs(&e))?;
        let store = LogStore::open(&dir.path().join(LOG_FILE_NAME))
            .map_err(|e| StorageIOError::write_logs(AnyError::error(format!("{e:#}"))))?;
        let sm = open_sm(dir.path());
        Ok((dir, store, sm))
    }
}

#[test]
fn the_engine_state_machine_passes_openraft_storage_suite() {
    Suite::test_all(EngineBuilder).expect("openraft's storage suite");
}

fn group(index: u64, ops: &[WriteOp]) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(LogPayload {
            group: journal::encode(ops.iter()).unwrap(),
        }),
    }
}

fn set(store: &str, key: &str, value: &[u8]) -> WriteOp {
    WriteOp::Set {
        store: store.into(),
        key: key.into(),
        value: Bytes::copy_from_slice(value),
    }
}

/// A value as the state machine's database holds it.
fn value(sm: &StateMachine, store: &str, key: &str) -> Option<Vec<u8>> {
    let txn = sm.db.begin_read("test").unwrap();
    let stores = txn.open_table(STORES).unwrap();
    let (pid, _) = stores.get(store).unwrap()?.value();
    let kv = txn.open_table(KV).unwrap();
    kv.get((pid, key)).unwrap().map(|v| v.value().to_vec())
}

fn members() -> Membership<NodeId, BasicNode> {
    Membership::new(
        vec![[1, 2, 3].into_iter().collect()],
        [1, 2, 3]
            .into_iter()
            .map(|id| (id, BasicNode::new(format!("node-{id}:7071"))))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
}

async fn apply_some(sm: &mut StateMachine) -> Vec<GroupResult> {
    let entries = vec![
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Membership(members()),
        },
        group(2, &[set("a", "k", b"1"), set("a", "k2", b"2")]),
        group(
            3,
            &[
                WriteOp::Delete {
                    store: "a".into(),
                    key: "k2".into(),
                },
                WriteOp::SetMany {
                    store: "b".into(),
                    entries: EntriesFrame::encode(&[("x", b"10"), ("y", b"20")]),
                },
                WriteOp::Wal(WalOp::Append {
                    source: "unregistered".into(),
                    append_id: None,
                    event: Bytes::from_static(b"e"),
                }),
                WriteOp::Wal(WalOp::Register {
                    source: "src".into(),
                    config: WalConfig {
                        max_events: 10,
                        capacity_policy: WalCapacityPolicy::RejectIncoming,
                    },
                }),
                WriteOp::Wal(WalOp::Append {
                    source: "src".into(),
                    append_id: None,
                    event: Bytes::from_static(b"e"),
                }),
            ],
        ),
    ];
    sm.apply(entries).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_write_their_groups_and_answer_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open_sm(dir.path());
    let results = apply_some(&mut sm).await;
    assert_eq!(results.len(), 3);
    assert!(
        results[0].replies.is_empty(),
        "a membership entry has no requests"
    );
    assert_eq!(decode_replies(&results[1].replies).unwrap().len(), 2);
    let replies = decode_replies(&results[2].replies).unwrap();
    let counts: Vec<u64> = replies.iter().map(|r| r.count).collect();
    // delete found k2; set_many; a refused append; register; append got 1.
    assert_eq!(counts, [1, 0, 0, 0, 1]);
    assert_eq!(replies[2].refusal, Some(Refusal::NotRegistered));
    assert_eq!(value(&sm, "a", "k").as_deref(), Some(&b"1"[..]));
    assert_eq!(value(&sm, "a", "k2"), None);
    assert_eq!(value(&sm, "b", "y").as_deref(), Some(&b"20"[..]));

    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 3)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 1)));

    // Applied state and data come back together after a reopen.
    drop(sm);
    let mut sm = open_sm(dir.path());
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 3)));
    assert_eq!(membership.membership(), &members());
    assert_eq!(value(&sm, "b", "x").as_deref(), Some(&b"10"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_rebuilt_from_another_nodes_snapshot() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = open_sm(leader_dir.path());
    apply_some(&mut leader).await;
    let mut built = leader.build_snapshot().await.unwrap();
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, 3)));
    let mut bytes = Vec::new();
    built.snapshot.read_to_end(&mut bytes).await.unwrap();

    // A follower whose volume was wiped, with something stale in it.
    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower = open_sm(follower_dir.path());
    follower
        .apply(vec![group(1, &[set("stale", "k", b"old")])])
        .await
        .unwrap();
    let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
    receiving.write_all(&bytes).await.unwrap();
    follower
        .install_snapshot(&built.meta, receiving)
        .await
        .unwrap();

    assert_eq!(value(&follower, "a", "k").as_deref(), Some(&b"1"[..]));
    assert_eq!(value(&follower, "b", "y").as_deref(), Some(&b"20"[..]));
    assert_eq!(
        value(&follower, "stale", "k"),
        None,
        "installing replaces the data"
    );
    let (applied, membership) = follower.applied_state().await.unwrap();
    assert_eq!(applied, built.meta.last_log_id);
    assert_eq!(membership, built.meta.last_membership);
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built.meta);

    // The follower goes on applying after the snapshot.
    follower
        .apply(vec![group(4, &[set("a", "after", b"4")])])
        .await
        .unwrap();
    assert_eq!(value(&follower, "a", "after").as_deref(), Some(&b"4"[..]));
}

//! The journal's record codec, and recovery from the files a crash leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use drasi_store_protocol::wal::{AppendId, WalCapacityPolicy, WalConfig, WalInfo};
use drasi_store_protocol::{EntriesFrame, KeysFrame};

use super::*;
use crate::config::DurabilityMode;
use crate::engine::tests::{open_in, rt};
use crate::engine::{Engine, EngineError};

fn open(dir: &Path, journal: bool) -> Engine {
    open_in(dir, DurabilityMode::Immediate, journal)
}

/// The files as a `kill -9` leaves them: what the process had written to
/// the page cache, nothing of what it held in memory (redb keeps the pages
/// of non-durable commits in its own buffer). Taken while the writer is
/// held, so no write is half done. `with_journal: false` leaves the
/// journal out, to show what the database alone holds.
fn crash_image(engine: &Engine, from: &Path, to: &Path, with_journal: bool) {
    let hold = engine.hold_writer();
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("state.redb"), to.join("state.redb")).unwrap();
    if with_journal {
        std::fs::copy(from.join(JOURNAL_NAME), to.join(JOURNAL_NAME)).unwrap();
    }
    drop(hold);
}

/// An engine serving from `<tmp>/live`, and the runtime that drives it.
fn start_live() -> (tempfile::TempDir, PathBuf, tokio::runtime::Runtime, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let engine = open(&live, true);
    (dir, live, rt(), engine)
}

/// A crash image of `live` in `image`, then a clean stop of the engine.
fn crash_then_stop(rt: &tokio::runtime::Runtime, e: Engine, live: &Path, image: &Path) {
    crash_image(&e, live, image, true);
    rt.block_on(e.shutdown()).unwrap();
}

fn every_op() -> Vec<WriteOp> {
    vec![
        WriteOp::Set {
            store: "s/ü".into(),
            key: String::new(),
            value: Bytes::from_static(b"\0value"),
        },
        WriteOp::Delete {
            store: "s".into(),
            key: "k".into(),
        },
        WriteOp::SetMany {
            store: "many".into(),
            entries: EntriesFrame::encode(&[("a", b"1"), ("b", b""), ("a", b"2")]),
        },
        WriteOp::DeleteMany {
            store: "many".into(),
            keys: KeysFrame::encode(&["a", "", "a"]),
        },
        WriteOp::Clear {
            store: String::new(),
        },
        WriteOp::Wal(WalOp::Register {
            source: "src".into(),
            config: WalConfig {
                max_events: 7,
                capacity_policy: WalCapacityPolicy::OverwriteOldest,
            },
        }),
        WriteOp::Wal(WalOp::Register {
            source: "src2".into(),
            config: WalConfig {
                max_events: u64::MAX,
                capacity_policy: WalCapacityPolicy::RejectIncoming,
            },
        }),
        WriteOp::Wal(WalOp::Append {
            source: "src".into(),
            append_id: Some(AppendId(u128::MAX - 5)),
            event: Bytes::from_static(b"event"),
        }),
        WriteOp::Wal(WalOp::Append {
            source: "src".into(),
            append_id: None,
            event: Bytes::new(),
        }),
        WriteOp::Wal(WalOp::Prune {
            source: "src".into(),
            up_to: 3,
        }),
        WriteOp::Wal(WalOp::Delete {
            source: "src2".into(),
        }),
    ]
}

#[test]
fn every_journaled_op_decodes_to_itself() {
    let ops = every_op();
    let payload = encode(ops.iter()).unwrap();
    let decoded = decode(Bytes::from(payload)).unwrap();
    assert_eq!(format!("{decoded:?}"), format!("{ops:?}"));
}

#[test]
fn a_sync_or_an_import_is_never_journaled() {
    let mut ops = every_op();
    ops.push(WriteOp::Sync);
    assert!(encode(ops.iter()).is_none());
}

#[test]
fn a_cut_or_padded_payload_is_refused() {
    let payload = encode(every_op().iter()).unwrap();
    for cut in 0..payload.len() {
        assert!(
            decode(Bytes::copy_from_slice(&payload[..cut])).is_err(),
            "a payload cut at {cut} of {} bytes decoded",
            payload.len()
        );
    }
    let mut padded = payload.clone();
    padded.push(0);
    assert!(decode(Bytes::from(padded)).is_err());
}

/// Writes through the engine and remembers what was acknowledged.
struct Acked {
    kv: BTreeMap<(String, String), Vec<u8>>,
}

impl Acked {
    async fn set(&mut self, e: &Engine, store: &str, key: &str, value: &[u8]) {
        e.set(store, key, Bytes::copy_from_slice(value))
            .await
            .unwrap();
        self.kv.insert((store.into(), key.into()), value.to_vec());
    }

    fn check(&self, e: &Engine) {
        for ((store, key), value) in &self.kv {
            assert_eq!(
                e.get(store, key).unwrap().as_deref(),
                Some(value.as_slice()),
                "acknowledged {store}/{key} lost"
            );
        }
    }
}

async fn append(e: &Engine, n: usize) {
    for i in 0..n {
        e.wal_write(WalOp::Append {
            source: "src".into(),
            append_id: None,
            event: Bytes::from(format!("event {i}")),
        })
        .await
        .unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_a_crash_between_checkpoints() {
    let (dir, live, rt, e) = start_live();
    let mut acked = Acked {
        kv: BTreeMap::new(),
    };
    let wal_before: WalInfo = rt.block_on(async {
        e.wal_write(WalOp::Register {
            source: "src".into(),
            config: WalConfig {
                max_events: 1000,
                capacity_policy: WalCapacityPolicy::RejectIncoming,
            },
        })
        .await
        .unwrap();
        for i in 0..40 {
            acked.set(&e, "a", &format!("k{i}"), b"before").await;
        }
        append(&e, 20).await;
        // A checkpoint: the journal starts over, and the 40 records above
        // stay in the file behind the new ones, under the old key.
        e.sync().await.unwrap();
        for i in 0..5 {
            acked.set(&e, "a", &format!("k{i}"), b"after").await;
        }
        acked.set(&e, "b", "only-in-journal", b"x").await;
        e.set_many("c", EntriesFrame::encode(&[("m1", b"1"), ("m2", b"2")]))
            .await
            .unwrap();
        append(&e, 3).await;
        e.wal_info("src").unwrap()
    });
    acked.kv.insert(("c".into(), "m1".into()), b"1".to_vec());
    acked.kv.insert(("c".into(), "m2".into()), b"2".to_vec());
    let image = dir.path().join("image");
    let without = dir.path().join("without-journal");
    crash_image(&e, &live, &image, true);
    crash_image(&e, &live, &without, false);
    rt.block_on(e.shutdown()).unwrap();

    // The database alone lacks the writes after the checkpoint, so the
    // replay below is what brings them back.
    let bare = open(&without, true);
    assert_eq!(bare.get("b", "only-in-journal").unwrap(), None);
    assert_eq!(
        bare.get("a", "k0").unwrap().as_deref(),
        Some(&b"before"[..])
    );

    let e = open(&image, true);
    acked.check(&e);
    assert_eq!(e.store_info("c").unwrap(), (true, 2));
    assert_eq!(e.totals().unwrap().keys, 43);
    // Appends are not idempotent: a record replayed twice would show here.
    let wal = e.wal_info("src").unwrap();
    assert_eq!(wal, wal_before);
    assert_eq!(wal.head_sequence, 23);
    assert_eq!(wal.event_count, 23);

    // The recovered store takes new writes, and a second crash loses
    // nothing either.
    rt.block_on(acked.set(&e, "b", "after-recovery", b"y"));
    let again = dir.path().join("again");
    crash_image(&e, &image, &again, true);
    drop(e);
    let e = open(&again, true);
    acked.check(&e);
    assert_eq!(e.wal_info("src").unwrap().head_sequence, 23);
}

#[test]
fn a_torn_last_record_is_dropped_and_every_record_before_it_replayed() {
    let (dir, live, rt, e) = start_live();
    rt.block_on(async {
        e.sync().await.unwrap();
        // One group each: the calls are awaited one at a time.
        for i in 0..10 {
            e.set("s", &format!("k{i}"), Bytes::from_static(b"value"))
                .await
                .unwrap();
        }
    });
    let image = dir.path().join("image");
    crash_then_stop(&rt, e, &live, &image);

    // Every record has the same size; damage the last byte of the tenth,
    // as a write cut short by the crash would.
    let one = encode(
        [WriteOp::Set {
            store: "s".into(),
            key: "k0".into(),
            value: Bytes::from_static(b"value"),
        }]
        .iter(),
    )
    .unwrap();
    let record = (HEADER + one.len()) as u64;
    let journal = std::fs::OpenOptions::new()
        .write(true)
        .open(image.join(JOURNAL_NAME))
        .unwrap();
    journal.write_all_at(&[0xFF], 10 * record - 1).unwrap();
    drop(journal);

    let e = open(&image, true);
    for i in 0..9 {
        assert_eq!(
            e.get("s", &format!("k{i}")).unwrap().as_deref(),
            Some(&b"value"[..]),
            "k{i}"
        );
    }
    assert_eq!(e.get("s", "k9").unwrap(), None, "a torn record was applied");
    rt.block_on(e.set("s", "k9", Bytes::from_static(b"again")))
        .unwrap();
    assert_eq!(e.get("s", "k9").unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn a_journal_is_replayed_even_when_the_journal_is_turned_off() {
    let (dir, live, rt, e) = start_live();
    rt.block_on(async {
        e.sync().await.unwrap();
        e.set("s", "k", Bytes::from_static(b"v")).await.unwrap();
    });
    let image = dir.path().join("image");
    crash_then_stop(&rt, e, &live, &image);

    let e = open(&image, false);
    assert_eq!(e.get("s", "k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(
        !image.join(JOURNAL_NAME).exists(),
        "the unused journal was kept"
    );
    rt.block_on(e.set("s", "k2", Bytes::from_static(b"w")))
        .unwrap();
    assert!(!image.join(JOURNAL_NAME).exists());
}

#[test]
fn a_record_with_another_key_is_not_replayed() {
    // Bytes that look like the next record but were not written under the
    // current checkpoint's key (old records, or a client's value that
    // imitates one) never count.
    let (dir, live, rt, e) = start_live();
    rt.block_on(e.sync()).unwrap();
    let image = dir.path().join("image");
    crash_then_stop(&rt, e, &live, &image);

    let db = redb::Database::create(image.join("state.redb")).unwrap();
    let cp = Checkpoint::load(&db).unwrap();
    drop(db);
    let payload = encode(
        [WriteOp::Set {
            store: "s".into(),
            key: "forged".into(),
            value: Bytes::from_static(b"x"),
        }]
        .iter(),
    )
    .unwrap();
    let mut forged = Journal::open(&image.join(JOURNAL_NAME)).unwrap();
    forged.checkpointed(Checkpoint {
        seq: cp.seq,
        key: cp.key ^ 1,
    });
    forged.append(&payload).unwrap();
    drop(forged);
    let e = open(&image, true);
    assert_eq!(e.get("s", "forged").unwrap(), None);

    // The same record under the right key is replayed: the check above
    // can fail.
    let image2 = dir.path().join("image2");
    crash_image(&e, &image, &image2, true);
    rt.block_on(e.shutdown()).unwrap();
    let db = redb::Database::create(image2.join("state.redb")).unwrap();
    let cp = Checkpoint::load(&db).unwrap();
    drop(db);
    let mut genuine = Journal::open(&image2.join(JOURNAL_NAME)).unwrap();
    genuine.checkpointed(cp);
    genuine.append(&payload).unwrap();
    drop(genuine);
    let e = open(&image2, true);
    assert_eq!(e.get("s", "forged").unwrap().as_deref(), Some(&b"x"[..]));
}

/// Records of many sizes, across block boundaries, read back the same
/// through direct I/O and through the page cache; a discarded last record
/// is gone and the next append takes its place.
#[test]
fn both_write_paths_keep_every_record_and_discard_only_the_last() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join(JOURNAL_NAME)).unwrap();
        if !direct {
            journal.direct = None;
        } else {
            assert!(
                journal.direct.is_some(),
                "the test filesystem refuses O_DIRECT"
            );
        }
        let since = Checkpoint { seq: 10, key: 42 };
        journal.checkpointed(since);
        let op = |i: usize| WriteOp::Set {
            store: "s".into(),
            key: format!("k{i}"),
            value: Bytes::from(vec![i as u8; (i * 397) % 9000]),
        };
        for i in 0..60 {
            journal.append(&encode([op(i)].iter()).unwrap()).unwrap();
        }
        let (records, last) = journal.scan(since).unwrap();
        assert_eq!(last, 70);
        assert_eq!(records.len(), 60);
        for (i, ops) in records.iter().enumerate() {
            assert_eq!(format!("{ops:?}"), format!("{:?}", [op(i)]), "record {i}");
        }

        journal.discard(true).unwrap();
        assert_eq!(journal.scan(since).unwrap().0.len(), 59);
        journal.append(&encode([op(99)].iter()).unwrap()).unwrap();
        let (records, last) = journal.scan(since).unwrap();
        assert_eq!(last, 70);
        assert_eq!(format!("{:?}", records[59]), format!("{:?}", [op(99)]));
    }
}

/// A group whose append fails after its record reached the disk is
/// answered with an error, and no recovery applies it: neither after the
/// record was zeroed, nor when zeroing failed too and a checkpoint had to
/// retire it. Groups before and after it are kept.
#[test]
fn a_group_answered_with_an_error_is_never_replayed() {
    for discard_fails in [false, true] {
        let (dir, live, rt, e) = start_live();
        rt.block_on(async {
            e.sync().await.unwrap();
            e.set("s", "before", Bytes::from_static(b"1"))
                .await
                .unwrap();
            e.inject_journal_failures(1, u32::from(discard_fails));
            let failed = e.set("s", "failed", Bytes::from_static(b"2")).await;
            assert!(
                matches!(
                    failed,
                    Err(EngineError::Storage {
                        op: "journal append",
                        ..
                    })
                ),
                "{failed:?}"
            );
            assert_eq!(e.get("s", "failed").unwrap(), None);
        });
        // A crash right after the failure, before any later append could
        // overwrite the failed record.
        let at_once = dir.path().join("at-once");
        crash_image(&e, &live, &at_once, true);
        rt.block_on(e.set("s", "after", Bytes::from_static(b"3")))
            .unwrap();
        let later = dir.path().join("later");
        crash_image(&e, &live, &later, true);
        rt.block_on(e.shutdown()).unwrap();

        for (image, has_after) in [(at_once, false), (later, true)] {
            let e = open(&image, true);
            assert_eq!(e.get("s", "before").unwrap().as_deref(), Some(&b"1"[..]));
            assert_eq!(
                e.get("s", "failed").unwrap(),
                None,
                "a group answered with an error was replayed (discard fails: {discard_fails})"
            );
            assert_eq!(e.get("s", "after").unwrap().is_some(), has_after);
        }
    }
}

/// The injection above leaves a valid record on disk: without the discard
/// and without a checkpoint, recovery would apply it. This is what makes
/// the test above able to fail.
#[test]
fn an_undiscarded_failed_record_would_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(JOURNAL_NAME);
    let mut journal = Journal::open(&path).unwrap();
    let since = Checkpoint { seq: 0, key: 9 };
    journal.checkpointed(since);
    let op = WriteOp::Set {
        store: "s".into(),
        key: "failed".into(),
        value: Bytes::from_static(b"2"),
    };
    journal.append(&encode([op].iter()).unwrap()).unwrap();
    journal.forget_last();
    assert_eq!(journal.scan(since).unwrap().0.len(), 1);
    journal.discard(false).unwrap();
    assert_eq!(journal.scan(since).unwrap().0.len(), 0);
}

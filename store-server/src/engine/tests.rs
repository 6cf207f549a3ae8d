//! Engine semantics, checked against a model that mirrors
//! `drasi_lib::MemoryStateStoreProvider` line by line.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use drasi_store_protocol::{EntriesFrame, KeysFrame};

use super::*;

fn open(dir: &tempfile::TempDir, durability: DurabilityMode) -> Engine {
    open_in(dir.path(), durability, true)
}

/// An engine on `<dir>/state.redb`; shared with the journal's tests.
pub(super) fn open_in(dir: &std::path::Path, durability: DurabilityMode, journal: bool) -> Engine {
    Engine::open(
        &EngineOptions {
            path: dir.join("state.redb"),
            durability,
            cache_bytes: 4 * 1024 * 1024,
            recovery_timeout: std::time::Duration::from_secs(60),
            journal,
        },
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The memory provider's behaviour, reduced to its data structure.
#[derive(Default)]
struct Model(HashMap<String, HashMap<String, Vec<u8>>>);

impl Model {
    fn set(&mut self, s: &str, k: &str, v: &[u8]) {
        self.0
            .entry(s.into())
            .or_default()
            .insert(k.into(), v.into());
    }
    fn delete(&mut self, s: &str, k: &str) -> bool {
        let Some(store) = self.0.get_mut(s) else {
            return false;
        };
        let existed = store.remove(k).is_some();
        if store.is_empty() {
            self.0.remove(s);
        }
        existed
    }
    fn set_many(&mut self, s: &str, entries: &[(&str, &[u8])]) {
        let store = self.0.entry(s.into()).or_default();
        for (k, v) in entries {
            store.insert((*k).into(), v.to_vec());
        }
    }
    fn delete_many(&mut self, s: &str, keys: &[&str]) -> u64 {
        let Some(store) = self.0.get_mut(s) else {
            return 0;
        };
        let n = keys.iter().filter(|k| store.remove(**k).is_some()).count();
        if store.is_empty() {
            self.0.remove(s);
        }
        n as u64
    }
    fn clear(&mut self, s: &str) -> u64 {
        self.0.remove(s).map_or(0, |m| m.len() as u64)
    }
    fn count(&self, s: &str) -> u64 {
        self.0.get(s).map_or(0, |m| m.len() as u64)
    }
    fn keys(&self, s: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .0
            .get(s)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }
}

#[test]
fn single_key_operations() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Immediate);
    rt().block_on(async {
        assert_eq!(e.get("s", "k").unwrap(), None);
        assert!(!e.contains_key("s", "k").unwrap());
        e.set("s", "k", Bytes::from_static(b"v1")).await.unwrap();
        e.set("s", "k", Bytes::from_static(b"v2")).await.unwrap();
        assert_eq!(e.get("s", "k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert!(e.contains_key("s", "k").unwrap());
        assert_eq!(e.get("other", "k").unwrap(), None);
        assert_eq!(e.store_info("s").unwrap(), (true, 1));
        assert!(e.delete("s", "k").await.unwrap());
        assert!(!e.delete("s", "k").await.unwrap());
        assert!(!e.delete("never", "k").await.unwrap());
        assert_eq!(e.store_info("s").unwrap(), (false, 0));
    });
}

#[test]
fn empty_and_tricky_names_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Immediate);
    let names = ["", " ", "/", "%", "..", "a/b?c#d", "ключ", "🔑", "a\0b"];
    rt().block_on(async {
        for s in names {
            for k in names {
                e.set(s, k, Bytes::from(format!("{s}|{k}"))).await.unwrap();
            }
        }
        for s in names {
            assert_eq!(e.store_info(s).unwrap(), (true, names.len() as u64));
            for k in names {
                assert_eq!(e.get(s, k).unwrap(), Some(format!("{s}|{k}").into_bytes()));
            }
        }
        // "" and "\0"-suffixed neighbours must not bleed into each other.
        let mut keys = e.list_keys("").unwrap();
        keys.sort();
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(keys, want);
    });
}

#[test]
fn store_rows_disappear_with_their_last_key() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Immediate);
    rt().block_on(async {
        for i in 0..50 {
            let s = format!("store-{i}");
            e.set(&s, "a", Bytes::from_static(b"x")).await.unwrap();
            e.set_many(&s, EntriesFrame::encode(&[("b", b"y"), ("c", b"z")]))
                .await
                .unwrap();
        }
        assert_eq!(
            e.totals().unwrap(),
            Totals {
                keys: 150,
                stores: 50
            }
        );
        for i in 0..50 {
            let s = format!("store-{i}");
            assert!(e.delete(&s, "a").await.unwrap());
            assert_eq!(
                e.delete_many(&s, KeysFrame::encode(&["b", "c", "b", "missing"]))
                    .await
                    .unwrap(),
                2
            );
        }
        assert_eq!(e.totals().unwrap(), Totals::default());
        let txn = e.db.begin_read("test").unwrap();
        use redb::ReadableTableMetadata as _;
        assert_eq!(txn.open_table(STORES).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(KV).unwrap().len().unwrap(), 0);
    });
}

#[test]
fn counts_with_duplicates_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Immediate);
    rt().block_on(async {
        e.set_many(
            "s",
            EntriesFrame::encode(&[("a", b"1"), ("a", b"2"), ("b", b"3")]),
        )
        .await
        .unwrap();
        assert_eq!(e.store_info("s").unwrap(), (true, 2));
        assert_eq!(
            e.get("s", "a").unwrap().as_deref(),
            Some(&b"2"[..]),
            "last duplicate wins"
        );
        e.set("s", "a", Bytes::from_static(b"4")).await.unwrap();
        assert_eq!(e.store_info("s").unwrap(), (true, 2));
        e.set_many("s", EntriesFrame::encode(&[])).await.unwrap();
        e.set_many("empty", EntriesFrame::encode(&[]))
            .await
            .unwrap();
        assert_eq!(e.store_info("empty").unwrap(), (false, 0));
        assert_eq!(
            e.delete_many("s", KeysFrame::encode(&["a", "a", "zz"]))
                .await
                .unwrap(),
            1
        );
        assert_eq!(e.store_info("s").unwrap(), (true, 1));
        let got = e.get_many("s", &["b", "b", "a", "x"]).unwrap();
        assert_eq!(got, vec![("b", b"3".to_vec())]);
        assert_eq!(e.totals().unwrap(), Totals { keys: 1, stores: 1 });
    });
}

#[test]
fn clear_of_a_large_store_is_collected_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Eventual);
    let n = gc::CHUNK_ENTRIES * 3 + 17;
    rt().block_on(async {
        let keys: Vec<String> = (0..n).map(|i| format!("k{i:06}")).collect();
        for chunk in keys.chunks(5_000) {
            let entries: Vec<(&str, &[u8])> =
                chunk.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
            e.set_many("big", EntriesFrame::encode(&entries))
                .await
                .unwrap();
        }
        e.set("small", "k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(e.store_info("big").unwrap(), (true, n as u64));

        let started = std::time::Instant::now();
        assert_eq!(e.clear_store("big").await.unwrap(), n as u64);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "clear must not scan"
        );
        assert_eq!(e.store_info("big").unwrap(), (false, 0));
        assert_eq!(e.get("big", "k000001").unwrap(), None);
        assert_eq!(e.totals().unwrap(), Totals { keys: 1, stores: 1 });

        // The same store_id gets a fresh partition, untouched by the GC.
        e.set("big", "new", Bytes::from_static(b"n")).await.unwrap();
        assert_eq!(e.list_keys("big").unwrap(), vec!["new".to_string()]);

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while e.pending_garbage().unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "GC did not finish");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        use redb::ReadableTableMetadata as _;
        let txn = e.db.begin_read("test").unwrap();
        assert_eq!(txn.open_table(KV).unwrap().len().unwrap(), 2);
        assert_eq!(e.list_keys("big").unwrap(), vec!["new".to_string()]);
        assert_eq!(e.get("small", "k").unwrap().as_deref(), Some(&b"v"[..]));
    });
}

#[test]
fn a_full_write_queue_answers_busy_at_once() {
    use std::task::Poll;
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Immediate);
    rt().block_on(async {
        let release = e.hold_writer();
        let capacity = writer::QUEUE_CAPACITY;
        let keys: Vec<String> = (0..capacity).map(|i| format!("k{i}")).collect();
        let mut queued = Vec::with_capacity(capacity);
        for key in &keys {
            let mut write = Box::pin(e.set("q", key, Bytes::from_static(b"v")));
            // Polled once: queued, waiting for the held writer.
            assert!(futures::poll!(write.as_mut()).is_pending());
            queued.push(write);
        }
        let mut overflow = Box::pin(e.set("q", "overflow", Bytes::from_static(b"v")));
        match futures::poll!(overflow.as_mut()) {
            Poll::Ready(Err(EngineError::Busy { capacity: c })) => assert_eq!(c, capacity),
            other => panic!("expected Busy at once, got {other:?}"),
        }
        drop(release);
        for result in futures::future::join_all(queued).await {
            result.unwrap();
        }
        assert_eq!(e.store_info("q").unwrap(), (true, capacity as u64));
        assert_eq!(e.get("q", "overflow").unwrap(), None);
    });
}

#[test]
fn a_write_whose_caller_gave_up_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(&dir, DurabilityMode::Immediate));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let release = e.hold_writer();
        // The caller times out while its write waits in the queue.
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            e.set("s", "abandoned", Bytes::from_static(b"v")),
        )
        .await;
        assert!(gave_up.is_err(), "the write cannot finish while held");
        let kept = {
            let e = e.clone();
            tokio::spawn(async move { e.set("s", "kept", Bytes::from_static(b"v")).await })
        };
        drop(release);
        kept.await.unwrap().unwrap();
        assert_eq!(e.get("s", "abandoned").unwrap(), None);
        assert_eq!(e.get("s", "kept").unwrap().as_deref(), Some(&b"v"[..]));
    });
}

/// An `admit` that always grants room.
fn free(_: usize) -> Result<(), EngineError> {
    Ok(())
}

#[test]
fn get_many_refuses_answers_over_the_limit_before_building_them() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Immediate);
    rt().block_on(async {
        for i in 0..4 {
            e.set("s", &format!("k{i}"), Bytes::from(vec![i as u8; 1000]))
                .await
                .unwrap();
        }
        let keys = ["k0", "k1", "k2", "k3"];
        let frame = e.get_many_frame("s", &keys, 4 * 1010, free).unwrap();
        let decoded =
            drasi_store_protocol::decode_entries(&frame, &drasi_store_protocol::Limits::default())
                .unwrap();
        assert_eq!(decoded.len(), 4);
        let err = e.get_many_frame("s", &keys, 3 * 1010, free).unwrap_err();
        assert!(
            matches!(err, EngineError::AnswerTooLarge { max: 3030 }),
            "{err}"
        );
        assert!(err.to_string().contains("--max-response-bytes"), "{err}");
        // Duplicates and absent keys cost nothing.
        assert!(
            e.get_many_frame("s", &["k0", "k0", "x", "k0"], 1010, free)
                .is_ok()
        );
    });
}

#[test]
fn a_failed_gc_step_is_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, DurabilityMode::Immediate);
    rt().block_on(async {
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        e.set_many("s", EntriesFrame::encode(&entries))
            .await
            .unwrap();
        // Several failures in a row: the first steps after the clear fail,
        // and collection must still finish on its own, without another
        // clear or write to wake it up.
        e.inject_gc_failures(4);
        assert_eq!(e.clear_store("s").await.unwrap(), 100);
        let started = std::time::Instant::now();
        let deadline = started + std::time::Duration::from_secs(20);
        while e.pending_garbage().unwrap() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "GC gave up after a failed step"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            e.health.inject_gc_failures.load(Ordering::Relaxed),
            0,
            "every injected failure was hit"
        );
        // 100 + 200 + 400 + 800 ms of backoff: retried, not spun.
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn data_survives_reopen_in_both_modes() {
    for mode in [DurabilityMode::Immediate, DurabilityMode::Eventual] {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let e = open(&dir, mode);
            rt.block_on(async {
                e.set("s", "k", Bytes::from_static(b"v")).await.unwrap();
                e.set_many("s", EntriesFrame::encode(&[("a", b"1")]))
                    .await
                    .unwrap();
                e.shutdown().await.unwrap();
                assert!(matches!(
                    e.set("s", "late", Bytes::new()).await,
                    Err(EngineError::Unavailable)
                ));
            });
        }
        let e = open(&dir, mode);
        assert_eq!(e.get("s", "k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(e.store_info("s").unwrap(), (true, 2));
        assert_eq!(e.totals().unwrap(), Totals { keys: 2, stores: 1 });
    }
}

#[test]
fn concurrent_writes_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(&dir, DurabilityMode::Immediate));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let e = e.clone();
                tokio::spawn(async move {
                    for j in 0..10 {
                        e.set(
                            &format!("s{}", i % 8),
                            &format!("k{i}-{j}"),
                            Bytes::from_static(b"v"),
                        )
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(
        e.totals().unwrap(),
        Totals {
            keys: 640,
            stores: 8
        }
    );
    assert_eq!(e.store_info("s3").unwrap(), (true, 80));
    assert_eq!(e.health(), EngineHealth::Healthy);
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize, usize, Vec<u8>),
    Delete(usize, usize),
    SetMany(usize, Vec<(usize, Vec<u8>)>),
    DeleteMany(usize, Vec<usize>),
    Clear(usize),
}

const STORES_POOL: [&str; 3] = ["", "s/1", "ü"];
const KEYS_POOL: [&str; 5] = ["", "a", "a\0", "%2F", "🔑"];

fn op() -> impl Strategy<Value = Op> {
    let s = 0..STORES_POOL.len();
    let k = 0..KEYS_POOL.len();
    let v = proptest::collection::vec(any::<u8>(), 0..4);
    prop_oneof![
        3 => (s.clone(), k.clone(), v.clone()).prop_map(|(s, k, v)| Op::Set(s, k, v)),
        2 => (s.clone(), k.clone()).prop_map(|(s, k)| Op::Delete(s, k)),
        2 => (s.clone(), proptest::collection::vec((k.clone(), v), 0..4)).prop_map(|(s, e)| Op::SetMany(s, e)),
        2 => (s.clone(), proptest::collection::vec(k, 0..4)).prop_map(|(s, k)| Op::DeleteMany(s, k)),
        1 => s.prop_map(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn matches_the_memory_provider(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let e = open(&dir, DurabilityMode::Eventual);
        let mut m = Model::default();
        rt().block_on(async {
            for op in &ops {
                match op {
                    Op::Set(s, k, v) => {
                        e.set(STORES_POOL[*s], KEYS_POOL[*k], Bytes::from(v.clone())).await.unwrap();
                        m.set(STORES_POOL[*s], KEYS_POOL[*k], v);
                    }
                    Op::Delete(s, k) => {
                        let got = e.delete(STORES_POOL[*s], KEYS_POOL[*k]).await.unwrap();
                        assert_eq!(got, m.delete(STORES_POOL[*s], KEYS_POOL[*k]));
                    }
                    Op::SetMany(s, entries) => {
                        let entries: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (KEYS_POOL[*k], v.as_slice())).collect();
                        e.set_many(STORES_POOL[*s], EntriesFrame::encode(&entries)).await.unwrap();
                        m.set_many(STORES_POOL[*s], &entries);
                    }
                    Op::DeleteMany(s, keys) => {
                        let keys: Vec<&str> = keys.iter().map(|k| KEYS_POOL[*k]).collect();
                        let got = e.delete_many(STORES_POOL[*s], KeysFrame::encode(&keys)).await.unwrap();
                        assert_eq!(got, m.delete_many(STORES_POOL[*s], &keys));
                    }
                    Op::Clear(s) => {
                        assert_eq!(e.clear_store(STORES_POOL[*s]).await.unwrap(), m.clear(STORES_POOL[*s]));
                    }
                }
                for s in STORES_POOL {
                    let count = m.count(s);
                    assert_eq!(e.store_info(s).unwrap(), (count > 0, count));
                    let mut keys = e.list_keys(s).unwrap();
                    keys.sort();
                    assert_eq!(keys, m.keys(s));
                    for k in KEYS_POOL {
                        let want = m.0.get(s).and_then(|st| st.get(k)).cloned();
                        assert_eq!(e.get(s, k).unwrap(), want);
                    }
                    let got: HashMap<&str, Vec<u8>> = e.get_many(s, &KEYS_POOL).unwrap().into_iter().collect();
                    let want: HashMap<&str, Vec<u8>> = KEYS_POOL.iter().filter_map(|k| m.0.get(s).and_then(|st| st.get(*k)).map(|v| (*k, v.clone()))).collect();
                    assert_eq!(got, want);
                }
                let total: u64 = STORES_POOL.iter().map(|s| m.count(s)).sum();
                assert_eq!(e.totals().unwrap(), Totals { keys: total, stores: m.0.values().filter(|s| !s.is_empty()).count() as u64 });
            }
        });
    }
}

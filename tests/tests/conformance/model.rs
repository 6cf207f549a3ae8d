//! Random operation sequences: a provider under test must give the same
//! answer as `MemoryStateStoreProvider` at every step.

use std::collections::BTreeMap;

use drasi_lib::{MemoryStateStoreProvider, StateStoreProvider};
use proptest::prelude::*;

/// Small alphabets so sequences hit the same keys and stores often.
const STORES: &[&str] = &["", "/", "a", "a/b", "%2F", "ключ"];
const KEYS: &[&str] = &[
    "", " ", "/", "%", "%2F", "?", "#", "&", "=", "+", "..", "🔑",
];

#[derive(Debug, Clone)]
pub enum Op {
    Get(usize, usize),
    Set(usize, usize, Vec<u8>),
    Delete(usize, usize),
    ContainsKey(usize, usize),
    GetMany(usize, Vec<usize>),
    SetMany(usize, Vec<(usize, Vec<u8>)>),
    DeleteMany(usize, Vec<usize>),
    ClearStore(usize),
    ListKeys(usize),
    StoreExists(usize),
    KeyCount(usize),
    Sync,
}

/// What an operation returned, in a comparable form (maps ordered, key
/// lists sorted: neither has a defined order).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Value(Option<Vec<u8>>),
    Unit,
    Bool(bool),
    Count(usize),
    Entries(BTreeMap<String, Vec<u8>>),
    Keys(Vec<String>),
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..8)
}

pub fn op() -> impl Strategy<Value = Op> {
    let s = 0..STORES.len();
    let k = 0..KEYS.len();
    let keys = prop::collection::vec(0..KEYS.len(), 0..6);
    prop_oneof![
        3 => (s.clone(), k.clone()).prop_map(|(s, k)| Op::Get(s, k)),
        4 => (s.clone(), k.clone(), value()).prop_map(|(s, k, v)| Op::Set(s, k, v)),
        2 => (s.clone(), k.clone()).prop_map(|(s, k)| Op::Delete(s, k)),
        1 => (s.clone(), k.clone()).prop_map(|(s, k)| Op::ContainsKey(s, k)),
        2 => (s.clone(), keys.clone()).prop_map(|(s, ks)| Op::GetMany(s, ks)),
        3 => (s.clone(), prop::collection::vec((0..KEYS.len(), value()), 0..6))
            .prop_map(|(s, es)| Op::SetMany(s, es)),
        2 => (s.clone(), keys).prop_map(|(s, ks)| Op::DeleteMany(s, ks)),
        1 => s.clone().prop_map(Op::ClearStore),
        2 => s.clone().prop_map(Op::ListKeys),
        1 => s.clone().prop_map(Op::StoreExists),
        1 => s.prop_map(Op::KeyCount),
        1 => Just(Op::Sync),
    ]
}

pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..40)
}

/// Applies `op` with every store_id prefixed by `ns`, so cases sharing one
/// server never see each other's data.
pub async fn apply(
    p: &dyn StateStoreProvider,
    ns: &str,
    op: &Op,
) -> Result<Outcome, drasi_lib::StateStoreError> {
    let store = |i: usize| format!("{ns}{}", STORES[i]);
    let keys = |ks: &[usize]| ks.iter().map(|&k| KEYS[k]).collect::<Vec<_>>();
    Ok(match op {
        Op::Get(s, k) => Outcome::Value(p.get(&store(*s), KEYS[*k]).await?),
        Op::Set(s, k, v) => {
            p.set(&store(*s), KEYS[*k], v.clone()).await?;
            Outcome::Unit
        }
        Op::Delete(s, k) => Outcome::Bool(p.delete(&store(*s), KEYS[*k]).await?),
        Op::ContainsKey(s, k) => Outcome::Bool(p.contains_key(&store(*s), KEYS[*k]).await?),
        Op::GetMany(s, ks) => Outcome::Entries(
            p.get_many(&store(*s), &keys(ks))
                .await?
                .into_iter()
                .collect(),
        ),
        Op::SetMany(s, es) => {
            let entries: Vec<(&str, &[u8])> =
                es.iter().map(|(k, v)| (KEYS[*k], v.as_slice())).collect();
            p.set_many(&store(*s), &entries).await?;
            Outcome::Unit
        }
        Op::DeleteMany(s, ks) => Outcome::Count(p.delete_many(&store(*s), &keys(ks)).await?),
        Op::ClearStore(s) => Outcome::Count(p.clear_store(&store(*s)).await?),
        Op::ListKeys(s) => {
            let mut keys = p.list_keys(&store(*s)).await?;
            keys.sort();
            Outcome::Keys(keys)
        }
        Op::StoreExists(s) => Outcome::Bool(p.store_exists(&store(*s)).await?),
        Op::KeyCount(s) => Outcome::Count(p.key_count(&store(*s)).await?),
        Op::Sync => {
            p.sync().await?;
            Outcome::Unit
        }
    })
}

/// Runs `ops` on a fresh memory provider and on `subject` (under `ns`) and
/// fails at the first step where they disagree.
pub async fn check_against_memory(
    subject: &dyn StateStoreProvider,
    ns: &str,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let reference = MemoryStateStoreProvider::new();
    for (step, op) in ops.iter().enumerate() {
        let want = apply(&reference, ns, op)
            .await
            .map_err(|e| TestCaseError::fail(format!("memory failed at step {step}: {e}")))?;
        let got = apply(subject, ns, op)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: error {e}")))?;
        prop_assert_eq!(got, want, "step {} {:?}", step, op);
    }
    Ok(())
}

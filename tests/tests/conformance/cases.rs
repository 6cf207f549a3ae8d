//! The semantics of `drasi_lib::StateStoreProvider`, written once against
//! `&dyn StateStoreProvider`. `MemoryStateStoreProvider` is the reference:
//! every case passes against it, and every other provider must agree.

use std::collections::{BTreeMap, HashMap};

use crate::subjects::Subject;

/// store_ids and keys that break naive URL, path or table-name handling.
pub const TRICKY: &[&str] = &[
    "",
    " ",
    "/",
    "a/b",
    "%",
    "%2F",
    "?",
    "#",
    "&",
    "=",
    "+",
    "..",
    "../x",
    "a b",
    "\\",
    "tab\there",
    "line\nbreak",
    "nul\0byte",
    "ключ",
    "🔑",
    // Precomposed and decomposed "é" are different strings: no Unicode
    // normalisation may merge them.
    "\u{e9}",
    "e\u{301}",
];

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

fn strings(keys: &[&str]) -> Vec<String> {
    sorted(keys.iter().map(|k| k.to_string()).collect())
}

fn ordered(map: HashMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    map.into_iter().collect()
}

/// A value derived from its key, so a mix-up between keys is visible.
fn value_of(key: &str) -> Vec<u8> {
    let mut v = b"v:".to_vec();
    v.extend_from_slice(key.as_bytes());
    v
}

pub async fn get_set_overwrite(s: &Subject) {
    let p = &*s.provider;
    assert_eq!(p.get("s", "k").await.unwrap(), None);
    p.set("s", "k", b"one".to_vec()).await.unwrap();
    assert_eq!(p.get("s", "k").await.unwrap(), Some(b"one".to_vec()));
    p.set("s", "k", b"two".to_vec()).await.unwrap();
    assert_eq!(p.get("s", "k").await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(p.get("s", "other").await.unwrap(), None);
    assert_eq!(p.get("other", "k").await.unwrap(), None);
    assert_eq!(p.key_count("s").await.unwrap(), 1);
}

pub async fn binary_and_empty_values(s: &Subject) {
    let p = &*s.provider;
    p.set("s", "empty", Vec::new()).await.unwrap();
    // An empty value is a value, not an absent key.
    assert_eq!(p.get("s", "empty").await.unwrap(), Some(Vec::new()));
    assert!(p.contains_key("s", "empty").await.unwrap());
    assert!(p.store_exists("s").await.unwrap());
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    p.set("s", "bin", binary.clone()).await.unwrap();
    assert_eq!(p.get("s", "bin").await.unwrap(), Some(binary.clone()));
    let got = p.get_many("s", &["empty", "bin"]).await.unwrap();
    assert_eq!(got.get("empty"), Some(&Vec::new()));
    assert_eq!(got.get("bin"), Some(&binary));
    assert_eq!(p.key_count("s").await.unwrap(), 2);
}

pub async fn large_values(s: &Subject) {
    let p = &*s.provider;
    let big: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    p.set("s", "big", big.clone()).await.unwrap();
    assert!(p.get("s", "big").await.unwrap() == Some(big.clone()));
    let half = &big[..big.len() / 2];
    p.set_many("s", &[("a", half), ("b", &big)]).await.unwrap();
    let got = p.get_many("s", &["a", "b", "big"]).await.unwrap();
    assert_eq!(got.len(), 3);
    assert!(got["a"] == half && got["b"] == big && got["big"] == big);
}

pub async fn delete_semantics(s: &Subject) {
    let p = &*s.provider;
    assert!(!p.delete("s", "k").await.unwrap());
    p.set("s", "k", b"v".to_vec()).await.unwrap();
    p.set("s", "keep", b"v".to_vec()).await.unwrap();
    assert!(p.delete("s", "k").await.unwrap());
    assert!(!p.delete("s", "k").await.unwrap());
    assert_eq!(p.get("s", "k").await.unwrap(), None);
    assert!(!p.contains_key("s", "k").await.unwrap());
    assert_eq!(p.get("s", "keep").await.unwrap(), Some(b"v".to_vec()));
    assert!(p.delete("s", "keep").await.unwrap());
    // The partition is gone with its last key.
    assert!(!p.store_exists("s").await.unwrap());
    assert_eq!(p.key_count("s").await.unwrap(), 0);
    assert!(p.list_keys("s").await.unwrap().is_empty());
}

pub async fn contains_key_semantics(s: &Subject) {
    let p = &*s.provider;
    assert!(!p.contains_key("s", "k").await.unwrap());
    p.set("s", "k", b"v".to_vec()).await.unwrap();
    assert!(p.contains_key("s", "k").await.unwrap());
    assert!(!p.contains_key("s", "K").await.unwrap());
    assert!(!p.contains_key("t", "k").await.unwrap());
}

pub async fn get_many_semantics(s: &Subject) {
    let p = &*s.provider;
    assert!(p.get_many("s", &[]).await.unwrap().is_empty());
    assert!(p.get_many("absent", &["a", "b"]).await.unwrap().is_empty());
    p.set_many("s", &[("a", b"1"), ("b", b"2"), ("c", b"")])
        .await
        .unwrap();
    let got = ordered(
        p.get_many("s", &["a", "missing", "c", "a", "b", "a"])
            .await
            .unwrap(),
    );
    let want: BTreeMap<String, Vec<u8>> = [("a", &b"1"[..]), ("b", b"2"), ("c", b"")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    assert_eq!(got, want);
    assert!(p.get_many("s", &["x", "y"]).await.unwrap().is_empty());
}

pub async fn set_many_semantics(s: &Subject) {
    let p = &*s.provider;
    p.set_many("s", &[]).await.unwrap();
    assert!(!p.store_exists("s").await.unwrap());
    assert_eq!(p.key_count("s").await.unwrap(), 0);

    p.set("s", "old", b"0".to_vec()).await.unwrap();
    // Duplicate keys in one batch: the last one wins.
    p.set_many(
        "s",
        &[
            ("k", b"first"),
            ("old", b"new"),
            ("k", b"last"),
            ("j", b"j"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(p.get("s", "k").await.unwrap(), Some(b"last".to_vec()));
    assert_eq!(p.get("s", "old").await.unwrap(), Some(b"new".to_vec()));
    assert_eq!(
        sorted(p.list_keys("s").await.unwrap()),
        strings(&["j", "k", "old"])
    );
    assert_eq!(p.key_count("s").await.unwrap(), 3);
}

pub async fn delete_many_semantics(s: &Subject) {
    let p = &*s.provider;
    assert_eq!(p.delete_many("s", &[]).await.unwrap(), 0);
    assert_eq!(p.delete_many("absent", &["a"]).await.unwrap(), 0);
    p.set_many("s", &[("a", b"1"), ("b", b"2"), ("c", b"3")])
        .await
        .unwrap();
    // Counts only keys that existed, each once even when repeated.
    assert_eq!(
        p.delete_many("s", &["a", "missing", "a", "b"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(sorted(p.list_keys("s").await.unwrap()), strings(&["c"]));
    assert_eq!(p.delete_many("s", &["a", "b"]).await.unwrap(), 0);
    assert_eq!(p.delete_many("s", &["c"]).await.unwrap(), 1);
    assert!(!p.store_exists("s").await.unwrap());
}

pub async fn clear_store_isolates_partitions(s: &Subject) {
    let p = &*s.provider;
    assert_eq!(p.clear_store("a").await.unwrap(), 0);
    // Partitions whose names are prefixes or path-like variants of each other.
    for store in ["a", "a/b", "ab", "a/", "/a", "A"] {
        p.set_many(store, &[("k1", b"1"), ("k2", b"2")])
            .await
            .unwrap();
    }
    p.set("a", "k3", b"3".to_vec()).await.unwrap();
    assert_eq!(p.clear_store("a").await.unwrap(), 3);
    assert!(!p.store_exists("a").await.unwrap());
    assert_eq!(p.key_count("a").await.unwrap(), 0);
    assert!(p.list_keys("a").await.unwrap().is_empty());
    assert_eq!(p.get("a", "k1").await.unwrap(), None);
    for store in ["a/b", "ab", "a/", "/a", "A"] {
        assert_eq!(p.key_count(store).await.unwrap(), 2, "store {store:?}");
        assert_eq!(p.get(store, "k1").await.unwrap(), Some(b"1".to_vec()));
    }
    assert_eq!(p.clear_store("a").await.unwrap(), 0);
    // A cleared partition is usable again.
    p.set("a", "k", b"v".to_vec()).await.unwrap();
    assert_eq!(p.key_count("a").await.unwrap(), 1);
}

pub async fn list_keys_exists_and_count(s: &Subject) {
    let p = &*s.provider;
    assert!(p.list_keys("s").await.unwrap().is_empty());
    assert!(!p.store_exists("s").await.unwrap());
    assert_eq!(p.key_count("s").await.unwrap(), 0);
    let keys: Vec<String> = (0..50).map(|i| format!("key-{i:03}")).collect();
    for (i, k) in keys.iter().enumerate() {
        p.set("s", k, vec![i as u8]).await.unwrap();
        assert_eq!(p.key_count("s").await.unwrap(), i + 1);
    }
    assert!(p.store_exists("s").await.unwrap());
    assert_eq!(sorted(p.list_keys("s").await.unwrap()), keys);
    // Overwrites do not change the count.
    p.set("s", "key-000", b"x".to_vec()).await.unwrap();
    assert_eq!(p.key_count("s").await.unwrap(), 50);
    assert!(!p.store_exists("s2").await.unwrap());
}

pub async fn sync_succeeds(s: &Subject) {
    let p = &*s.provider;
    p.sync().await.unwrap();
    p.set("s", "k", b"v".to_vec()).await.unwrap();
    p.sync().await.unwrap();
    assert_eq!(p.get("s", "k").await.unwrap(), Some(b"v".to_vec()));
}

pub async fn tricky_keys_round_trip(s: &Subject) {
    let p = &*s.provider;
    for key in TRICKY {
        p.set("s", key, value_of(key)).await.unwrap();
    }
    for key in TRICKY {
        assert_eq!(
            p.get("s", key).await.unwrap(),
            Some(value_of(key)),
            "key {key:?}"
        );
        assert!(p.contains_key("s", key).await.unwrap(), "key {key:?}");
    }
    assert_eq!(sorted(p.list_keys("s").await.unwrap()), strings(TRICKY));
    assert_eq!(p.key_count("s").await.unwrap(), TRICKY.len());
    let got = p.get_many("s", TRICKY).await.unwrap();
    for key in TRICKY {
        assert_eq!(got.get(*key), Some(&value_of(key)), "key {key:?}");
    }
    let entries: Vec<(&str, Vec<u8>)> = TRICKY.iter().map(|k| (*k, value_of(k))).collect();
    let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    p.set_many("t", &borrowed).await.unwrap();
    assert_eq!(sorted(p.list_keys("t").await.unwrap()), strings(TRICKY));
    assert!(p.delete("s", "%2F").await.unwrap());
    assert!(p.contains_key("s", "/").await.unwrap());
    assert_eq!(p.delete_many("s", TRICKY).await.unwrap(), TRICKY.len() - 1);
    assert!(!p.store_exists("s").await.unwrap());
}

pub async fn tricky_store_ids_are_isolated(s: &Subject) {
    let p = &*s.provider;
    for store in TRICKY {
        p.set(store, "k", value_of(store)).await.unwrap();
        p.set(store, store, b"self".to_vec()).await.unwrap();
    }
    for store in TRICKY {
        assert_eq!(
            p.get(store, "k").await.unwrap(),
            Some(value_of(store)),
            "store {store:?}"
        );
        assert_eq!(p.key_count(store).await.unwrap(), 2, "store {store:?}");
        assert!(p.store_exists(store).await.unwrap(), "store {store:?}");
        assert_eq!(
            sorted(p.list_keys(store).await.unwrap()),
            strings(&["k", store])
        );
    }
    // Clearing each one in turn leaves the others intact.
    for (i, store) in TRICKY.iter().enumerate() {
        assert_eq!(p.clear_store(store).await.unwrap(), 2, "store {store:?}");
        for later in &TRICKY[i + 1..] {
            assert!(p.store_exists(later).await.unwrap(), "store {later:?}");
        }
    }
}

/// A key of exactly the limit works; one byte more is rejected by a
/// provider that enforces a limit, and nothing changes. Memory has no limit.
pub async fn key_size_limit(s: &Subject) {
    let p = &*s.provider;
    let limit = s.key_limit.unwrap_or(crate::subjects::REMOTE_MAX_KEY_BYTES);
    // Multi-byte characters: the limit is in bytes, not chars.
    let at_limit = format!(
        "{}{}",
        "ж".repeat((limit - 1) / 2),
        "x".repeat((limit - 1) % 2 + 1)
    );
    assert_eq!(at_limit.len(), limit);
    let over = format!("{at_limit}x");

    p.set("s", "before", b"0".to_vec()).await.unwrap();
    p.set("s", &at_limit, b"max".to_vec()).await.unwrap();
    assert_eq!(p.get("s", &at_limit).await.unwrap(), Some(b"max".to_vec()));
    p.set(&at_limit, "k", b"store at limit".to_vec())
        .await
        .unwrap();
    assert_eq!(p.key_count(&at_limit).await.unwrap(), 1);

    let Some(_) = s.key_limit else {
        p.set("s", &over, b"v".to_vec()).await.unwrap();
        return;
    };
    let err = p.set("s", &over, b"v".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    let err = p
        .set_many("s", &[("ok", b"1"), (&over, b"2")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    assert!(p.set(&over, "k", b"v".to_vec()).await.is_err());
    assert!(p.get("s", &over).await.is_err());
    // Nothing changed, the batch included: set_many is all or nothing.
    assert_eq!(
        sorted(p.list_keys("s").await.unwrap()),
        strings(&["before", &at_limit])
    );
}

pub async fn concurrent_writers(s: &Subject) {
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let p = std::sync::Arc::clone(&s.provider);
        tasks.push(tokio::spawn(async move {
            for j in 0..10u32 {
                p.set("s", &format!("k{i}"), j.to_be_bytes().to_vec())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let p = &*s.provider;
    assert_eq!(p.key_count("s").await.unwrap(), 32);
    let keys: Vec<String> = (0..32).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = p.get_many("s", &refs).await.unwrap();
    assert_eq!(got.len(), 32);
    assert!(got.values().all(|v| v == &9u32.to_be_bytes().to_vec()));
}

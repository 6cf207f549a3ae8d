//! Every store id and key within `--max-key-bytes` is reachable through the
//! real client, at the CRD's largest setting (64 KiB), with multi-byte
//! UTF-8 that triples in size when percent-encoded; one byte more is a
//! clear "too large" error that changes nothing. The same holds for the
//! source ids of the remote write-ahead log.

use std::fmt::Display;

use drasi_lib::StateStoreProvider;
use drasi_lib::wal::{WalProvider, WriteAheadLogConfig};
use drasi_state_store_remote::{RemoteStateStoreProvider, RemoteWalProvider};
use drasi_store_tests::ServerProcess;
use drasi_store_tests::wal_events::order_change;

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const TOKEN: &str = "long-keys-token-0123456789";
const MAX: usize = 64 * 1024;

/// `len` bytes of 3- and 4-byte characters (and ASCII to hit the length).
fn utf8_of_len(len: usize, seed: char) -> String {
    let mut s = String::with_capacity(len);
    let mut chars = [seed, '€', 'ü', '😀'].into_iter().cycle();
    loop {
        let c = chars.next().unwrap();
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    while s.len() < len {
        s.push('x');
    }
    assert_eq!(s.len(), len);
    s
}

/// The server's "too large" error, naming the limit.
fn too_large(err: &impl Display) -> bool {
    let text = err.to_string();
    text.contains("key_too_large") && text.contains(&MAX.to_string())
}

/// The real server at `--max-key-bytes` `MAX`.
fn start_server(dir: &tempfile::TempDir) -> ServerProcess {
    ServerProcess::builder(SERVER, dir.path().join("data"))
        .token(TOKEN)
        .arg("--max-key-bytes")
        .arg(MAX.to_string())
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_store_ids_of_exactly_the_limit_are_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir);
    let provider = RemoteStateStoreProvider::builder(server.url())
        .token(TOKEN)
        .build()
        .unwrap();
    let store = utf8_of_len(MAX, '漢');
    let key = utf8_of_len(MAX, '字');
    let other = utf8_of_len(MAX - 1, 'ß');

    provider.set(&store, &key, b"v1".to_vec()).await.unwrap();
    assert_eq!(
        provider.get(&store, &key).await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert!(provider.contains_key(&store, &key).await.unwrap());
    assert!(provider.store_exists(&store).await.unwrap());
    assert_eq!(provider.key_count(&store).await.unwrap(), 1);
    provider
        .set_many(&store, &[(other.as_str(), &b"v2"[..])])
        .await
        .unwrap();
    let got = provider
        .get_many(&store, &[key.as_str(), other.as_str()])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let mut keys = provider.list_keys(&store).await.unwrap();
    keys.sort();
    let mut expected = vec![key.clone(), other.clone()];
    expected.sort();
    assert_eq!(keys, expected);
    assert!(provider.delete(&store, &key).await.unwrap());
    assert!(!provider.contains_key(&store, &key).await.unwrap());
    assert_eq!(provider.clear_store(&store).await.unwrap(), 1);
    assert!(!provider.store_exists(&store).await.unwrap());

    // One byte over the limit, in the key or the store id: refused,
    // nothing written.
    let long_key = utf8_of_len(MAX + 1, '字');
    let err = provider
        .set(&store, &long_key, b"x".to_vec())
        .await
        .unwrap_err();
    assert!(too_large(&err), "{err}");
    let long_store = utf8_of_len(MAX + 1, '漢');
    let err = provider
        .set(&long_store, "k", b"x".to_vec())
        .await
        .unwrap_err();
    assert!(too_large(&err), "{err}");
    let err = provider.get(&long_store, &long_key).await.unwrap_err();
    assert!(too_large(&err), "{err}");
    assert!(!provider.store_exists(&store).await.unwrap());
}

/// The WAL routes carry the source id the same way: a source id of exactly
/// `--max-key-bytes` (far past what fits in a URI once the other
/// parameters are added) works for every method, and one byte more is a
/// clear "too large" error that names the limit, not the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_source_ids_of_exactly_the_limit_are_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir);
    let wal = RemoteWalProvider::builder(server.url())
        .token(TOKEN)
        .build()
        .unwrap();
    // Source ids are `[A-Za-z0-9_-]`, one byte per character.
    let source: String = "ab-_9Z".chars().cycle().take(MAX).collect();
    wal.register(&source, WriteAheadLogConfig::default())
        .await
        .unwrap();
    assert_eq!(
        wal.append(&source, &order_change(&source, 1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        wal.append(&source, &order_change(&source, 2))
            .await
            .unwrap(),
        2
    );
    let events = wal.read_from(&source, 1).await.unwrap();
    assert_eq!(events.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events[1].1, order_change(&source, 2));
    assert_eq!(wal.prune_up_to(&source, 1).await.unwrap(), 1);
    assert_eq!(wal.head_sequence(&source).await.unwrap(), 2);
    assert_eq!(wal.oldest_sequence(&source).await.unwrap(), Some(2));
    assert_eq!(wal.event_count(&source).await.unwrap(), 1);
    wal.delete_wal(&source).await.unwrap();

    let long: String = "x".repeat(MAX + 1);
    let err = wal
        .register(&long, WriteAheadLogConfig::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(too_large(&text), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    // The message names the source, shortened, not all 64 KiB of it.
    assert!(text.len() < 1024, "{} bytes: {text:.200}", text.len());
}

//! One conformance suite for every `StateStoreProvider`: drasi-lib's
//! `MemoryStateStoreProvider` (the semantic reference), the embedded
//! `RedbStateStoreProvider`, and `RemoteStateStoreProvider` over a real
//! `drasi-store-server` process: on a fresh data dir, on a data dir
//! restored from a backup, with every single-key call sent through the
//! batch route, and on a 3-node replicated store through a provider given
//! every node's URL. Each test gets a fresh provider (and, for
//! remote, its own server), so cases cannot interfere.

#[path = "conformance/cases.rs"]
mod cases;
#[path = "conformance/model.rs"]
mod model;
#[path = "conformance/subjects.rs"]
mod subjects;

use std::sync::atomic::{AtomicU32, Ordering};

use drasi_lib::StateStoreProvider;
use proptest::test_runner::{Config, TestRunner};

macro_rules! suite {
    ($subject:ident: $($case:ident),* $(,)?) => {
        mod $subject {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let subject = crate::subjects::$subject();
                    crate::cases::$case(&subject).await;
                }
            )*
        }
    };
}

macro_rules! suites {
    ($($case:ident),* $(,)?) => {
        suite!(memory: $($case),*);
        suite!(redb: $($case),*);
        suite!(remote: $($case),*);
        suite!(restored: $($case),*);
        suite!(remote_batched: $($case),*);
        suite!(replicated: $($case),*);
    };
}

suites!(
    get_set_overwrite,
    binary_and_empty_values,
    large_values,
    delete_semantics,
    contains_key_semantics,
    get_many_semantics,
    set_many_semantics,
    delete_many_semantics,
    clear_store_isolates_partitions,
    list_keys_exists_and_count,
    sync_succeeds,
    tricky_keys_round_trip,
    tricky_store_ids_are_isolated,
    key_size_limit,
    concurrent_writers,
);

#[test]
fn remote_reports_durable() {
    assert!(subjects::remote().provider.is_durable());
}

/// Random operation sequences against one server: the remote provider must
/// answer exactly like the memory provider at every step.
#[test]
fn remote_matches_memory_on_random_sequences() {
    let (server, _dir) = subjects::start_server(&["--durability", "eventual"]);
    let remote = subjects::remote_provider(&server);
    run_model(&remote, "remote");
}

/// The same with every single-key call going through the batch route.
#[test]
fn remote_batched_matches_memory_on_random_sequences() {
    let (server, _dir) = subjects::start_server(&["--durability", "eventual"]);
    let remote = subjects::batched_provider(&server);
    run_model(&remote, "remote (batched)");
}

/// The same on a 3-node replicated store, through a follower's URL first:
/// forwarded writes and read-index reads answer like the reference.
#[test]
fn replicated_matches_memory_on_random_sequences() {
    let subject = subjects::replicated();
    run_model(&*subject.provider, "replicated");
}

/// The same for the embedded redb provider, as a check that the model and
/// the reference agree with a second real implementation.
#[test]
fn redb_matches_memory_on_random_sequences() {
    let subject = subjects::redb();
    run_model(&*subject.provider, "redb");
}

fn run_model(provider: &dyn StateStoreProvider, name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let case = AtomicU32::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&model::ops(), |ops| {
        // A fresh prefix per case (shrinking reruns included): the shared
        // backend keeps every earlier case's data.
        let ns = format!("case{}:", case.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(model::check_against_memory(provider, &ns, &ops))
    });
    if let Err(e) = result {
        panic!("{name} diverged from MemoryStateStoreProvider: {e}");
    }
}

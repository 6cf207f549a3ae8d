//! `export` / `import` against a real drasi-store-server on loopback (in
//! process), reached as "a base URL + the token"; and once through the
//! command, which finds both through the simulated API server.

mod support;

use drasi_store_cli::args::Command;
use drasi_store_cli::run;
use drasi_store_cli::server::ServerAccess;
use drasi_store_cli::transfer::{self, partial_name};
use indicatif::ProgressBar;
use support::*;

fn access(server: &TestServer, token: &str) -> ServerAccess {
    ServerAccess::new(&server.url, token, None, None).unwrap()
}

#[tokio::test]
async fn export_then_import_moves_exactly_the_selected_store_ids() {
    let source = start_server().await;
    for i in 0..50 {
        source
            .set("app-a", &format!("k{i}"), &vec![7u8; 1000])
            .await;
    }
    source.set("app-b", "k", b"b").await;
    source.set("app-c", "k", b"c").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ab.snap");
    let bar = ProgressBar::hidden();
    let stores = vec!["app-a".to_string(), "app-b".to_string()];
    let exported = transfer::export(&access(&source, TOKEN), &stores, &file, &bar)
        .await
        .unwrap();
    assert_eq!(exported.summary.records, 51);
    assert_eq!(exported.summary.stores, 2);
    assert_eq!(exported.header.selected_stores, stores);
    assert_eq!(
        bar.position(),
        std::fs::metadata(&file).unwrap().len(),
        "progress counts every byte"
    );
    assert!(!partial_name(&file).exists());

    let target = start_server().await;
    target.set("app-a", "stale", b"x").await;
    target.set("app-c", "mine", b"x").await;
    let bar = ProgressBar::hidden();
    let imported = transfer::import(&access(&target, TOKEN), &file, &bar)
        .await
        .unwrap();
    assert_eq!(imported.records, 51);
    assert_eq!(imported.stores, ["app-a", "app-b"]);
    assert_eq!(bar.position(), bar.length().unwrap());
    assert_eq!(
        target.key_count("app-a").await,
        50,
        "app-a replaced, not merged"
    );
    assert_eq!(target.key_count("app-b").await, 1);
    assert_eq!(
        target.key_count("app-c").await,
        1,
        "stores not exported are untouched"
    );
    source.server.shutdown().await.unwrap();
    target.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn export_refuses_to_overwrite_and_leaves_nothing_when_it_fails() {
    let server = start_server().await;
    server.set("app-a", "k", b"v").await;
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing.snap");
    std::fs::write(&existing, b"keep me").unwrap();
    let stores = vec!["app-a".to_string()];
    let bar = ProgressBar::hidden();
    let err = transfer::export(&access(&server, TOKEN), &stores, &existing, &bar)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let file = dir.path().join("new.snap");
    let wrong = access(&server, "wrong-token-0123456789");
    let err = transfer::export(&wrong, &stores, &file, &bar)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("401"), "{text}");
    assert!(
        !text.contains("wrong-token"),
        "errors never carry the token: {text}"
    );
    assert!(!file.exists() && !partial_name(&file).exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the existing file"
    );
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn import_refuses_other_files_and_corrupt_snapshots_without_changing_anything() {
    let source = start_server().await;
    source.set("app-a", "k", b"new").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.snap");
    let bar = ProgressBar::hidden();
    transfer::export(&access(&source, TOKEN), &["app-a".to_string()], &file, &bar)
        .await
        .unwrap();

    let target = start_server().await;
    target.set("app-a", "old-1", b"x").await;
    target.set("app-a", "old-2", b"x").await;
    let not_snapshot = dir.path().join("notes.txt");
    std::fs::write(&not_snapshot, b"hello, not a snapshot").unwrap();
    let err = transfer::import(&access(&target, TOKEN), &not_snapshot, &bar)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("is not a drasi-store snapshot"));

    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    let corrupt = dir.path().join("corrupt.snap");
    std::fs::write(&corrupt, bytes).unwrap();
    let err = transfer::import(&access(&target, TOKEN), &corrupt, &bar)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("refused the import (400 Bad Request); nothing was changed"),
        "{text}"
    );
    assert_eq!(target.key_count("app-a").await, 2);
    source.server.shutdown().await.unwrap();
    target.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_commands_find_the_server_token_in_the_connection_secret() {
    let server = start_server().await;
    server.set("app-a", "k", b"v").await;
    let (fake, cluster) = cluster(&server.url);
    put_healthy_store(&fake, "orders");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.snap");

    let mut out = Vec::new();
    let export = Command::Export {
        store: "orders".into(),
        stores: vec!["app-a".into()],
        output: file.clone(),
    };
    run::execute(&cluster, export, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with("exported 1 records of 1 store_id(s) ("),
        "{out}"
    );

    let mut out = Vec::new();
    let import = Command::Import {
        store: "orders".into(),
        input: file,
    };
    run::execute(&cluster, import, &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "imported 1 records into 1 store_id(s) of orders: app-a\n"
    );
    assert!(
        writes(&fake).is_empty(),
        "export and import change nothing in the cluster"
    );

    // A store whose connection Secret is missing cannot be reached.
    put_store(&fake, "new", serde_json::json!({}), serde_json::json!({}));
    let import = Command::Import {
        store: "new".into(),
        input: dir.path().join("a.snap"),
    };
    let err = run::execute(&cluster, import, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "the connection Secret new-connection of DrasiStateStore new does not exist (yet)"
    );
    server.server.shutdown().await.unwrap();
}

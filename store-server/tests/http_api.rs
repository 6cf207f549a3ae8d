//! Every operation over HTTP against an in-process server, with names that
//! break naive URL handling.

mod common;

use common::{expect_error, json, start_server, start_server_in};
use std::collections::BTreeSet;

use drasi_store_protocol::endpoints::{self, Body};
use drasi_store_protocol::{
    Limits, MixedKind, MixedOp, MixedResult, decode_entries, decode_mixed_results, encode_entries,
    encode_keys, encode_mixed_ops, routes,
};
use reqwest::Method;

const TRICKY: [&str; 10] = [
    "",
    " ",
    "/",
    "%",
    "%2F",
    "+",
    "a?b#c&d=e",
    "..",
    "ключ 🔑",
    "a/../b",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_round_trips_tricky_names() {
    let t = start_server(&[]).await;
    for s in TRICKY {
        for k in TRICKY {
            let r = t.put(s, k, format!("{s}|{k}").as_bytes()).await;
            assert_eq!(r.status(), 204);
        }
    }
    for s in TRICKY {
        let (exists, count, keys) = t.snapshot(s).await;
        assert!(exists);
        assert_eq!(count, TRICKY.len() as u64);
        let mut want: Vec<String> = TRICKY.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(keys, want);
        for k in TRICKY {
            assert_eq!(t.get(s, k).await, Some(format!("{s}|{k}").into_bytes()));
            let head = t
                .authed(Method::HEAD, &t.url("/v1/kv", s, Some(k)))
                .send()
                .await
                .unwrap();
            assert_eq!(head.status(), 200);
        }
    }
    // Absent key on HEAD: 404 with the marker header.
    let head = t
        .authed(Method::HEAD, &t.url("/v1/kv", "+", Some("nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert!(head.headers().contains_key("x-drasi-key-not-found"));

    // delete
    let r = t
        .authed(Method::DELETE, &t.url("/v1/kv", "+", Some("/")))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["existed"], true);
    let r = t
        .authed(Method::DELETE, &t.url("/v1/kv", "+", Some("/")))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["existed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_store_info_clear_and_sync() {
    let t = start_server(&[]).await;
    let entries: Vec<(&str, &[u8])> = vec![("a", b"1"), ("", b""), ("a", b"2"), ("🔑", &[0, 255])];
    let r = t
        .authed(Method::POST, &t.url("/v1/kv/set-many", "s", None))
        .body(encode_entries(entries.iter().copied()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(t.snapshot("s").await.1, 3);

    let r = t
        .authed(Method::POST, &t.url("/v1/kv/get-many", "s", None))
        .body(encode_keys(&["a", "missing", "🔑", "a"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let got = decode_entries(&body, &Limits::default()).unwrap();
    assert_eq!(got, vec![("a", &b"2"[..]), ("🔑", &[0u8, 255][..])]);

    let r = t
        .authed(Method::POST, &t.url("/v1/kv/delete-many", "s", None))
        .body(encode_keys(&["a", "a", "zz"]))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["count"], 1);

    let r = t
        .authed(Method::DELETE, &t.url("/v1/store", "s", None))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["count"], 2);
    assert_eq!(t.snapshot("s").await, (false, 0, vec![]));
    let r = t
        .authed(Method::DELETE, &t.url("/v1/store", "s", None))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["count"], 0);

    let r = t
        .authed(Method::POST, &format!("{}/v1/sync", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// A batch's reads share one snapshot (one read transaction, each store's
/// row looked up once): reads across several stores, a store that does not
/// exist, repeated stores and keys, and a store cleared before the batch
/// must each answer exactly what a lone `get`/`contains_key` would, and a
/// write in the same batch is not visible to the batch's own reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_reads_across_stores_from_one_snapshot() {
    let t = start_server(&[]).await;
    t.put("a", "k1", b"a1").await;
    t.put("a", "k2", b"a2").await;
    t.put("b", "k1", b"b1").await;
    t.put("gone", "k1", b"g1").await;
    let r = t
        .authed(Method::DELETE, &t.url("/v1/store", "gone", None))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["count"], 1);

    let op = |kind, store, key, value: &'static [u8]| MixedOp {
        kind,
        store,
        key,
        value,
    };
    use MixedKind::{ContainsKey, Get, Set};
    let ops = [
        op(Get, "a", "k1", b""),
        op(Get, "b", "k1", b""),
        op(Get, "nowhere", "k1", b""),
        op(ContainsKey, "a", "k2", b""),
        op(Get, "a", "absent", b""),
        op(Set, "b", "new", b"written"),
        op(Get, "b", "new", b""),
        op(Get, "gone", "k1", b""),
        op(ContainsKey, "nowhere", "k1", b""),
        op(Get, "a", "k2", b""),
        op(Get, "b", "k1", b""),
    ];
    let r = t
        .authed(
            Method::POST,
            &format!("{}{}", t.base, endpoints::BATCH.path),
        )
        .body(encode_mixed_ops(&ops))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let results = decode_mixed_results(&r.bytes().await.unwrap()).unwrap();
    let value = |v: &[u8]| MixedResult::Value(v.to_vec());
    assert_eq!(
        results,
        vec![
            value(b"a1"),
            value(b"b1"),
            MixedResult::Absent,
            MixedResult::Present,
            MixedResult::Absent,
            MixedResult::Done,
            // Every call of a batch was in flight at once: its reads come
            // from the snapshot taken before its writes.
            MixedResult::Absent,
            MixedResult::Absent,
            MixedResult::Absent,
            value(b"a2"),
            value(b"b1"),
        ]
    );
    // The write was applied all the same.
    assert_eq!(t.get("b", "new").await, Some(b"written".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi_need_no_token() {
    let t = start_server(&[]).await;
    t.put("s", "k", b"v").await;
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        let r = t
            .client
            .get(format!("{}{path}", t.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let text = t.metrics().await;
    for needle in [
        "drasi_store_requests_total{operation=\"set\",status=\"204\"} 1",
        "drasi_store_request_duration_seconds_bucket",
        "drasi_store_commit_group_size_bucket",
        "drasi_store_commit_duration_seconds_bucket",
        "drasi_store_database_file_bytes",
        "drasi_store_keys 1",
        "drasi_store_stores 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let doc = json(
        t.client
            .get(format!("{}/v1/openapi.json", t.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(doc["paths"]["/v1/kv"]["put"].is_object());
}

/// The served OpenAPI document lists exactly the endpoint table's routes,
/// and every JSON body it names has its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_endpoint_table() {
    let t = start_server(&[]).await;
    let doc = json(
        t.client
            .get(format!("{}{}", t.base, routes::OPENAPI))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            served.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<_> = endpoints::ALL
        .iter()
        .map(|e| (e.method.as_str().to_string(), e.path.to_string()))
        .collect();
    assert_eq!(served, table);

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let schema_ref = |content: &serde_json::Value| {
        content["application/json"]["schema"]["$ref"]
            .as_str()
            .map(|r| r.trim_start_matches("#/components/schemas/").to_string())
    };
    for e in endpoints::ALL {
        let op = &doc["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
        assert_eq!(op["operationId"], e.operation.as_str());
        let success = &op["responses"][e.status.to_string()];
        assert!(
            success.is_object(),
            "{} {}: no {}",
            e.method.as_str(),
            e.path,
            e.status
        );
        if let Body::Json(name) = e.response {
            assert_eq!(schema_ref(&success["content"]).as_deref(), Some(name));
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        let error = schema_ref(&op["responses"]["default"]["content"]);
        assert_eq!(error.as_deref(), Some("ErrorBody"));
    }
    for name in ["ErrorBody", "ErrorCode", "KeysFrame", "EntriesFrame"] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    // The derived schemas follow the wire names (serde's renames).
    assert!(schemas["StoreInfo"]["properties"]["keyCount"].is_object());
    assert!(schemas["DeleteResponse"]["properties"]["existed"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_writes_survive_a_graceful_restart() {
    let t = start_server(&["--durability", "eventual"]).await;
    assert_eq!(t.put("s", "k", b"v").await.status(), 204);
    t.server.shutdown().await.unwrap();
    let r = start_server_in(t.dir, &[]).await;
    assert_eq!(r.get("s", "k").await.as_deref(), Some(&b"v"[..]));
    r.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_json_404_even_without_token() {
    let t = start_server(&[]).await;
    let r = t
        .client
        .get(format!("{}/v2/kv", t.base))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "route_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_refuses_to_step_down() {
    let t = start_server(&[]).await;
    let url = format!("{}{}", t.base, routes::CLUSTER_STEP_DOWN);
    let r = t.authed(Method::POST, &url).send().await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let r = t.client.post(&url).send().await.unwrap();
    expect_error(r, 401, "unauthorized").await;
}

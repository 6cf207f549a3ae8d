//! Shared by the CLI's integration tests: the operator's SIMULATED API
//! server (compiled from the operator's own test files, so there is one
//! copy of it), fixtures for the objects a store owns, and an in-process
//! drasi-store-server on loopback for the parts that talk to a server.

#![allow(dead_code)]

#[path = "../../../operator/tests/support/fake_api/mod.rs"]
pub mod fake_api;
pub mod portforward;

use clap::Parser as _;
use drasi_store_cli::cluster::{Cluster, Reach};
use drasi_store_protocol::encode_query;
use drasi_store_protocol::routes::KV;
use serde_json::{Value, json};

pub use fake_api::FakeApiServer;

pub const NS: &str = "apps";
pub const TOKEN: &str = "cli-test-token-0123456789abcdef";

pub fn store_path(name: &str) -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestores/{name}")
}
pub fn backup_path(name: &str) -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestorebackups/{name}")
}
pub fn backups_path() -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestorebackups")
}
pub fn stores_path() -> String {
    format!("/apis/drasi.io/v1alpha1/namespaces/{NS}/drasistatestores")
}
pub fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{name}")
}

/// The simulated API server and a cluster handle on it whose server
/// calls go to `server_url`.
pub fn cluster(server_url: &str) -> (FakeApiServer, Cluster) {
    cluster_with(server_url, CrdFields::All)
}

/// Which fields a dry-run create keeps, as the API server would by the
/// installed CRD's schema.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CrdFields {
    All,
    /// An older CRD without `spec.restore`: the API server prunes it.
    WithoutRestore,
}

/// Like [`cluster`]. The simulated API server does not implement dry runs,
/// so a layer in front of it answers a dry-run create with the object it
/// would have stored (pruned per `fields`) and stores nothing.
pub fn cluster_with(server_url: &str, fields: CrdFields) -> (FakeApiServer, Cluster) {
    use http_body_util::BodyExt as _;
    use kube::client::Body;
    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    let (fake, inner) = FakeApiServer::start();
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let inner = inner.clone();
        async move {
            let dry_run = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "dryRun=All"));
            if dry_run && request.method() == http::Method::POST {
                let body = request.into_body().collect().await?.to_bytes();
                let mut object: Value = serde_json::from_slice(&body)?;
                if fields == CrdFields::WithoutRestore
                    && let Some(spec) = object["spec"].as_object_mut()
                {
                    spec.remove("restore");
                }
                let response = http::Response::builder()
                    .status(201)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&object)?))?;
                return Ok::<_, BoxError>(response);
            }
            Ok(inner.send(request).await?)
        }
    });
    let client = kube::Client::new(service, NS);
    (
        fake,
        Cluster::new(client, NS, Reach::Url(server_url.to_string())),
    )
}

/// A URL nothing listens on (port 1 on loopback is never served).
pub const NOWHERE: &str = "http://127.0.0.1:1";

pub fn put_store(fake: &FakeApiServer, name: &str, spec: Value, status: Value) {
    fake.put(
        "drasistatestores",
        json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStore",
            "metadata": { "name": name, "namespace": NS },
            "spec": spec,
            "status": status,
        }),
    );
}

pub fn ready_status(name: &str) -> Value {
    json!({
        "phase": "Ready",
        "observedGeneration": 1,
        "readyReplicas": 1,
        "endpoint": format!("http://{name}.{NS}.svc:7070"),
        "connectionSecret": format!("{name}-connection"),
        "conditions": [
            { "type": "Ready", "status": "True", "reason": "ServerReady",
              "message": "the server pod is ready", "lastTransitionTime": "2024-01-01T00:01:00Z" },
            { "type": "Progressing", "status": "False", "reason": "Reconciled",
              "message": "", "lastTransitionTime": "2024-01-01T00:01:00Z" },
            { "type": "Degraded", "status": "False", "reason": "AsExpected",
              "message": "", "lastTransitionTime": "2024-01-01T00:01:00Z" },
        ],
    })
}

pub fn destinations() -> Value {
    json!({ "destinations": [
        { "name": "s3", "objectStore": { "bucket": "backups" } },
        { "name": "local", "volume": { "claimName": "backup-pvc" } },
    ]})
}

pub fn put_backup(fake: &FakeApiServer, name: &str, store: &str, created: &str, status: Value) {
    fake.put(
        "drasistatestorebackups",
        json!({
            "apiVersion": "drasi.io/v1alpha1",
            "kind": "DrasiStateStoreBackup",
            "metadata": { "name": name, "namespace": NS, "creationTimestamp": created },
            "spec": { "store": store },
            "status": status,
        }),
    );
}

fn labels(store: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "drasi-state-store",
        "app.kubernetes.io/instance": store,
        "app.kubernetes.io/component": "store-server",
    })
}

pub fn put_pod(fake: &FakeApiServer, name: &str, store: &str, ready: bool, restarts: i32) {
    let flag = if ready { "True" } else { "False" };
    fake.put(
        "pods",
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "namespace": NS, "labels": labels(store) },
            "spec": { "containers": [{ "name": "store-server", "image": "server:test" }] },
            "status": {
                "phase": "Running",
                "conditions": [{ "type": "Ready", "status": flag }],
                "containerStatuses": [{
                    "name": "store-server", "ready": ready, "restartCount": restarts,
                    "image": "server:test", "imageID": "", "started": true,
                }],
            },
        }),
    );
}

pub fn put_pvc(fake: &FakeApiServer, name: &str, store: &str) {
    fake.put(
        "persistentvolumeclaims",
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": name, "namespace": NS, "labels": labels(store) },
            "spec": { "resources": { "requests": { "storage": "1Gi" } } },
            "status": { "phase": "Bound", "capacity": { "storage": "2Gi" } },
        }),
    );
}

fn b64(s: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).unwrap()
}

/// `<store>-connection` of a store with `spec.tls` whose CA is `ca_pem`.
pub fn put_tls_connection_secret(fake: &FakeApiServer, store: &str, token: &str, ca_pem: &str) {
    fake.put(
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": format!("{store}-connection"), "namespace": NS },
            "data": {
                "DRASI_STATE_STORE_URL": b64(&format!("https://{store}.{NS}.svc:7070")),
                "DRASI_STATE_STORE_TOKEN": b64(token),
                "DRASI_STATE_STORE_CA_CERT": b64(ca_pem),
            },
        }),
    );
}

/// `<store>-connection` and `<store>-auth` as the operator writes them.
pub fn put_secrets(fake: &FakeApiServer, store: &str, token: &str) {
    fake.put(
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": format!("{store}-connection"), "namespace": NS },
            "data": {
                "DRASI_STATE_STORE_URL": b64(&format!("http://{store}.{NS}.svc:7070")),
                "DRASI_STATE_STORE_TOKEN": b64(token),
            },
        }),
    );
    fake.put(
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": format!("{store}-auth"), "namespace": NS },
            "data": { "token": b64(token) },
        }),
    );
}

/// A healthy store `name` with one ready pod, its volume and Secrets.
pub fn put_healthy_store(fake: &FakeApiServer, name: &str) {
    put_store(
        fake,
        name,
        json!({ "storage": { "size": "1Gi" }, "backup": destinations() }),
        ready_status(name),
    );
    put_pod(fake, &format!("{name}-0"), name, true, 2);
    put_pvc(fake, &format!("data-{name}-0"), name);
    put_secrets(fake, name, TOKEN);
}

/// Requests that changed something (create, update, patch, delete).
pub fn writes(fake: &FakeApiServer) -> Vec<fake_api::RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect()
}

/// An in-process drasi-store-server on a loopback port, accepting [`TOKEN`].
pub struct TestServer {
    pub server: drasi_store_server::Server,
    pub url: String,
    _dir: tempfile::TempDir,
}

pub async fn start_server() -> TestServer {
    start_server_with(None).await
}

/// With `tls`: serves HTTPS with this certificate and key (PEM).
pub async fn start_server_with(tls: Option<(&str, &str)>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut args = vec![
        "drasi-store-server".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--auth-token-file".into(),
        token_file.display().to_string(),
        "--cache-bytes".into(),
        "4194304".into(),
    ];
    if let Some((cert, key)) = tls {
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        args.extend([
            "--tls-cert-file".to_string(),
            cert_file.display().to_string(),
            "--tls-key-file".to_string(),
            key_file.display().to_string(),
        ]);
    }
    let server = drasi_store_server::start(drasi_store_server::Config::parse_from(args))
        .await
        .unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", server.local_addr());
    TestServer {
        server,
        url,
        _dir: dir,
    }
}

impl TestServer {
    pub async fn set(&self, store: &str, key: &str, value: &[u8]) {
        let url = format!("{}{KV}?{}", self.url, encode_query(store, Some(key)));
        let response = reqwest::Client::new()
            .put(url)
            .bearer_auth(TOKEN)
            .body(value.to_vec())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    pub async fn key_count(&self, store: &str) -> u64 {
        let url = format!(
            "{}{}?{}",
            self.url,
            drasi_store_protocol::routes::STORE,
            encode_query(store, None)
        );
        let body = reqwest::Client::new()
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let info: drasi_store_protocol::StoreInfo = serde_json::from_slice(&body).unwrap();
        info.key_count
    }
}

//! Helpers shared by the HTTP integration tests: an in-process server on a
//! free loopback port with its own data dir and token file.

#![allow(dead_code)]

pub mod moto;

use std::path::PathBuf;
use std::process::{Command, Output};

use clap::Parser as _;
use drasi_store_protocol::encode_query;
use drasi_store_server::{Config, Server, start};

pub const TOKEN: &str = "test-token-0123456789";

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub token_file: PathBuf,
    pub client: reqwest::Client,
}

pub fn config(dir: &tempfile::TempDir, token_file: &std::path::Path, extra: &[&str]) -> Config {
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
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::parse_from(args)
}

pub async fn start_server(extra: &[&str]) -> TestServer {
    start_server_in(tempfile::tempdir().unwrap(), extra).await
}

/// A server on `dir` as it is: `<dir>/data` may already hold what a restore
/// or an earlier server left there. The server owns `dir` for as long as it
/// runs; a restart on the same files takes it back from `TestServer::dir`.
pub async fn start_server_in(dir: tempfile::TempDir, extra: &[&str]) -> TestServer {
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let server = start(config(&dir, &token_file, extra)).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    TestServer {
        server,
        base,
        dir,
        token_file,
        client: reqwest::Client::new(),
    }
}

/// The server binary, for its subcommands (`backup`, `restore`, ...).
pub fn server_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drasi-store-server"))
}

/// Runs `cmd` to completion off the runtime thread: the server under test
/// is served by this same runtime, so blocking it would deadlock.
pub async fn run_bin(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run drasi-store-server")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl TestServer {
    /// The Prometheus text answered by `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str, store: &str, key: Option<&str>) -> String {
        format!("{}{}?{}", self.base, path, encode_query(store, key))
    }

    pub fn authed(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url).bearer_auth(TOKEN)
    }

    pub async fn put(&self, store: &str, key: &str, value: &[u8]) -> reqwest::Response {
        self.authed(reqwest::Method::PUT, &self.url("/v1/kv", store, Some(key)))
            .body(value.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, store: &str, key: &str) -> Option<Vec<u8>> {
        let r = self
            .authed(reqwest::Method::GET, &self.url("/v1/kv", store, Some(key)))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => Some(r.bytes().await.unwrap().to_vec()),
            404 => {
                assert!(r.headers().contains_key("x-drasi-key-not-found"));
                None
            }
            s => panic!("GET answered {s}"),
        }
    }

    /// `(exists, key_count, sorted keys)` of a store.
    pub async fn snapshot(&self, store: &str) -> (bool, u64, Vec<String>) {
        let info = self
            .authed(reqwest::Method::GET, &self.url("/v1/store", store, None))
            .send()
            .await
            .unwrap();
        let info = json(info).await;
        let keys = self
            .authed(
                reqwest::Method::GET,
                &self.url("/v1/store/keys", store, None),
            )
            .send()
            .await
            .unwrap();
        let keys = json(keys).await;
        let mut keys: Vec<String> = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        keys.sort();
        (
            info["exists"].as_bool().unwrap(),
            info["keyCount"].as_u64().unwrap(),
            keys,
        )
    }
}

/// Asserts an error answer: status, JSON `code`.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let body = json(r).await;
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

pub async fn json(r: reqwest::Response) -> serde_json::Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes).expect("body is JSON")
}

//! SIGTERM and SIGKILL on the real binary while writes are in flight:
//! SIGTERM exits 0; after either, every acknowledged write is there after
//! a restart and the database opens.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drasi_store_protocol::encode_query;

const TOKEN: &str = "sigterm-token-0123456789";

fn spawn_server(data: &std::path::Path, tokens: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drasi-store-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--data-dir",
        ])
        .arg(data)
        .arg("--auth-token-file")
        .arg(tokens)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server logged its address");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_keeps_acknowledged_writes() {
    stop_under_load("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_acknowledged_writes() {
    stop_under_load("-KILL").await;
}

async fn stop_under_load(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, TOKEN).unwrap();
    let (mut child, addr) = spawn_server(&data, &tokens);

    let acked: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, acked, addr) = (client.clone(), acked.clone(), addr.clone());
        writers.push(tokio::spawn(async move {
            for i in 0u32.. {
                let key = format!("w{w}/k{i}");
                let url = format!(
                    "http://{addr}/v1/kv?{}",
                    encode_query("sigterm", Some(&key))
                );
                match client
                    .put(url)
                    .bearer_auth(TOKEN)
                    .body(i.to_be_bytes().to_vec())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 204 => acked.lock().unwrap().push((key, i)),
                    // 503 during shutdown or a refused connection: not acknowledged.
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    if signal == "-TERM" {
        assert!(exit.success(), "server exited with {exit:?}");
    }
    for w in writers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap()
            .unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() > 16,
        "too few writes acknowledged before SIGTERM: {}",
        acked.len()
    );

    let (mut child, addr) = spawn_server(&data, &tokens);
    for (key, i) in &acked {
        let url = format!("http://{addr}/v1/kv?{}", encode_query("sigterm", Some(key)));
        let r = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200, "acknowledged write {key} lost");
        assert_eq!(r.bytes().await.unwrap(), &i.to_be_bytes()[..]);
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

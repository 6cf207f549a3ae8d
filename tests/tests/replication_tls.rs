//! Mutual TLS between the peers of a replicated store (`--peer-tls-ca-file`
//! with `--tls-cert-file`): three real server processes elect a leader and
//! replicate over TLS, with no peer token at all, and the peer port turns
//! away whoever does not present a certificate the CA signed, whatever
//! else it sends.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use drasi_store_tests::cluster::{Cluster, PEER_TOKEN};
use drasi_store_tests::test_ca::{Leaf, TestCa};

const SERVER: &str = env!("CARGO_BIN_EXE_store-server-under-test");
const STORE: &str = "replicated/tls";

/// A client certificate for reqwest.
fn identity(leaf: &Leaf) -> reqwest::Result<reqwest::Identity> {
    reqwest::Identity::from_pem(format!("{}{}", leaf.cert_pem, leaf.key_pem).as_bytes())
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

/// A peer request to node 0's peer port over `client`, with a peer token
/// for good measure (the nodes have none: it must not matter).
async fn peer_call(client: &reqwest::Client, cluster: &Cluster) -> reqwest::Result<u16> {
    client
        .post(format!(
            "https://{}/raft/forward/read-index",
            cluster.peer_addr(0)
        ))
        .bearer_auth(PEER_TOKEN)
        .body("null")
        .send()
        .await
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_replicate_over_mutual_tls_and_refuse_strangers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store_ca = TestCa::new("store CA");
    let node = store_ca.peer_leaf();
    let files = dir.path().join("tls");
    std::fs::create_dir_all(&files)?;
    let cert_file = write(&files, "tls.crt", &node.cert_pem);
    let key_file = write(&files, "tls.key", &node.key_pem);
    let ca_file = write(&files, "ca.crt", &store_ca.pem);
    let args = [
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--peer-tls-ca-file",
        &ca_file,
    ];
    let cluster = Cluster::start_tls(SERVER, dir.path(), 3, &args, &store_ca.pem)?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    for n in 0..30 {
        let through = n % 3;
        let r = cluster
            .put(through, STORE, &format!("k{n}"), b"v")
            .await
            .with_context(|| format!("write k{n} through node {through}"))?;
        ensure!(r.status().is_success(), "write k{n}: {}", r.status());
    }
    for i in 0..3 {
        let info = cluster.cluster_info(i).await?;
        ensure!(info.leader_id == Some(leader as u64));
        ensure!(
            cluster.get(i, STORE, "k29").await?.as_deref() == Some(&b"v"[..]),
            "node {i} does not read the last write"
        );
    }

    // Plain HTTP to the peer port: no TLS, no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let r = plain
        .post(format!(
            "http://{}/raft/forward/read-index",
            cluster.peer_addr(0)
        ))
        .bearer_auth(PEER_TOKEN)
        .body("null")
        .send()
        .await;
    ensure!(r.is_err(), "plain HTTP reached the peer port: {r:?}");
    // TLS that trusts the node, with the peer token but no certificate.
    let trusting = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(store_ca.pem.as_bytes()).unwrap())
    };
    let anonymous = trusting().build()?;
    ensure!(
        peer_call(&anonymous, &cluster).await.is_err(),
        "a client without a certificate reached the peer port"
    );
    // A certificate from another CA.
    let other = TestCa::new("someone else's CA").peer_leaf();
    let stranger = trusting().identity(identity(&other)?).build()?;
    ensure!(
        peer_call(&stranger, &cluster).await.is_err(),
        "a certificate of another CA reached the peer port"
    );
    // A certificate from the store's CA gets in: the refusals above were
    // about the certificate, not the request.
    let member = trusting()
        .identity(identity(&store_ca.peer_leaf())?)
        .build()?;
    ensure!(peer_call(&member, &cluster).await? == 200);
    Ok(())
}

//! The port-forward path: the CLI's tunnel opens kube's WebSocket
//! port-forward to a ready pod of the store and talks HTTP to the server
//! through it. The API server side is simulated (support/portforward.rs),
//! bridging to a real drasi-store-server on loopback.

mod support;

use drasi_store_cli::args::Command;
use drasi_store_cli::cluster::{Cluster, Reach};
use drasi_store_cli::{run, status};
use support::*;

#[tokio::test]
async fn status_and_export_reach_the_server_through_a_port_forward_to_a_ready_pod() {
    let server = start_server().await;
    server.set("app-a", "k1", b"v").await;
    server.set("app-b", "k1", b"v").await;
    let (fake, _) = FakeApiServer::start();
    put_healthy_store(&fake, "orders");
    // orders-0 is not ready: the tunnel must go to orders-1.
    put_pod(&fake, "orders-0", "orders", false, 0);
    put_pod(&fake, "orders-1", "orders", true, 0);
    let (client, forwards) = portforward::serve(&fake, server.server.local_addr()).await;
    let cluster = Cluster::new(client, NS, Reach::PortForward);

    let report = status::collect(&cluster, "orders").await.unwrap();
    assert_eq!(report.metrics.error, None);
    assert_eq!(
        (report.metrics.keys, report.metrics.stores),
        (Some(2), Some(2))
    );
    assert_eq!(
        forwards.requests(),
        [format!(
            "/api/v1/namespaces/{NS}/pods/orders-1/portforward port 7070"
        )]
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.snap");
    let export = Command::Export {
        store: "orders".into(),
        stores: vec!["app-a".into()],
        output: file.clone(),
    };
    let mut out = Vec::new();
    run::execute(&cluster, export, &mut out).await.unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("exported 1 records")
    );
    assert!(file.exists());
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_ready_pod_status_says_so_and_opens_no_port_forward() {
    let server = start_server().await;
    let (fake, _) = FakeApiServer::start();
    put_healthy_store(&fake, "orders");
    put_pod(&fake, "orders-0", "orders", false, 0);
    let (client, forwards) = portforward::serve(&fake, server.server.local_addr()).await;
    let cluster = Cluster::new(client, NS, Reach::PortForward);
    let report = status::collect(&cluster, "orders").await.unwrap();
    assert_eq!(
        report.metrics.error.as_deref(),
        Some("no ready pod of DrasiStateStore orders to port-forward to (1 pod(s) found)")
    );
    assert!(forwards.requests().is_empty());
    server.server.shutdown().await.unwrap();
}

/// A self-signed certificate for `names`: (certificate PEM, key PEM).
fn certificate(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

#[tokio::test]
async fn with_tls_the_certificate_is_checked_against_the_store_host_name_and_ca() {
    let host = format!("orders.{NS}.svc");
    let (cert, key) = certificate(&[&host]);
    let server = start_server_with(Some((&cert, &key))).await;
    let (fake, _) = FakeApiServer::start();
    put_healthy_store(&fake, "orders");
    put_tls_connection_secret(&fake, "orders", TOKEN, &cert);
    let (client, _) = portforward::serve(&fake, server.server.local_addr()).await;
    let cluster = Cluster::new(client, NS, Reach::PortForward);
    let report = status::collect(&cluster, "orders").await.unwrap();
    assert_eq!(report.metrics.error, None);
    assert_eq!(report.metrics.keys, Some(0));

    // A CA that did not sign the server's certificate is refused.
    let (other_ca, _) = certificate(&[&host]);
    put_tls_connection_secret(&fake, "orders", TOKEN, &other_ca);
    let report = status::collect(&cluster, "orders").await.unwrap();
    let error = report.metrics.error.unwrap();
    assert!(error.contains(&format!("https://{host}:")), "{error}");
    assert_eq!(report.metrics.keys, None);

    // So is a certificate of the right CA for another host name.
    let (wrong_cert, wrong_key) = certificate(&["elsewhere.example"]);
    let other = start_server_with(Some((&wrong_cert, &wrong_key))).await;
    let (client, _) = portforward::serve(&fake, other.server.local_addr()).await;
    put_tls_connection_secret(&fake, "orders", TOKEN, &wrong_cert);
    let cluster = Cluster::new(client, NS, Reach::PortForward);
    let report = status::collect(&cluster, "orders").await.unwrap();
    assert!(report.metrics.error.is_some());
    server.server.shutdown().await.unwrap();
    other.server.shutdown().await.unwrap();
}

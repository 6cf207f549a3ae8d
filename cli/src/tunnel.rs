//! A local TCP listener whose connections are port-forwarded to one pod's
//! port through the API server (the `pods/portforward` subresource, over
//! WebSocket). Each accepted connection gets its own forwarding session, so
//! an HTTP client's connection pool works unchanged.

use std::net::SocketAddr;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::Portforwarder;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:<addr.port()>` to the pod; stops when dropped.
pub struct Tunnel {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Tunnel {
    /// Opens the listener and a first forwarding session right away, so a
    /// missing pod or a missing `pods/portforward` permission is reported
    /// here, clearly, instead of as a broken HTTP connection later.
    pub async fn open(pods: Api<Pod>, pod: &str, port: u16) -> anyhow::Result<Self> {
        let first = pods
            .portforward(pod, &[port])
            .await
            .with_context(|| format!("port-forwarding to pod {pod} port {port}"))?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding a local port for the port-forward")?;
        let addr = listener.local_addr()?;
        let pod = pod.to_string();
        let task = tokio::spawn(async move {
            let mut ready = Some(first);
            loop {
                let Ok((connection, _)) = listener.accept().await else {
                    return;
                };
                let session = match ready.take() {
                    Some(session) => Ok(session),
                    None => pods.portforward(&pod, &[port]).await,
                };
                match session {
                    Ok(session) => {
                        tokio::spawn(forward(connection, session, port));
                    }
                    // The HTTP client sees the connection close and reports
                    // it; nothing else to do with this one.
                    Err(_) => drop(connection),
                }
            }
        });
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut connection: TcpStream, mut session: Portforwarder, port: u16) {
    if let Some(mut upstream) = session.take_stream(port) {
        let _ = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await;
    }
    session.abort();
    let _ = session.join().await;
}
